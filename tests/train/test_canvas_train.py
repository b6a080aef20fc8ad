"""The canvas model trains with the single-process trainer; its evaluation logs the canvas
contribution and OSS-FX against the true intermediate frame."""

from pathlib import Path

from oss_cluster.config import load_config
from oss_cluster.runs import RunRegistry
from oss_cluster.storage import open_storage
from oss_cluster.train.local import train_local

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_short_canvas_run_uses_the_canvas_and_extrapolates(tmp_path):
    cfg = load_config(CONFIGS / "canvas.yaml", [
        f"storage.root={tmp_path}", "data.out_size=[48,64]", "data.frames=48", "data.frames_per_sequence=24",
        "data.window=3", "data.val_sequences=1", "data.objects=3", "train.warmup_frames=9", "train.steps=20",
        "train.batch_size=2",
        "train.crop=32", "train.eval_every=20", "train.log_every=5", "train.warmup_steps=2", "train.lr=1e-3",
        "model.options.capacity=1024", "model.options.spawn_per_frame=768", "model.options.widths=[8,16,32]",
        "model.options.hidden=32",
    ])
    run = RunRegistry(open_storage(cfg.storage.root)).allocate(cfg.family, cfg.version, cfg.tier)
    lines = []
    _, summary = train_local(cfg, run=run, log=lines.append)
    evaluation = summary["eval"]
    assert evaluation["model"]["canvas_contribution"] > 0
    fx = evaluation["extrapolation"]
    assert fx["alphas"] == [0.25, 0.5, 0.75] and fx["frames"] > 0
    for alpha in ("a0.25", "a0.5", "a0.75"):
        for method in ("oss_fx", "repeat_last", "depth_warp", "naive_warp"):
            assert {"psnr_rgb", "flip", "disoccluded_psnr_rgb", "disoccluded_flip"} <= set(fx[alpha][method]), (alpha, method)
    half = fx["a0.5"]
    assert half["oss_fx"]["psnr_rgb"] > half["repeat_last"]["psnr_rgb"] + 0.05, half
    assert half["fx_vs_sr_over_motion"] > 0.01  # extrapolated frames differ from SR frames (no H009 collapse)
    record = open_storage(cfg.storage.root).read_json(f"runs/{run.name}/metrics.json")
    logged = record["eval_metrics"][-1]
    assert logged["model/canvas_contribution"] > 0 and "extrapolation/a0.5/oss_fx/disoccluded_psnr_rgb" in logged
    assert any("OSS-FX" in line for line in lines) and any("canvas contribution" in line for line in lines)
