"""The dashboard's data, site folder and server, without a browser: run states (lost runs included), strips cut
into panels from local and S3 storage, the waiting and error states, and the token rule over real HTTP."""

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

from PIL import Image

from oss_cluster.dashboard.__main__ import DualStackServer, main, make_handler
from oss_cluster.dashboard.collect import run_status
from oss_cluster.dashboard.site import Site, build
from oss_cluster.evaluate.strips import comparison_strip, png_bytes
from oss_cluster.runs import RunRegistry
from oss_cluster.storage import open_storage

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def _record(status, minutes_ago, **attempt):
    when = (NOW - timedelta(minutes=minutes_ago)).isoformat()
    return {"status": status, "started_at": when, "attempts": [{"started_at": when, **attempt}],
            "step_metrics": [{"step": 1, "time": when}], "ended_at": None}


def test_run_states_and_lost_runs():
    assert run_status(_record("running", 5), NOW)[0] == "running"
    label, detail = run_status(_record("running", 180), NOW)
    assert label == "lost" and "silent for 180 min" in detail
    assert run_status(_record("stopped_early", 180), NOW)[0] == "stopped early"
    assert run_status(_record("finished", 600), NOW)[0] == "finished"
    # A driver on this machine that has exited is lost at once, however recent its last line.
    import socket

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    label, detail = run_status(_record("running", 1, host=socket.gethostname(), pid=gone.pid), NOW)
    assert label == "lost" and f"pid {gone.pid}" in detail


def _strip_png() -> bytes:
    import torch

    torch.manual_seed(0)
    lr, out, gt = torch.rand(3, 6, 8), torch.rand(3, 9, 12), torch.rand(3, 9, 12)
    return png_bytes(comparison_strip(lr, torch.zeros(2), out, gt))


def test_build_from_storage_cuts_strip_panels(storage, tmp_path):
    run = RunRegistry(storage).allocate("student", "0.1", "pico", config={"train": {"steps": 3}})
    run.mark_started()
    run.log_step(1, loss=0.5, lr=1e-3)
    strip = run.log_strip(1, _strip_png())
    run.log_eval(1, **{"model/psnr_rgb": 30.0, "taau/psnr_rgb": 29.5, "bicubic/psnr_rgb": 28.0}, strip=strip)
    run.finish()
    data = build(storage, tmp_path / "site")
    (row,) = data["runs"]
    assert row["name"] == str(run.name) and row["status"] == "finished" and row["step"] == 1
    assert row["metrics"]["model/psnr_rgb"] == 30.0 and row["spend_usd"] is not None
    detail = json.loads((tmp_path / "site" / "run" / f"{run.name}.json").read_text())
    (shown,) = detail["strips"]
    model = Image.open(tmp_path / "site" / shown["panels"]["model"])
    assert model.size == (12, 9) and detail["tensorboard"]
    whole = Image.open(tmp_path / "site" / shown["url"])
    assert model.tobytes() == whole.crop((24, 14, 36, 23)).tobytes()  # the third panel, below the labels


def test_waiting_state_unreadable_storage_and_foreign_folders(tmp_path, s3_endpoint, capsys):
    empty = tmp_path / "runs"
    empty.mkdir()
    assert main(["build", "--runs", str(empty), "--out", str(tmp_path / "site")]) == 0
    assert json.loads((tmp_path / "site" / "data.json").read_text())["runs"] == []
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert main(["build", "--runs", str(empty), "--out", str(foreign)]) == 2
    assert "holds other files" in capsys.readouterr().err and (foreign / "notes.txt").read_text() == "keep"
    assert main(["build", "--runs", "s3://no-such-bucket-oss/runs", "--endpoint-url", s3_endpoint,
                 "--out", str(tmp_path / "s3site")]) == 2
    assert "cannot read storage s3://no-such-bucket-oss/runs" in capsys.readouterr().err
    assert main(["build", "--runs", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "--runs" in capsys.readouterr().err
    assert main(["serve", "--runs", str(empty), "--host", "0.0.0.0"]) == 2
    assert "needs a bearer token" in capsys.readouterr().err


def _get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_server_checks_the_token_on_every_request(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    site = Site(open_storage(str(runs)), tmp_path / "site", token="s3cret", refresh_s=3600).start()
    server = DualStackServer(("127.0.0.1", 0), make_handler(site))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert _get(base + "/")[0] == 401
        assert _get(base + "/data.json", {"Authorization": "Bearer wrong"})[0] == 401
        status, _, body = _get(base + "/data.json", {"Authorization": "Bearer s3cret"})
        assert status == 200 and json.loads(body)["runs"] == []
        status, headers, _ = _get(base + "/?token=s3cret")
        assert status == 303 and "oss_dashboard_token=s3cret" in headers["Set-Cookie"] and headers["Location"] == "/"
        assert _get(base + "/app.js", {"Cookie": "oss_dashboard_token=s3cret"})[0] == 200
        assert _get(base + "/../../etc/passwd", {"Authorization": "Bearer s3cret"})[0] == 404
        status, headers, body = _get(base + "/index.html", {"Authorization": "Bearer s3cret", "Range": "bytes=0-9"})
        assert status == 206 and body == b"<!doctype " and headers["Content-Range"].startswith("bytes 0-9/")
    finally:
        site.stop()
        server.shutdown()
