"""The training plan (cost/heavy_multicycle.yaml) and its estimate.

Per cycle, with step time t (s), S steps, checkpoint every C steps taking c s, restart r s, N nodes
of G accelerators, spot interruption rate i per hour:
    compute_h     = S t / 3600
    checkpoint_h  = (S / C) c / 3600
    base_h        = compute_h + checkpoint_h                      (wall hours, uninterrupted)
    interruptions = i x base_h                                    (spot only)
    lost_h        = interruptions x (C t / 2 + r) / 3600         (half a checkpoint interval redone + restart)
    node_h        = N (base_h + lost_h);  GPU_h = G node_h
    on-demand $   = N base_h x on-demand price;  spot $ = node_h x spot price
Step time: measured (median step_time_s of a run's metrics.json), per window (seconds one GPU takes
for one window, measured, times the windows each GPU runs per step), fixed, or the FLOPs model
    t = flops_per_sample x global_batch / (N G x peak x mfu).
A plan names the training config it prices (`training_config`): crop, ratio, window, warm-up and the
windows per GPU per step (batch_size x grad_accum) come from it, the global batch is that times the
cycle's GPUs, and the FLOPs per window are counted from the config's model at that crop. A plan
that restates any of them differently is an error.
Line items (Tune sweeps, distillation, latency tests) are node-hours priced the same way; the head
node runs for the whole plan at on-demand price.
"""

from __future__ import annotations

import statistics
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt, ValidationError

from .catalog import CostError, Instance


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FlopsModel(_Strict):
    flops_per_sample: PositiveFloat | None = None  # training FLOPs per window; counted from training_config if unset
    peak_tflops_per_gpu: PositiveFloat
    mfu: float = Field(gt=0, le=1)


class StepTime(_Strict):
    source: Literal["flops_model", "measured", "fixed", "per_window"]
    run: str | None = None  # measured: a run name under --runs
    seconds: PositiveFloat | None = None  # fixed: per optimizer step; per_window: per window on one GPU
    note: str | None = None  # where a fixed or per-window figure was measured


class TrainingShape(_Strict):
    """What the plan takes from its training config."""

    path: str
    model: str
    crop: int
    ratio: float
    window: int
    warmup: int
    windows_per_gpu: int  # batch_size x grad_accum: windows each GPU runs per optimizer step
    flops_per_window: float


class Cycle(_Strict):
    name: str
    node_type: str
    nodes: PositiveInt
    steps: PositiveInt
    global_batch: PositiveInt | None = None  # from the training config (must agree when stated)
    step_time: StepTime
    checkpoint_every: PositiveInt
    checkpoint_seconds: NonNegativeFloat
    restart_seconds: NonNegativeFloat
    spot_interruptions_per_hour: NonNegativeFloat = 0.0
    runs: list[str] = Field(default_factory=list)  # run names that belong to this cycle (for `report`)


class LineItem(_Strict):
    name: str
    node_type: str
    nodes: PositiveInt
    hours: NonNegativeFloat


class Plan(_Strict):
    name: str
    training_config: str | None = None  # experiment YAML the cycles train (relative to the plan's repository)
    head_node_type: str | None = None
    flops_model: FlopsModel | None = None
    cycles: list[Cycle] = Field(min_length=1)
    line_items: list[LineItem] = Field(default_factory=list)
    shape: TrainingShape | None = Field(None, exclude=True)  # filled from training_config by load_plan


@lru_cache(maxsize=16)
def _flops_per_window(model: str, crop: int, window: int, ratio: float, warmup: int) -> float:
    from .flops import training_flops_per_window

    return training_flops_per_window(model, crop, window, ratio, warmup)


def training_shape(path: Path) -> TrainingShape:
    """Crop, ratio, window, warm-up, windows per GPU and counted FLOPs per window of a training config."""
    from ..config import ConfigError, load_config, warmup_frames

    try:
        cfg = load_config(path)
    except ConfigError as err:
        raise CostError(f"training_config: {err}") from None
    warmup = warmup_frames(cfg.train, cfg.data.ratio, cfg.data.window)
    return TrainingShape(path=str(path), model=cfg.model.name, crop=cfg.train.crop, ratio=cfg.data.ratio,
                         window=cfg.data.window, warmup=warmup,
                         windows_per_gpu=cfg.train.batch_size * cfg.train.grad_accum,
                         flops_per_window=_flops_per_window(cfg.model.name, cfg.train.crop, cfg.data.window,
                                                            cfg.data.ratio, warmup))


