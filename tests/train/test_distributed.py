"""Ray Train + DeepSpeed on the session's local Ray instance: a run, its resume, and a killed worker."""

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from oss_cluster.config import load_config
from oss_cluster.storage import open_storage
import torch

from oss_cluster.train.distributed import autocast_dtype, deepspeed_config, train_distributed

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny(root, *extra):
    return load_config(CONFIGS / "smoke.yaml", [
        "model.name=student_pico", f"storage.root={root}", "data.out_size=[48,64]", "train.crop=32",
        "train.batch_size=2", "train.steps=4", "train.eval_every=4", "train.checkpoint_every=2", "train.log_every=1",
        "data.val_sequences=1", *extra])


def test_deepspeed_config_follows_the_experiment():
    cfg = load_config(CONFIGS / "smoke.yaml", ["deepspeed.zero_stage=3", "train.grad_accum=2"])
    ds = deepspeed_config(cfg)
    assert ds["zero_optimization"]["stage"] == 3 and ds["gradient_accumulation_steps"] == 2
    # bf16 is autocast's: DeepSpeed keeps fp32 weights, so checkpoints hold the fp32 master weights.
    assert ds["optimizer"]["params"]["torch_adam"] is True and ds["bf16"]["enabled"] is False
    assert autocast_dtype(cfg, use_gpu=False) is None and autocast_dtype(cfg, use_gpu=True) == torch.bfloat16
    bf16 = load_config(CONFIGS / "smoke.yaml", ["deepspeed.precision=bf16"])
    assert autocast_dtype(bf16, use_gpu=False) == torch.bfloat16
    assert deepspeed_config(cfg, load_universal=True)["checkpoint"] == {"load_universal": True}


def test_run_then_resume_with_the_same_name(tmp_path, ray_local):
    cfg = tiny(tmp_path)
    name, result = train_distributed(cfg)
    store = open_storage(str(tmp_path))
    record = store.read_json(f"runs/{name}/metrics.json")
    assert record["status"] == "finished" and [m["step"] for m in record["step_metrics"]] == [1, 2, 3, 4]
    assert record["eval_metrics"][-1]["model/psnr_rgb"] > 10 and "taau/psnr_rgb" in record["eval_metrics"][-1]
    assert store.exists(record["artefacts"]["latest_strip"])
    checkpoints = [k for k in store.list(f"runs/{name}/ray/") if k.endswith("optim_states.pt")]
    assert any("zero_pp_rank_0" in k for k in checkpoints) and any("zero_pp_rank_1" in k for k in checkpoints)
    assert result.metrics["step"] == 4 and result.metrics["samples"] == 4 * 2 * 2

    more = tiny(tmp_path, "train.steps=6")
    again, result = train_distributed(more, run_name=name)
    assert again == name and result.metrics["step"] == 6 and result.metrics["samples"] == 6 * 2 * 2
    steps = [m["step"] for m in store.read_json(f"runs/{name}/metrics.json")["step_metrics"]]
    assert steps == [1, 2, 3, 4, 5, 6]  # steps 1-4 were not redone: the run resumed at its checkpoint


def _kill_a_worker_after_first_checkpoint(root: Path, killed: list):
    deadline = time.time() + 300
    while time.time() < deadline and not killed:
        if list(root.glob("runs/*/ray/checkpoint_*/checkpoint/zero_pp_rank_1_mp_rank_00_optim_states.pt")):
            for proc in psutil.process_iter(["cmdline"]):
                if any("RayTrainWorker" in part for part in (proc.info["cmdline"] or [])):
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.append(proc.pid)
                    return
        time.sleep(0.2)


def test_killed_worker_resumes_from_last_checkpoint(tmp_path, ray_local):
    cfg = tiny(tmp_path, "train.steps=6", "train.eval_every=100", "train.max_failures=2")
    killed: list = []
    killer = threading.Thread(target=_kill_a_worker_after_first_checkpoint, args=(tmp_path, killed))
    killer.start()
    name, result = train_distributed(cfg)
    killer.join()
    assert killed, "no training worker was found to kill"
    assert result.metrics["step"] == 6 and result.metrics["samples"] == 6 * 2 * 2
    record = open_storage(str(tmp_path)).read_json(f"runs/{name}/metrics.json")
    assert record["status"] == "finished" and record["step_metrics"][-1]["step"] == 6


REPO = Path(__file__).resolve().parents[2]


