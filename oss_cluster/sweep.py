"""Ray Tune sweep over the canvas fusion magnitude and the SR ratio, with ASHA early stopping.

Each Tune trial is a driver function that runs one Ray Train + DeepSpeed run (`train_distributed`,
the cluster's training job) with the trial's `model.options.fusion_magnitude` (log-uniform between
`tune.fusion_magnitude_min` and `_max`) and `data.ratio` (a choice of `tune.ratios`). A Ray Train
callback forwards rank 0's evaluation reports (they carry `tune.metric`, e.g. `val_psnr_over_bicubic`) to Tune, and
ASHA stops weak trials at its rungs (`tune.grace_period` x `tune.reduction_factor`^k steps). Every
trial is an ordinary registered run (`runs/<name>/` with checkpoints, metrics.json and strips).

Layout under the storage root:
    sweeps/<sweep>/tune/                   Tune's experiment folder: per-trial results and TensorBoard events
    sweeps/<sweep>/results.parquet, .csv   one row per trial (parameters, run name, metrics, status)
    sweeps/<sweep>/metric_vs_fusion.png    metric versus fusion magnitude, one series per ratio
    sweeps/<sweep>/best.yaml               the best trial's full config, for jobs/train_canvas.py --config
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone

import pandas as pd
import yaml

from .config import ConfigError, ExperimentConfig, config_to_dict, with_absolute_storage
from .runs import RunRegistry
from .storage import Storage, storage_from_config
from .train.distributed import check_cluster, ensure_dataset, train_distributed

SWEEPS_PREFIX = "sweeps"
TUNE_FOLDER = "tune"
FUSION_KEY = "fusion_magnitude"
FX_WEIGHT_KEY = "fx_weight"
RATIO_KEY = "ratio"
TRIAL_DRIVER_MEMORY = 256 * 2**20  # bytes of Ray's logical memory resource per trial driver


class SweepExistsError(FileExistsError):
    """A sweep name is used once: its folder already holds results."""


class SweepFailedError(RuntimeError):
    """No trial reported the sweep's metric (the results table is still written)."""


@dataclass
class SweepResult:
    name: str
    table: pd.DataFrame  # one row per trial, see results_table
    best: pd.Series  # the row of the best trial
    best_config: ExperimentConfig
    keys: dict[str, str]  # label -> storage key of what was written
    uris: dict[str, str]  # label -> full URI / path of what was written


def trial_config(base: ExperimentConfig, fusion_magnitude: float, ratio: float, steps: int | None = None,
                 fx_weight: float | None = None) -> ExperimentConfig:
    """The base experiment with one trial's parameters (and optionally a step budget) applied."""
    raw = config_to_dict(base)
    raw["model"]["options"][FUSION_KEY] = float(fusion_magnitude)
    if fx_weight is not None:
        raw["model"]["options"][FX_WEIGHT_KEY] = float(fx_weight)
    raw["data"]["ratio"] = float(ratio)
    if steps is not None:
        raw["train"]["steps"] = int(steps)
    return ExperimentConfig.model_validate(raw)


def check_sweepable(cfg: ExperimentConfig) -> None:
    """The sweep's parameters must mean something to the configured model."""
    from .models import model_options

    try:
        options = model_options(cfg.model.name)
    except KeyError as err:
        raise ConfigError(f"model.name: {err.args[0]}") from None
    if FUSION_KEY not in options:
        raise ConfigError(f"model.name={cfg.model.name!r} has no {FUSION_KEY} to sweep: use the canvas model "
                          "(model.name=canvas, e.g. configs/canvas.yaml)")


def search_space(cfg: ExperimentConfig) -> dict:
    from ray import tune

    return {FUSION_KEY: tune.loguniform(cfg.tune.fusion_magnitude_min, cfg.tune.fusion_magnitude_max),
            RATIO_KEY: tune.choice(list(cfg.tune.ratios)),
            FX_WEIGHT_KEY: tune.choice(list(cfg.tune.fx_weights))}


