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
Step time: measured (median step_time_s of a run's metrics.json) or the FLOPs model
    t = flops_per_sample x global_batch / (N G x peak x mfu).
Line items (Tune sweeps, distillation, latency tests) are node-hours priced the same way; the head
node runs for the whole plan at on-demand price.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt, ValidationError

from .catalog import CostError, Instance


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FlopsModel(_Strict):
    flops_per_sample: PositiveFloat  # training FLOPs (forward + backward) per window
    peak_tflops_per_gpu: PositiveFloat
    mfu: float = Field(gt=0, le=1)


class StepTime(_Strict):
    source: Literal["flops_model", "measured", "fixed"]
    run: str | None = None  # measured: a run name under --runs
    seconds: PositiveFloat | None = None  # fixed


class Cycle(_Strict):
    name: str
    node_type: str
    nodes: PositiveInt
    steps: PositiveInt
    global_batch: PositiveInt
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
    head_node_type: str | None = None
    flops_model: FlopsModel | None = None
    cycles: list[Cycle] = Field(min_length=1)
    line_items: list[LineItem] = Field(default_factory=list)


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
    for i, cycle in enumerate(plan.cycles):
        source = cycle.step_time.source
        if source == "flops_model" and plan.flops_model is None:
            raise CostError(f"{path}: cycles.{i}.step_time: source flops_model needs a top-level flops_model")
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


def step_seconds(plan: Plan, cycle: Cycle, accelerators: int, runs=None, mfu_scale: float = 1.0) -> tuple[float, str]:
    """(seconds per optimizer step, how it was obtained)."""
    source = cycle.step_time
    if source.source == "fixed":
        return source.seconds, "fixed in the plan"
    if source.source == "measured":
        if runs is None:
            raise CostError(f"cycle {cycle.name}: step time is measured from run {source.run}; pass --runs STORAGE")
        record = runs(source.run)
        return measured_step_time(record), f"measured: median step_time_s of run {source.run}"
    model = plan.flops_model
    gpus = max(1, accelerators) * cycle.nodes
    mfu = min(1.0, model.mfu * mfu_scale)
    seconds = model.flops_per_sample * cycle.global_batch / (gpus * model.peak_tflops_per_gpu * 1e12 * mfu)
    return seconds, (f"FLOPs model: {model.flops_per_sample:.3g} FLOPs/sample x {cycle.global_batch} / "
                     f"({gpus} GPUs x {model.peak_tflops_per_gpu:g} TFLOP/s x MFU {mfu:.2f})")


def market_price(instance: Instance, spot_market: bool) -> float:
    """USD/hour in the spot-plan column: spot price for spot node types, else on-demand."""
    return instance.spot_price if spot_market and instance.spot_price is not None else instance.price


def estimate(plan: Plan, cluster: dict, catalog: dict, runs=None, mfu_scale: float = 1.0,
             interruption_scale: float = 1.0) -> dict:
    """Per-cycle and per-line-item rows and totals (hours and USD); see the module docstring."""
    rows = []
    for cycle in plan.cycles:
        node = cluster[cycle.node_type]
        instance = catalog[node["instance_type"]]
        seconds, how = step_seconds(plan, cycle, instance.accelerators, runs, mfu_scale)
        compute_h = cycle.steps * seconds / 3600
        checkpoint_h = cycle.steps / cycle.checkpoint_every * cycle.checkpoint_seconds / 3600
        base_h = compute_h + checkpoint_h
        rate = cycle.spot_interruptions_per_hour * interruption_scale if node["spot"] else 0.0
        interruptions = rate * base_h
        lost_h = interruptions * (cycle.checkpoint_every * seconds / 2 + cycle.restart_seconds) / 3600
        spot_price = market_price(instance, node["spot"])
        rows.append({
            "name": cycle.name, "kind": "cycle", "node_type": cycle.node_type, "instance": instance.instance_type,
            "nodes": cycle.nodes, "spot_market": node["spot"], "step_seconds": seconds, "step_time_source": how,
            "wall_hours": base_h + lost_h, "interruptions": interruptions, "lost_hours": lost_h,
            "node_hours_on_demand": cycle.nodes * base_h, "node_hours_spot": cycle.nodes * (base_h + lost_h),
            "gpu_hours": cycle.nodes * (base_h + lost_h) * instance.accelerators,
            "usd_on_demand": cycle.nodes * base_h * instance.price,
            "usd_spot": cycle.nodes * (base_h + lost_h) * spot_price,
        })
    for item in plan.line_items:
        node = cluster[item.node_type]
        instance = catalog[node["instance_type"]]
        spot_price = market_price(instance, node["spot"])
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
    header = (f"{'item':38s} {'node type':24s} {'nodes':>5s} {'node-h':>9s} {'GPU-h':>9s} "
              f"{'on-demand $':>12s} {'spot $':>11s}")
    lines = [header, "-" * len(header)]
    for row in result["rows"]:
        lines.append(f"{row['name'][:38]:38s} {row['node_type'] + (' (spot)' if row['spot_market'] else ''):24s} "
                     f"{row['nodes']:>5d} {row['node_hours_' + market]:>9.1f} {row['gpu_hours']:>9.1f} "
                     f"{row['usd_on_demand']:>12,.0f} {row['usd_spot']:>11,.0f}")
    totals = result["totals"]
    lines.append("-" * len(header))
    lines.append(f"{'total':38s} {'':24s} {'':>5s} {totals['node_hours_' + market]:>9.1f} {totals['gpu_hours']:>9.1f} "
                 f"{totals['usd_on_demand']:>12,.0f} {totals['usd_spot']:>11,.0f}")
    return "\n".join(lines)


def assumptions(plan: Plan, result: dict) -> list[str]:
    notes = []
    for row in result["rows"]:
        if row["kind"] == "cycle":
            notes.append(f"{row['name']}: {row['step_seconds']:.3f} s/step ({row['step_time_source']}); "
                         f"{row['interruptions']:.2f} expected spot interruptions costing {row['lost_hours']:.2f} h")
    if plan.flops_model:
        notes.append(f"FLOPs model: {plan.flops_model.flops_per_sample:.3g} training FLOPs per window, "
                     f"peak {plan.flops_model.peak_tflops_per_gpu:g} TFLOP/s per GPU, MFU {plan.flops_model.mfu:.2f}")
    notes.append("on-demand $ assumes no interruptions; spot $ adds the redone work and restarts at spot prices "
                 "(on-demand node types are priced on-demand in both columns)")
    notes.append("the head node runs for the whole plan at on-demand price; storage and egress are not included")
    notes.append("prices: cost/aws_vms.csv (see cost/aws_vms.source.yaml for their date and source)")
    return notes