def global_batch(plan: Plan, cycle: Cycle, accelerators: int) -> int:
    """Windows per optimizer step, all GPUs: from the training config where the plan names one."""
    if plan.shape is not None:
        return plan.shape.windows_per_gpu * cycle.nodes * max(1, accelerators)
    return cycle.global_batch


def flops_per_sample(plan: Plan) -> float:
    return plan.shape.flops_per_window if plan.shape is not None else plan.flops_model.flops_per_sample


def load_plan(path: str | Path, cluster: dict[str, dict], catalog: dict[str, Instance]) -> Plan:
    """Parse and check a plan; every error names the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise CostError(f"{path}: no such plan file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise CostError(f"{path}: not valid YAML: {err}") from None
    try:
        plan = Plan.model_validate(raw or {})
    except ValidationError as err:
        problems = []
        for problem in err.errors():
            field = ".".join(str(part) for part in problem["loc"])
            message = "unknown field" if problem["type"] == "extra_forbidden" else problem["msg"]
            problems.append(f"{path}: {field}: {message}")
        raise CostError("\n".join(problems)) from None
    named = [(f"cycles.{i}.node_type", c.node_type) for i, c in enumerate(plan.cycles)]
    named += [(f"line_items.{i}.node_type", item.node_type) for i, item in enumerate(plan.line_items)]
    if plan.head_node_type:
        named.append(("head_node_type", plan.head_node_type))
    for field, node_type in named:
        if node_type not in cluster:
            raise CostError(f"{path}: {field}: unknown node type {node_type!r} (cluster.yaml has {', '.join(cluster)})")
        instance_type = cluster[node_type]["instance_type"]
        if instance_type not in catalog:
            raise CostError(f"{path}: {field}: node type {node_type!r} uses instance type {instance_type!r}, "
                            "which has no price in cost/aws_vms.csv")
    if plan.training_config:
        from .catalog import REPO

        named = Path(plan.training_config)
        # Relative to the plan's folder, or to the repository (configs/heavy.yaml from cost/...).
        config = next((c for c in (path.resolve().parent / named, REPO / named) if c.is_file()), None)
        if config is None:
            raise CostError(f"{path}: training_config: {plan.training_config} is neither beside the plan nor in {REPO}")
        plan.shape = training_shape(config)
        counted = plan.shape.flops_per_window
        stated = plan.flops_model.flops_per_sample if plan.flops_model else None
        if stated is not None and abs(stated - counted) > 0.02 * counted:
            raise CostError(f"{path}: flops_model.flops_per_sample {stated:.4g} disagrees with {plan.training_config} "
                            f"({plan.shape.model}, crop {plan.shape.crop}, ratio {plan.shape.ratio:g}, window "
                            f"{plan.shape.window}, {plan.shape.warmup} warm-up frames: {counted:.4g} counted); "
                            "remove it (it is counted from the config) or fix the config")
    for i, cycle in enumerate(plan.cycles):
        source = cycle.step_time.source
        if plan.shape is None and cycle.global_batch is None:
            raise CostError(f"{path}: cycles.{i}.global_batch: needed when the plan names no training_config")
        if plan.shape is not None and cycle.global_batch is not None:
            accelerators = catalog[cluster[cycle.node_type]["instance_type"]].accelerators
            derived = global_batch(plan, cycle, accelerators)
            if cycle.global_batch != derived:
                raise CostError(
                    f"{path}: cycles.{i}.global_batch {cycle.global_batch} disagrees with {plan.training_config}: "
                    f"{plan.shape.windows_per_gpu} windows per GPU (batch_size x grad_accum) x {cycle.nodes} nodes x "
                    f"{accelerators} GPUs = {derived}; remove it (it follows from the config) or fix the config")
        if source == "flops_model" and plan.flops_model is None:
            raise CostError(f"{path}: cycles.{i}.step_time: source flops_model needs a top-level flops_model")
        if source == "flops_model" and plan.shape is None and plan.flops_model.flops_per_sample is None:
            raise CostError(f"{path}: flops_model.flops_per_sample: needed when the plan names no training_config")
        if source == "per_window" and (plan.shape is None or cycle.step_time.seconds is None):
            raise CostError(f"{path}: cycles.{i}.step_time: source per_window needs seconds and a training_config")
        if source == "measured" and not cycle.step_time.run:
            raise CostError(f"{path}: cycles.{i}.step_time.run: source measured needs a run name")
        if source == "fixed" and cycle.step_time.seconds is None:
            raise CostError(f"{path}: cycles.{i}.step_time.seconds: source fixed needs seconds")
    return plan


def measured_step_time(record: dict) -> float:
    """Median step_time_s of a run's step metrics (the warm-up step excluded when there are more)."""
    times = [m["step_time_s"] for m in record.get("step_metrics", []) if "step_time_s" in m]
    if not times:
        raise CostError(f"run {record.get('name')}: metrics.json has no step_time_s to measure")
    return statistics.median(times[1:] if len(times) > 1 else times)


