"""Ray Tune sweep of the canvas model on the session's Ray instance: real trials (each a Ray Train +
DeepSpeed run), ASHA, and the table, plot, best config and TensorBoard logs it leaves."""

import io
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from oss_cluster.config import ConfigError, load_config
from oss_cluster.storage import open_storage
from oss_cluster.sweep import SweepExistsError, SweepFailedError, pick_best, run_sweep, search_space, trial_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
sys.path.insert(0, str(ROOT / "jobs"))


def test_trial_config_sets_the_swept_keys_and_search_space_follows_tune_section():
    base = load_config(CONFIGS / "tune_smoke.yaml")
    cfg = trial_config(base, 3.5, 1.5, steps=7, fx_weight=0.5)
    assert cfg.model.options["fusion_magnitude"] == 3.5 and cfg.data.ratio == 1.5 and cfg.train.steps == 7
    assert cfg.model.options["fx_weight"] == 0.5 and "fx_weight" not in base.model.options
    assert base.model.options["fusion_magnitude"] == 1.0 and base.data.ratio == 2.0  # base untouched
    space = search_space(base)
    assert space["ratio"].categories == [1.333, 1.5, 2.0]
    assert (space["fusion_magnitude"].lower, space["fusion_magnitude"].upper) == (0.1, 100.0)
    assert space["fx_weight"].categories == [0.5, 1.0]
    assert base.tune.metric == "val_sr_fx"  # canvas sweeps value OSS-FX quality beside SR by default


def test_pick_best_prefers_trials_that_ran_the_full_budget():
    cfg = load_config(CONFIGS / "tune_smoke.yaml", ["tune.metric=val_psnr"])
    table = pd.DataFrame({"val_psnr": [30.0, 28.0, float("nan")], "status": ["stopped_early", "completed", "error"],
                          "error": [None, None, "boom"], "fusion_magnitude": [1.0, 2.0, 3.0], "ratio": [2.0] * 3})
    assert pick_best(table, cfg)["fusion_magnitude"] == 2.0
    table["status"] = "stopped_early"
    assert pick_best(table, cfg)["fusion_magnitude"] == 1.0
    with pytest.raises(SweepFailedError, match="boom"):
        pick_best(table.iloc[2:], cfg)


def test_sweep_refuses_a_model_without_fusion_magnitude(tmp_path):
    cfg = load_config(CONFIGS / "tune_smoke.yaml", ["model.name=student_pico", "model.options={}",
                                                    f"storage.root={tmp_path}"])
    with pytest.raises(ConfigError, match="no fusion_magnitude"):
        run_sweep(cfg, name="x")


def test_smoke_sweep_writes_table_plot_best_config_and_tensorboard_logs(tmp_path, ray_local, capsys):
    import tune_sweep

    assert tune_sweep.main(["--smoke", "--set", f"storage.root={tmp_path}", "--name", "smoke"]) == 0
    out = capsys.readouterr().out
    store = open_storage(str(tmp_path))
    table = pd.read_parquet(io.BytesIO(store.read_bytes("sweeps/smoke/results.parquet")))
    csv = pd.read_csv(io.BytesIO(store.read_bytes("sweeps/smoke/results.csv")))
    assert len(table) == 4
    pd.testing.assert_frame_equal(table.drop(columns="error"), csv.drop(columns="error"))
    assert set(table["status"]) <= {"completed", "stopped_early"}, table[["status", "error"]]
    assert (table.loc[table["status"] == "completed", "steps"] == 4).all()
    assert (table.loc[table["status"] == "stopped_early", "steps"] < 4).all()
    assert (table["status"] == "completed").any() and table["val_sr_fx"].notna().all()
    assert set(table["fx_weight"]) <= {0.5, 1.0}
    assert set(table["ratio"]) <= {1.333, 1.5, 2.0} and table["fusion_magnitude"].between(0.1, 100).all()
    for row in table.itertuples():  # every trial is a registered run that says how it ended
        record = store.read_json(f"runs/{row.run_name}/metrics.json")
        assert record["status"] == ("finished" if row.status == "completed" else "stopped_early")
        assert record["config"]["model"]["options"]["fusion_magnitude"] == pytest.approx(row.fusion_magnitude)
        assert record["config"]["model"]["options"]["fx_weight"] == row.fx_weight
    assert "run_name" in out and "best: run" in out

    plot = Image.open(io.BytesIO(store.read_bytes("sweeps/smoke/metric_vs_fusion.png")))
    assert plot.format == "PNG" and plot.size[0] > 300

    best_file = tmp_path / "sweeps" / "smoke" / "best.yaml"
    best = load_config(best_file)
    winner = table[table["status"] == "completed"].sort_values("val_sr_fx").iloc[-1]
    assert best.model.options["fusion_magnitude"] == pytest.approx(winner["fusion_magnitude"])
    assert best.data.ratio == winner["ratio"] and best.train.steps == 200  # the base schedule, not the trial budget

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted((tmp_path / "sweeps" / "smoke" / "tune").glob("*/events.out.tfevents.*"))
    assert len(events) == 4
    scalars = EventAccumulator(str(events[0].parent)).Reload().Tags()["scalars"]
    assert any(tag.endswith("val_sr_fx") for tag in scalars) and any(tag.endswith("val_psnr_over_bicubic") for tag in scalars), scalars

    from oss_cluster.dashboard.site import build

    (shown,) = build(store, tmp_path / "site")["sweeps"]  # the dashboard's sweeps page
    assert shown["name"] == "smoke" and len(shown["rows"]) == len(csv) and "fusion_magnitude" in shown["columns"]
    assert (tmp_path / "site" / shown["plot"]).exists() and "fusion_magnitude" in shown["best_config"]

    with pytest.raises(SweepExistsError):  # a sweep's results are never overwritten
        run_sweep(load_config(CONFIGS / "tune_smoke.yaml", [f"storage.root={tmp_path}"]), name="smoke")

    # What jobs/train_canvas.py --config does with the file: load it, canvas model and all.
    from oss_cluster.models import build_model

    build_model(best.model.name, **best.model.options)
    assert best.model.name == "canvas" and best.family == "canvas"