def _forwarder(metric: str, run_name: str):
    """A Ray Train callback that hands rank 0's reports carrying `metric` to Tune, tagged with the run."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class EvaluationForwarder(TuneReportCallback):
        # Only evaluation reports carry the metric; Tune rejects results without its metric.
        def after_report(self, run_context, metrics, checkpoint):
            if metric in metrics[0]:
                tagged = [{**metrics[0], "run_name": run_name}, *metrics[1:]]
                super().after_report(run_context, tagged, checkpoint)

    return EvaluationForwarder()


def run_trial(params: dict, base: dict) -> None:
    """Tune trial driver: one Ray Train run of the base config with this trial's parameters."""
    base_cfg = ExperimentConfig.model_validate(base)
    cfg = trial_config(base_cfg, params[FUSION_KEY], params[RATIO_KEY], steps=base_cfg.tune.max_steps,
                       fx_weight=params.get(FX_WEIGHT_KEY))
    storage = storage_from_config(cfg.storage)
    run = RunRegistry(storage).allocate(cfg.family, cfg.version, cfg.tier, config=config_to_dict(cfg))
    print(f"trial: {FUSION_KEY}={params[FUSION_KEY]:.4g} {RATIO_KEY}={params[RATIO_KEY]:g} "
          f"{FX_WEIGHT_KEY}={params.get(FX_WEIGHT_KEY)} -> run {run.name}", flush=True)
    train_distributed(cfg, run_name=str(run.name), callbacks=[_forwarder(cfg.tune.metric, str(run.name))])


def results_table(results, cfg: ExperimentConfig) -> pd.DataFrame:
    """One row per trial from a Tune ResultGrid: parameters, run name, last and best metric, status."""
    metric, sign = cfg.tune.metric, (1 if cfg.tune.mode == "max" else -1)
    rows = []
    for result in results:
        last = result.metrics or {}
        history = result.metrics_dataframe
        values = history[metric].dropna() if history is not None and metric in history else pd.Series(dtype=float)
        step = last.get("step")
        if result.error is not None:
            status = "error"
        elif step is not None and step >= cfg.tune.max_steps:
            status = "completed"
        else:
            status = "stopped_early"
        rows.append({
            "trial_id": (last.get("trial_id") or os.path.basename(result.path)),
            "run_name": last.get("run_name"),
            RATIO_KEY: float(result.config[RATIO_KEY]),
            FUSION_KEY: float(result.config[FUSION_KEY]),
            FX_WEIGHT_KEY: float(result.config.get(FX_WEIGHT_KEY, math.nan)),
            "steps": step,
            metric: last.get(metric, math.nan),
            f"best_{metric}": (sign * (sign * values).max()) if len(values) else math.nan,
            "bicubic_psnr": last.get("eval/bicubic/psnr_rgb", math.nan),
            "canvas_contribution": last.get("eval/model/canvas_contribution", math.nan),
            "status": status,
            "error": None if result.error is None else _last_line(result.error),
        })
    table = pd.DataFrame(rows)
    return table.sort_values(metric, ascending=cfg.tune.mode == "min", na_position="last").reset_index(drop=True)


