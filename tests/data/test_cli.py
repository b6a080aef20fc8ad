import json
import subprocess
import sys

from .tartanair_layout import write_trajectory


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "oss_cluster.data", *args], capture_output=True, text=True, **kwargs)


def test_build_synth_prints_summary_and_refuses_overwrite(tmp_path):
    out = tmp_path / "ds"
    args = ["build", "--source", "synth", "--frames", "8", "--ratio", "1.5", "--size", "64x48", "--window", "2",
            "--frames-per-sequence", "4", "--out", str(out)]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    for needle in ("frames       8 in 4 windows of 2", "43x32 -> 64x48", "shards       1", "mean motion", "bytes",
                   "render px/frame p10", "output px/frame p10", "p50", "p99", "of pixels"):
        assert needle in done.stdout
    assert "frame/s" in done.stderr or "s/frame" in done.stderr  # the progress bar
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["frames"] == 8 and manifest["in_size"] == [32, 43]
    percentiles = manifest["motion_percentiles_px"]
    assert percentiles["p10"] <= percentiles["p50"] <= percentiles["p99"] and 0 <= percentiles["still_fraction"] <= 1
    again = run_cli(*args)
    assert again.returncode == 2 and "already holds a dataset" in again.stderr
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_build_synth_to_s3(s3_endpoint, s3_uri):
    done = run_cli("build", "--source", "synth", "--frames", "4", "--ratio", "2", "--size", "32x24", "--window", "2",
                   "--out", f"{s3_uri}/ds", "--endpoint-url", s3_endpoint, "--quiet")
    assert done.returncode == 0, done.stderr
    assert f"{s3_uri}/ds" in done.stdout and "frames       4" in done.stdout


def test_build_tartanair_reports_flow_check(tmp_path):
    root = tmp_path / "seasidetown"
    write_trajectory(root / "Easy" / "P000")
    done = run_cli("build", "--source", "tartanair", "--root", str(root), "--ratio", "2", "--window", "2",
                   "--out", str(tmp_path / "ds"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "flow check   Easy/P000" in done.stdout and "mean EPE 0.0000 px" in done.stdout
    assert "0.00% over 1 px" in done.stdout


def test_bad_arguments_are_named(tmp_path):
    done = run_cli("build", "--source", "synth", "--ratio", "0.5", "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and "--ratio 0.5: Input should be greater than 1" in done.stderr  # the flag typed
    assert "data.ratio" not in done.stderr
    done = run_cli("build", "--source", "tartanair", "--out", str(tmp_path / "w"))
    assert done.returncode == 2 and "--source tartanair needs --root" in done.stderr and "Value error" not in done.stderr
    assert not (tmp_path / "w").exists()
    done = run_cli("build", "--help")
    assert "(default 240)" in done.stdout and "(default synth)" in done.stdout
    done = run_cli("build", "--source", "tartanair", "--root", str(tmp_path / "absent"), "--out", str(tmp_path / "y"))
    assert done.returncode == 2 and "absent: no such folder" in done.stderr
    done = run_cli("build", "--size", "big", "--out", str(tmp_path / "z"))
    assert done.returncode == 2 and "expected WxH" in done.stderr
