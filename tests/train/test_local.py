import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from oss_cluster.config import load_config
from oss_cluster.data.build import build_dataset
from oss_cluster.runs import RunRegistry
from oss_cluster.storage import open_storage
from oss_cluster.train.local import lr_at, random_crop, train_local

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_lr_schedule():
    cfg = load_config(None, ["train.lr=1e-3", "train.warmup_steps=10", "train.steps=110"]).train
    assert lr_at(0, cfg) == pytest.approx(1e-4) and lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(10, cfg) == pytest.approx(1e-3) and lr_at(110, cfg) == pytest.approx(1e-4)
    assert lr_at(60, cfg) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))


@pytest.mark.parametrize("h,w,H,W", [(24, 32, 48, 64), (32, 42, 48, 63), (36, 48, 48, 64), (32, 43, 48, 64)])
def test_random_crop_keeps_exact_alignment(h, w, H, W):
    sample = {"lr": torch.rand(2, 3, h, w), "gt": torch.rand(2, 3, H, W), "motion": torch.rand(2, 2, h, w),
              "depth": torch.rand(2, 1, h, w), "disocclusion": torch.rand(2, 1, h, w), "jitter": torch.rand(2, 2)}
    crop = random_crop(sample, 24, np.random.default_rng(0))
    (ch, cw), (cH, cW) = crop["lr"].shape[-2:], crop["gt"].shape[-2:]
    assert cH * h == ch * H and cW * w == cw * W  # the crop keeps the frame's exact ratio on both axes
    assert crop["motion"].shape[-2:] == (ch, cw)


def smoke(tmp_path, *extra):
    return load_config(CONFIGS / "smoke.yaml", ["model.name=student_pico", f"storage.root={tmp_path / 'runs'}",
                                                "data.val_sequences=1", *extra])


def test_trains_and_writes_metrics_json(tmp_path):
    cfg = smoke(tmp_path)
    run = RunRegistry(open_storage(cfg.storage.root)).allocate(cfg.family, cfg.version, cfg.tier, config={"x": 1})
    lines = []
    model, summary = train_local(cfg, run=run, eval_frames=3, log=lines.append)
    assert summary["steps"] == cfg.train.steps
    record = open_storage(cfg.storage.root).read_json(f"runs/{run.name}/metrics.json")
    assert record["status"] == "finished" and len(record["step_metrics"]) == cfg.train.steps
    assert all(np.isfinite(m["loss"]) for m in record["step_metrics"])
    evals = record["eval_metrics"]
    assert [e["step"] for e in evals] == list(range(cfg.train.eval_every, cfg.train.steps + 1, cfg.train.eval_every))
    for method in ("model", "bicubic", "taau"):
        assert evals[-1][f"{method}/psnr_rgb"] > 10 and 0 < evals[-1][f"{method}/ssim_y"] <= 1
    assert "Y (BT.601" in evals[-1]["psnr_spaces"] and evals[-1]["border_crop"] == 4
    assert any("samples/s ETA" in line for line in lines)


def test_trains_from_shards(tmp_path):
    cfg = smoke(tmp_path)
    out = open_storage(str(tmp_path / "shards"))
    build_dataset(cfg.data, out, progress=False)
    cfg = smoke(tmp_path, "data.source=shards", f"data.shards={out.uri}", "train.eval_every=100")
    model, summary = train_local(cfg, eval_frames=2, log=lambda line: None)
    assert summary["steps"] == cfg.train.steps and "model" in summary["eval"]


def test_cli_reports_bad_config():
    done = subprocess.run([sys.executable, "-m", "oss_cluster.train.local", "--set", "train.stepz=3"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "unknown key 'stepz'" in done.stderr
