import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from oss_cluster.config import load_config
from oss_cluster.data.build import build_dataset
from oss_cluster.evaluate import window_tensors
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
              "depth": torch.rand(2, 1, h, w), "disocclusion": torch.rand(2, 1, h, w), "jitter": torch.rand(2, 2),
              "gt_future": torch.rand(2, 3, H, W), "future_alpha": torch.rand(2, 1)}
    sample["gt_future"][:] = sample["gt"]
    crop = random_crop(sample, 24, np.random.default_rng(0))
    (ch, cw), (cH, cW) = crop["lr"].shape[-2:], crop["gt"].shape[-2:]
    assert cH * h == ch * H and cW * w == cw * W  # the crop keeps the frame's exact ratio on both axes
    assert crop["motion"].shape[-2:] == (ch, cw)
    assert torch.equal(crop["gt_future"], crop["gt"])  # the extrapolation target is cropped with the ground truth


def smoke(tmp_path, *extra):
    return load_config(CONFIGS / "smoke.yaml", ["model.name=student_pico", f"storage.root={tmp_path / 'runs'}",
                                                "data.val_sequences=1", *extra])


def test_trains_and_writes_metrics_json(tmp_path):
    cfg = smoke(tmp_path)
    run = RunRegistry(open_storage(cfg.storage.root)).allocate(cfg.family, cfg.version, cfg.tier, config={"x": 1})
    lines = []
    model, summary = train_local(cfg, run=run, log=lines.append)
    assert summary["steps"] == cfg.train.steps
    record = open_storage(cfg.storage.root).read_json(f"runs/{run.name}/metrics.json")
    assert record["status"] == "finished" and len(record["step_metrics"]) == cfg.train.steps
    assert all(np.isfinite(m["loss"]) for m in record["step_metrics"])
    evals = record["eval_metrics"]
    assert [e["step"] for e in evals] == list(range(cfg.train.eval_every, cfg.train.steps + 1, cfg.train.eval_every))
    for method in ("model", "bicubic", "taau"):
        assert evals[-1][f"{method}/psnr_rgb"] > 10 and 0 < evals[-1][f"{method}/ssim_y"] <= 1
        assert f"{method}/all/psnr_rgb" in evals[-1] and f"{method}/buckets/gt4/flip" in evals[-1]
    assert "Y (BT.601" in evals[-1]["psnr_spaces"] and evals[-1]["border_crop"] == 4
    assert evals[-1]["headline"] == "steady" and evals[-1]["steady_frames"] == cfg.train.eval_frames - 8
    assert any("samples/s ETA" in line for line in lines)


def test_trains_from_shards(tmp_path):
    cfg = smoke(tmp_path)
    out = open_storage(str(tmp_path / "shards"))
    build_dataset(cfg.data, out, progress=False)
    cfg = smoke(tmp_path, "data.source=shards", f"data.shards={out.uri}", "train.eval_every=100")
    model, summary = train_local(cfg, log=lambda line: None)
    assert summary["steps"] == cfg.train.steps and "model" in summary["eval"]


def test_training_windows_run_after_their_warm_up(tmp_path):
    """The loss covers the window only: warm-up frames build the history without gradient."""
    from oss_cluster.config import TrainConfig
    from oss_cluster.models import build_model
    from oss_cluster.train.local import training_clips, training_loss

    cfg = smoke(tmp_path)
    clips = training_clips(cfg)
    assert clips.warmup == 16 and clips.clip(0).length == 16 + cfg.data.window  # one 18-frame Halton cycle at 1.5x
    batch = {k: v[None] for k, v in random_crop(window_tensors(clips.clip(0)), 32, np.random.default_rng(0)).items()}
    model = build_model("student_pico")
    torch.nn.init.normal_(model.head.to_subgrid.weight, std=0.1)
    train = TrainConfig()
    loss, outputs = training_loss(model, batch, train, warmup=16)
    assert outputs.shape[1] == cfg.data.window
    # Changing the warm-up frames' ground truth changes nothing; changing their inputs changes the history.
    other_gt = {**batch, "gt": batch["gt"].clone()}
    other_gt["gt"][:, :16] = 0
    assert torch.equal(training_loss(model, other_gt, train, warmup=16)[0], loss)
    other_input = {**batch, "lr": batch["lr"].clone()}
    other_input["lr"][:, :16] = 0
    assert not torch.equal(training_loss(model, other_input, train, warmup=16)[0], loss)
    loss.backward()  # and gradients exist through the window only (no graph was kept for the warm-up)
    assert model.head.to_subgrid.weight.grad is not None


def test_training_loss_never_reads_the_renderer_mask(tmp_path):
    from oss_cluster.config import TrainConfig
    from oss_cluster.models import build_model
    from oss_cluster.train.local import training_clips, training_loss

    clip = training_clips(smoke(tmp_path)).clip(0)
    batch = {k: v[None] for k, v in random_crop(window_tensors(clip), 32, np.random.default_rng(0)).items()}
    model, train = build_model("student_pico"), TrainConfig(temporal_weight=0.5)
    torch.nn.init.normal_(model.head.to_subgrid.weight, std=0.1)
    reference, _ = training_loss(model, batch, train, warmup=4)
    for other in ({**batch, "disocclusion": 1 - batch["disocclusion"]},
                  {k: v for k, v in batch.items() if k != "disocclusion"}):
        assert torch.equal(training_loss(model, other, train, warmup=4)[0], reference)


def test_no_window_with_its_warm_up_is_an_error(tmp_path):
    from oss_cluster.data.schema import DataError
    from oss_cluster.train.local import training_clips

    cfg = smoke(tmp_path, "train.warmup_frames=19")  # sequences of 20 frames, windows of 2
    with pytest.raises(DataError, match="no training window has 19 warm-up frames"):
        training_clips(cfg)


def test_cli_reports_bad_config():
    done = subprocess.run([sys.executable, "-m", "oss_cluster.train.local", "--set", "train.stepz=3"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "unknown key 'stepz'" in done.stderr