def test_ray_job_submit_against_a_head_node(tmp_path, ray_local):
    import subprocess
    import sys

    root = tmp_path / "runs"
    done = subprocess.run(
        [ray_local.ray_bin, "job", "submit", "--address", ray_local.dashboard, "--working-dir", str(REPO), "--",
         sys.executable, "jobs/train_heavy.py", "--smoke", "--set", "model.name=student_pico",
         "--set", f"storage.root={root}", "--set", "data.out_size=[48,64]", "--set", "train.crop=32"],
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "finished" in done.stdout
    store = open_storage(str(root))
    names = {key.split("/")[1] for key in store.list("runs/")}
    assert len(names) == 1
    record = store.read_json(f"runs/{names.pop()}/metrics.json")
    assert record["status"] == "finished" and record["eval_metrics"] and store.exists(record["artefacts"]["latest_strip"])
    assert record["artefacts"]["checkpoint"]


def test_run_with_s3_storage(tmp_path, ray_local, s3_endpoint, s3_uri):
    cfg = tiny(s3_uri, f"storage.endpoint_url={s3_endpoint}", "train.steps=2", "train.eval_every=2")
    name, result = train_distributed(cfg)
    store = open_storage(s3_uri, endpoint_url=s3_endpoint)
    record = store.read_json(f"runs/{name}/metrics.json")
    assert record["status"] == "finished" and result.metrics["step"] == 2
    assert any(k.endswith("mp_rank_00_model_states.pt") for k in store.list(f"runs/{name}/ray/"))
    assert store.exists(record["artefacts"]["latest_strip"])


def test_training_gauges_are_scrapeable_from_the_metrics_port(tmp_path, ray_local, monkeypatch):
    import urllib.request

    # Price the run as if on cluster.yaml's heavy_trainer node (a spot p4d.24xlarge): the spend gauge moves.
    monkeypatch.setenv("OSS_NODE_TYPE", "heavy_trainer")
    cfg = tiny(tmp_path, "train.steps=30", "train.eval_every=1000", "train.checkpoint_every=1000")
    found: list = []
    spend: list = []
    finished = threading.Event()

    def scrape():
        deadline = time.time() + 600
        while time.time() < deadline and not (found and spend):
            try:
                text = urllib.request.urlopen(ray_local.metrics_url, timeout=5).read().decode()
            except OSError:
                text = ""
            found.extend(line for line in text.splitlines() if "oss_train_loss" in line and not line.startswith("#"))
            spend.extend(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                         if line.startswith("ray_oss_job_spend_usd") or line.startswith("oss_job_spend_usd"))
            spend[:] = [value for value in spend if value > 0]
            if finished.is_set() and time.time() > finish_time + 60:
                return
            time.sleep(1)

    finish_time = float("inf")
    scraper = threading.Thread(target=scrape)
    scraper.start()
    name, _ = train_distributed(cfg)
    finish_time = time.time()
    finished.set()
    scraper.join()
    assert found, "oss_train_loss never appeared on the Prometheus endpoint"
    assert any(name in line for line in found)  # tagged with the run name
    assert spend, "oss_job_spend_usd never rose above 0 on the Prometheus endpoint"
    record = open_storage(str(tmp_path)).read_json(f"runs/{name}/metrics.json")
    assert record["node_types"] == {"heavy_trainer": 1}


def test_canvas_model_trains_distributed_and_logs_its_canvas(canvas_evaluated):
    root, name = canvas_evaluated
    assert name.startswith("canvas-")
    logged = open_storage(str(root)).read_json(f"runs/{name}/metrics.json")["eval_metrics"][-1]
    assert logged["model/canvas_contribution"] > 0
    assert "extrapolation/a0.5/oss_fx/psnr_rgb" in logged and "extrapolation/a0.5/depth_warp/psnr_rgb" in logged
    # The evaluation command (run by the fixture) scored the canvas run's OSS-FX and wrote the SR + FX stream clip.
    from oss_cluster.evaluate.clips import decode_mp4

    storage = open_storage(str(root))
    (report_key,) = [key for key in storage.list(f"runs/{name}/evals") if key.endswith("report.json")]
    report = storage.read_json(report_key)
    fx = report["extrapolation"]
    assert fx["alphas"] == [0.25, 0.5, 0.75] and fx["frames"] == 32 - 8
    assert set(fx["a0.5"]) >= {"oss_fx", "repeat_last", "depth_warp", "naive_warp", "fx_vs_sr_over_motion"}
    (media,) = report["media"].values()
    stream = decode_mp4(storage.read_bytes(media["sr_fx_clip"]))
    assert len(stream) == media["sr_fx_frames"] == 2 * 32 - 1  # t, t + 0.5, t + 1, ... (no FX before the first motion)


def _module_dtypes(store, name) -> set:
    (key,) = [k for k in store.list(f"runs/{name}/ray/") if k.endswith("mp_rank_00_model_states.pt")][-1:]
    path = Path(store.root) / key
    state = torch.load(path, map_location="cpu", weights_only=False)["module"]
    return {tensor.dtype for tensor in state.values() if tensor.is_floating_point()}


@pytest.mark.parametrize("model", ["hat_tiny", "canvas"])
def test_bf16_training_evaluates_and_checkpoints_fp32_master_weights(tmp_path, ray_local, model):
    from tests.conftest import TINY_HAT

    extra = TINY_HAT if model == "hat_tiny" else ["family=canvas", "model.options.capacity=512",
                                                 "model.options.spawn_per_frame=512"]
    cfg = tiny(tmp_path, f"model.name={model}", *extra, "deepspeed.precision=bf16", "train.steps=2",
               "train.eval_every=2", "train.checkpoint_every=2")
    name, result = train_distributed(cfg)
    store = open_storage(str(tmp_path))
    record = store.read_json(f"runs/{name}/metrics.json")
    evaluation = record["eval_metrics"][-1]
    assert record["status"] == "finished" and 10 < evaluation["model/psnr_rgb"] < 100  # evaluated under bf16 autocast
    assert _module_dtypes(store, name) == {torch.float32}  # what teachers and exports load
    if model == "canvas":
        assert evaluation["model/canvas_contribution"] > 0 and "extrapolation/a0.5/oss_fx/psnr_rgb" in evaluation


def test_zero3_trains_and_evaluates_on_two_workers(tmp_path, ray_local):
    from oss_cluster.checkpoints import load_model

    cfg = tiny(tmp_path, "deepspeed.zero_stage=3", "train.steps=2", "train.eval_every=1", "train.checkpoint_every=2")
    name, result = train_distributed(cfg)
    store = open_storage(str(tmp_path))
    record = store.read_json(f"runs/{name}/metrics.json")
    assert [m["step"] for m in record["eval_metrics"]] == [1, 2]  # every rank joined the parameter gather
    model, _, _ = load_model(store, name)  # the partitioned fp32 weights, gathered by zero_to_fp32
    assert sum(p.numel() for p in model.parameters()) > 0 and store.exists(record["artefacts"]["latest_strip"])