def _last_line(error: BaseException) -> str:
    """The exception line of a (possibly remote) error: its traceback's last non-empty line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:300]


def pick_best(table: pd.DataFrame, cfg: ExperimentConfig) -> pd.Series:
    """Best trial by the last reported metric, among trials that ran the full budget if any did."""
    scored = table[table[cfg.tune.metric].notna()]
    if scored.empty:
        raise SweepFailedError(f"no trial reported tune.metric={cfg.tune.metric!r}; the trial errors were: "
                           f"{sorted(set(table['error'].dropna()))} (evaluation reports carry val_psnr_over_bicubic, val_psnr, val_ssim, "
                           "val_flip and eval/<method>/<metric> keys)")
    completed = scored[scored["status"] == "completed"]
    pool = completed if not completed.empty else scored
    index = pool[cfg.tune.metric].idxmax() if cfg.tune.mode == "max" else pool[cfg.tune.metric].idxmin()
    return pool.loc[index]


def plot_metric(table: pd.DataFrame, cfg: ExperimentConfig, title: str) -> bytes:
    """PNG: the metric versus fusion magnitude (log axis), one series per ratio; hollow = stopped by ASHA."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = cfg.tune.metric
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    for index, (ratio, group) in enumerate(sorted(table.groupby(RATIO_KEY), key=lambda item: item[0])):
        group = group.sort_values(FUSION_KEY)
        color = f"C{index}"
        axes.plot(group[FUSION_KEY], group[metric], "-", color=color, alpha=0.5)
        full = group["status"] == "completed"
        axes.scatter(group[FUSION_KEY][full], group[metric][full], color=color, zorder=3,
                     label=f"ratio {ratio:g}" if full.any() else None)
        axes.scatter(group[FUSION_KEY][~full], group[metric][~full], facecolors="none", edgecolors=color, zorder=3,
                     label=f"ratio {ratio:g} (stopped early)" if (~full).any() else None)
    if metric == "val_psnr" and table["bicubic_psnr"].notna().any():
        for index, (ratio, group) in enumerate(sorted(table.groupby(RATIO_KEY), key=lambda item: item[0])):
            axes.axhline(group["bicubic_psnr"].mean(), color=f"C{index}", linestyle=":", linewidth=1)
    axes.set_xscale("log")
    axes.set_xlabel("canvas fusion magnitude (log scale)")
    axes.set_ylabel(f"{metric} (last report; dotted: bicubic)" if metric == "val_psnr" else metric)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def best_config(base: ExperimentConfig, best: pd.Series) -> ExperimentConfig:
    """The base experiment (its full training schedule) with the best trial's parameters."""
    fx_weight = best.get(FX_WEIGHT_KEY)
    return trial_config(base, best[FUSION_KEY], best[RATIO_KEY],
                        fx_weight=None if fx_weight is None or math.isnan(fx_weight) else fx_weight)


def format_table(table: pd.DataFrame, metric: str) -> str:
    shown = table[["trial_id", "run_name", RATIO_KEY, FUSION_KEY, "steps", metric, f"best_{metric}", "bicubic_psnr",
                   "canvas_contribution", "status"]]
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def _default_name(cfg: ExperimentConfig) -> str:
    return f"{cfg.family}-sweep-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"


