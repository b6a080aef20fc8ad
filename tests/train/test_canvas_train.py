"""The canvas model trains with the single-process trainer; its evaluation logs the canvas
contribution and OSS-FX against the true intermediate frame."""

from oss_cluster.storage import open_storage


def test_short_canvas_run_uses_the_canvas_and_extrapolates(canvas_trained):
    cfg, run, summary, lines = canvas_trained
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
    storage = open_storage(cfg.storage.root)
    assert storage.exists(logged["strip"]) and record["artefacts"]["latest_strip"] == logged["strip"]
    assert any("/tensorboard/events.out.tfevents" in key for key in storage.list(f"runs/{run.name}/"))