def step_seconds(plan: Plan, cycle: Cycle, accelerators: int, runs=None) -> tuple[float, str]:
    """(seconds per optimizer step, how it was obtained)."""
    source = cycle.step_time
    note = f" ({source.note})" if source.note else ""
    if source.source == "fixed":
        return source.seconds, f"fixed in the plan{note}"
    if source.source == "per_window":
        windows = plan.shape.windows_per_gpu
        return source.seconds * windows, (f"{source.seconds:g} s per window per GPU x {windows} windows per GPU per "
                                          f"step (batch_size x grad_accum of {plan.training_config}){note}")
    if source.source == "measured":
        if runs is None:
            raise CostError(f"cycle {cycle.name}: step time is measured from run {source.run}; pass --runs STORAGE")
        record = runs(source.run)
        return measured_step_time(record), f"measured: median step_time_s of run {source.run}"
    return flops_model_seconds(plan, cycle, accelerators)


def flops_model_seconds(plan: Plan, cycle: Cycle, accelerators: int) -> tuple[float, str]:
    """Step time at the FLOPs model's MFU: what a compute-bound step would take."""
    model = plan.flops_model
    gpus = max(1, accelerators) * cycle.nodes
    batch = global_batch(plan, cycle, accelerators)
    seconds = flops_per_sample(plan) * batch / (gpus * model.peak_tflops_per_gpu * 1e12 * model.mfu)
    return seconds, (f"FLOPs model: {flops_per_sample(plan):.3g} FLOPs/window x {batch} / "
                     f"({gpus} GPUs x {model.peak_tflops_per_gpu:g} TFLOP/s x MFU {model.mfu:.2f})")


CHECKPOINT_WARNING_SHARE = 0.10  # checkpoints costing more than this share of compute get a warning


def market_price(instance: Instance, spot_market: bool, spot_price_scale: float = 1.0) -> float:
    """USD/hour in the spot-plan column: spot price (x spot_price_scale) for spot node types, else on-demand."""
    if spot_market and instance.spot_price is not None:
        return instance.spot_price * spot_price_scale
    return instance.price