def run_sweep(cfg: ExperimentConfig, name: str | None = None, log=print) -> SweepResult:
    """Run the sweep described by `cfg.tune` on the base experiment `cfg`; write its table, plot and best config."""
    import ray
    from ray import tune
    from ray.tune.logger import TBXLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    check_sweepable(cfg)
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=True)
    check_cluster(cfg)
    cfg = with_absolute_storage(cfg)  # trials run in Tune's trial folders
    storage = storage_from_config(cfg.storage)
    name = name or _default_name(cfg)
    sweep = storage.child(f"{SWEEPS_PREFIX}/{name}")
    if sweep.list():
        raise SweepExistsError(f"sweep {name!r} already has results at {sweep.uri}; choose another --name")
    # Render each ratio's dataset once, here, so concurrent trials never build the same shards.
    for ratio in cfg.tune.ratios:
        ensure_dataset(trial_config(cfg, cfg.tune.fusion_magnitude_min, ratio), storage, log)
    # Every trial asks for its workers; Ray and the autoscaler run as many at once as nodes can be had
    # (trials wait for resources, not for a count of the nodes alive at start).
    concurrent = cfg.tune.max_concurrent_trials or cfg.tune.num_samples
    log(f"sweep {name}: {cfg.tune.num_samples} trials of {cfg.model.name}, {FUSION_KEY} log-uniform "
        f"[{cfg.tune.fusion_magnitude_min:g}, {cfg.tune.fusion_magnitude_max:g}] x {RATIO_KEY} {list(cfg.tune.ratios)}, "
        f"ASHA on {cfg.tune.metric} ({cfg.tune.mode}) over {cfg.tune.max_steps} steps, {concurrent} at a time")
    log(f"watch: Ray dashboard, and tensorboard --logdir {sweep.url(TUNE_FOLDER)}")
    # Trials that survive every rung end on their own at max_steps (stop_last_trials=False), so their
    # runs finish normally and record their final checkpoint.
    scheduler = ASHAScheduler(time_attr="step", max_t=cfg.tune.max_steps, grace_period=cfg.tune.grace_period,
                              reduction_factor=cfg.tune.reduction_factor, stop_last_trials=False)
    # The trial driver only waits on its Ray Train run, whose workers hold the CPUs; it reserves no CPU
    # (or two 1-worker trials could not share 2 CPUs) and a token of Ray's logical memory instead,
    # since a placement group bundle may not be empty.
    trainable = tune.with_resources(tune.with_parameters(run_trial, base=config_to_dict(cfg)),
                                    {"cpu": 0, "memory": TRIAL_DRIVER_MEMORY})
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(cfg),
        tune_config=tune.TuneConfig(
            metric=cfg.tune.metric, mode=cfg.tune.mode, scheduler=scheduler, num_samples=cfg.tune.num_samples,
            search_alg=BasicVariantGenerator(random_state=cfg.train.seed, max_concurrent=concurrent)),
        run_config=tune.RunConfig(
            name=TUNE_FOLDER, storage_path=sweep.arrow_path(), storage_filesystem=sweep.arrow_filesystem(),
            callbacks=[TBXLoggerCallback()], verbose=1),
    )
    results = tuner.fit()
    table = results_table(results, cfg)
    _record_trial_endings(storage, table)
    keys = {"table_parquet": "results.parquet", "table_csv": "results.csv", "plot": "metric_vs_fusion.png",
            "best_config": "best.yaml", "tensorboard": TUNE_FOLDER}
    uris = {label: sweep.url(key) for label, key in keys.items()}
    parquet = io.BytesIO()
    table.to_parquet(parquet, index=False)
    sweep.write_bytes(keys["table_parquet"], parquet.getvalue())
    sweep.write_bytes(keys["table_csv"], table.to_csv(index=False).encode())
    log(format_table(table, cfg.tune.metric))
    best = pick_best(table, cfg)  # raises SweepFailedError when no trial reported the metric
    sweep.write_bytes(keys["plot"], plot_metric(table, cfg, f"sweep {name}: {cfg.tune.metric} vs fusion magnitude"))
    chosen = best_config(cfg, best)
    header = (f"# Best trial of sweep {name}: run {best['run_name']}, {cfg.tune.metric} {best[cfg.tune.metric]:.4f} "
              f"after {best['steps']} steps\n# {FUSION_KEY}={best[FUSION_KEY]:.6g} {RATIO_KEY}={best[RATIO_KEY]:g}; "
              f"train with: python jobs/train_canvas.py --config <this file>\n")
    sweep.write_bytes(keys["best_config"], (header + yaml.safe_dump(config_to_dict(chosen), sort_keys=False)).encode())
    log(f"best: run {best['run_name']} {FUSION_KEY}={best[FUSION_KEY]:.4g} {RATIO_KEY}={best[RATIO_KEY]:g} "
        f"{cfg.tune.metric}={best[cfg.tune.metric]:.4f}")
    for label, uri in uris.items():
        log(f"{label:14s} {uri}")
    return SweepResult(name, table, best, chosen, keys, uris)


def _record_trial_endings(storage: Storage, table: pd.DataFrame) -> None:
    """Record how each trial's run ended. A trial ASHA stops is torn down mid-run, which leaves its run
    marked running (or failed, when the teardown interrupted the driver): Tune knows better."""
    registry = RunRegistry(storage)
    for row in table.itertuples():
        if not isinstance(row.run_name, str) or row.status == "error":  # errors: the run's own record stands
            continue
        run = registry.open(row.run_name)
        ended = "finished" if row.status == "completed" else row.status
        if run.record.get("status") in ("running", "failed") and ended != run.record.get("status"):
            run.finish(ended)