def estimate(plan: Plan, cluster: dict, catalog: dict, runs=None, step_scale: float = 1.0,
             interruption_scale: float = 1.0, spot_price_scale: float = 1.0) -> dict:
    """Per-cycle and per-line-item rows and totals (hours and USD); see the module docstring.
    The scales move the step time, the spot interruption rate and spot prices (sensitivity)."""
    rows = []
    for cycle in plan.cycles:
        node = cluster[cycle.node_type]
        instance = catalog[node["instance_type"]]
        seconds, how = step_seconds(plan, cycle, instance.accelerators, runs)
        seconds *= step_scale
        compute_h = cycle.steps * seconds / 3600
        checkpoint_h = cycle.steps / cycle.checkpoint_every * cycle.checkpoint_seconds / 3600
        base_h = compute_h + checkpoint_h
        rate = cycle.spot_interruptions_per_hour * interruption_scale if node["spot"] else 0.0
        interruptions = rate * base_h
        lost_h = interruptions * (cycle.checkpoint_every * seconds / 2 + cycle.restart_seconds) / 3600
        spot_price = market_price(instance, node["spot"], spot_price_scale)
        rows.append({
            "name": cycle.name, "kind": "cycle", "node_type": cycle.node_type, "instance": instance.instance_type,
            "nodes": cycle.nodes, "spot_market": node["spot"], "step_seconds": seconds, "step_time_source": how,
            "steps": cycle.steps, "global_batch": global_batch(plan, cycle, instance.accelerators),
            "compute_hours": compute_h, "checkpoint_hours": checkpoint_h,
            "checkpoint_share": checkpoint_h / compute_h if compute_h else 0.0,
            "checkpoint_every": cycle.checkpoint_every, "checkpoint_minutes": cycle.checkpoint_every * seconds / 60,
            "checkpoint_seconds": cycle.checkpoint_seconds, "restart_seconds": cycle.restart_seconds,
            "interruptions_per_hour": rate,
            "wall_hours": base_h + lost_h, "interruptions": interruptions, "lost_hours": lost_h,
            "node_hours_on_demand": cycle.nodes * base_h, "node_hours_spot": cycle.nodes * (base_h + lost_h),
            "gpu_hours": cycle.nodes * (base_h + lost_h) * instance.accelerators,
            "usd_on_demand": cycle.nodes * base_h * instance.price,
            "usd_spot": cycle.nodes * (base_h + lost_h) * spot_price,
        })
    for item in plan.line_items:
        node = cluster[item.node_type]
        instance = catalog[node["instance_type"]]
        spot_price = market_price(instance, node["spot"], spot_price_scale)
        node_h = item.nodes * item.hours
        rows.append({"name": item.name, "kind": "line item", "node_type": item.node_type,
                     "instance": instance.instance_type, "nodes": item.nodes, "spot_market": node["spot"],
                     "wall_hours": item.hours, "node_hours_on_demand": node_h, "node_hours_spot": node_h,
                     "gpu_hours": node_h * instance.accelerators, "usd_on_demand": node_h * instance.price,
                     "usd_spot": node_h * spot_price})
    if plan.head_node_type:
        instance = catalog[cluster[plan.head_node_type]["instance_type"]]
        # The head is up for the whole plan: the sum of every item's wall time, in each column's market.
        head_on_demand = sum(row["node_hours_on_demand"] / row["nodes"] for row in rows)
        head_spot = sum(row["wall_hours"] for row in rows)
        rows.append({"name": "head node (whole plan)", "kind": "head", "node_type": plan.head_node_type,
                     "instance": instance.instance_type, "nodes": 1, "spot_market": False,
                     "wall_hours": head_spot, "node_hours_on_demand": head_on_demand, "node_hours_spot": head_spot,
                     "gpu_hours": 0.0, "usd_on_demand": head_on_demand * instance.price,
                     "usd_spot": head_spot * instance.price})
    totals = {key: sum(row[key] for row in rows) for key in
              ("node_hours_on_demand", "node_hours_spot", "gpu_hours", "usd_on_demand", "usd_spot")}
    return {"plan": plan.name, "rows": rows, "totals": totals}


def format_estimate(result: dict, spot: bool) -> str:
    market = "spot" if spot else "on_demand"
    width = max(38, *(len(row["name"]) for row in result["rows"]))
    mode = ("node-hours of the SPOT plan: spot node types at spot prices, with the expected interruptions' "
            "redone work and restarts" if spot else
            "node-hours of the ON-DEMAND plan (no interruptions); add --spot for the spot plan's node-hours")
    header = (f"{'item':{width}s} {'node type':24s} {'nodes':>5s} {'node-h':>9s} {'GPU-h':>9s} "
              f"{'on-demand $':>12s} {'spot $':>11s}")
    lines = [mode, header, "-" * len(header)]
    for row in result["rows"]:
        lines.append(f"{row['name']:{width}s} {row['node_type'] + (' (spot)' if row['spot_market'] else ''):24s} "
                     f"{row['nodes']:>5d} {row['node_hours_' + market]:>9.1f} {row['gpu_hours']:>9.1f} "
                     f"{row['usd_on_demand']:>12,.0f} {row['usd_spot']:>11,.0f}")
    totals = result["totals"]
    lines.append("-" * len(header))
    lines.append(f"{'total':{width}s} {'':24s} {'':>5s} {totals['node_hours_' + market]:>9.1f} "
                 f"{totals['gpu_hours']:>9.1f} {totals['usd_on_demand']:>12,.0f} {totals['usd_spot']:>11,.0f}")
    return "\n".join(lines)


def bottom_line(result: dict) -> str:
    totals = result["totals"]
    cycles = [row for row in result["rows"] if row["kind"] == "cycle"]
    days = sum(row["wall_hours"] for row in cycles) / 24
    return (f"Bottom line: ${totals['usd_on_demand']:,.0f} on demand or ${totals['usd_spot']:,.0f} on the spot plan, "
            f"{totals['gpu_hours']:,.0f} GPU-hours over {days:,.1f} days of training ({len(cycles)} cycles, run one "
            "after another).")


def catalog_notes(catalog_source: Path | None) -> list[str]:
    """The price catalog's own caveats (cost/aws_vms.source.yaml): when and how prices were entered."""
    if catalog_source is None or not catalog_source.is_file():
        return ["prices: cost/aws_vms.csv (no source file beside it: their date and origin are unknown)"]
    source = yaml.safe_load(catalog_source.read_text()) or {}
    notes = [f"prices entered {source.get('entered', '?')} for {source.get('region', '?')} "
             f"({source.get('currency', 'USD per instance-hour')})"]
    for key, label in (("on_demand_source", "on-demand prices"), ("spot_source", "spot prices")):
        if source.get(key):
            notes.append(f"{label}: {' '.join(str(source[key]).split())}")
    return notes


def assumptions(plan: Plan, result: dict, cluster: dict | None = None, catalog: dict | None = None,
                catalog_source: Path | None = None) -> list[str]:
    """Every assumption that moves hours or dollars, with its value; warnings first."""
    notes, warnings = [], []
    if plan.shape is not None:
        shape = plan.shape
        notes.append(f"training config {shape.path}: {shape.model}, {shape.crop}x{shape.crop} output crops, ratio "
                     f"{shape.ratio:g}, {shape.window}-frame windows after {shape.warmup} warm-up frames, "
                     f"{shape.windows_per_gpu} windows per GPU per step; {shape.flops_per_window:.4g} training FLOPs "
                     "per window (counted, attention included)")
    for row in result["rows"]:
        if row["kind"] != "cycle":
            continue
        notes.append(f"{row['name']}: {row['steps']:,} steps x {row['step_seconds']:.3f} s = "
                     f"{row['compute_hours']:,.1f} h of compute ({row['step_time_source']}); global batch "
                     f"{row['global_batch']} windows")
        notes.append(f"{row['name']}: checkpoint every {row['checkpoint_every']:,} steps (every "
                     f"{row['checkpoint_minutes']:,.1f} min), {row['checkpoint_seconds']:g} s each = "
                     f"{row['checkpoint_hours']:,.2f} h ({row['checkpoint_share']:.1%} of compute); restart "
                     f"{row['restart_seconds']:g} s; {row['interruptions_per_hour']:g} spot interruptions per hour -> "
                     f"{row['interruptions']:.2f} expected, costing {row['lost_hours']:.2f} h")
        if row["checkpoint_share"] > CHECKPOINT_WARNING_SHARE:
            warnings.append(f"WARNING {row['name']}: checkpoints cost {row['checkpoint_share']:.0%} of compute "
                            f"({row['checkpoint_hours']:,.2f} h for {row['compute_hours']:,.2f} h): checkpoint less often")
    if plan.flops_model and cluster is not None and catalog is not None:
        model = plan.flops_model
        for cycle, row in zip(plan.cycles, result["rows"]):
            accelerators = catalog[cluster[cycle.node_type]["instance_type"]].accelerators
            bound, _ = flops_model_seconds(plan, cycle, accelerators)
            if cycle.step_time.source != "flops_model":
                notes.append(f"{cycle.name}: a compute-bound step at MFU {model.mfu:.2f} of {model.peak_tflops_per_gpu:g} "
                             f"TFLOP/s would take {bound:.3f} s; the step priced takes "
                             f"{row['step_seconds'] / bound:,.0f}x that")
    notes.append("on-demand $ assumes no interruptions; spot $ adds the redone work (half a checkpoint interval) "
                 "and restarts at spot prices (on-demand node types are priced on-demand in both columns)")
    notes.append("the head node runs for the whole plan at on-demand price; storage and egress are not included")
    notes.extend(catalog_notes(catalog_source))
    return warnings + notes
