"""The multi-cycle Heavy training cost memo (Markdown), with its sensitivity to MFU and spot rate."""

from __future__ import annotations

from datetime import datetime, timezone

from .plan import assumptions, estimate
from .report import by_cycle

MFU_SCALES = (0.5, 0.75, 1.0, 1.5)
INTERRUPTION_SCALES = (0.0, 1.0, 2.0, 4.0)


def sensitivity(plan, cluster, catalog, runs=None) -> list[list[float]]:
    """Total spot $ for each (MFU scale, interruption-rate scale) pair: rows MFU, columns interruptions."""
    return [[estimate(plan, cluster, catalog, runs, mfu_scale=m, interruption_scale=i)["totals"]["usd_spot"]
             for i in INTERRUPTION_SCALES] for m in MFU_SCALES]


def write_memo(plan, plan_path: str, cluster, catalog, actuals: list[dict] | None, runs=None) -> str:
    result = estimate(plan, cluster, catalog, runs)
    totals = result["totals"]
    lines = [f"# Multi-cycle Heavy training cost memo: {plan.name}", "",
             f"Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `python -m oss_cluster.cost memo` "
             f"from `{plan_path}`.", "", "## Plan", "",
             "| item | node type | instance | nodes | steps | global batch | step time (s) |",
             "|---|---|---|---|---|---|---|"]
    cycles = {c.name: c for c in plan.cycles}
    for row in result["rows"]:
        cycle = cycles.get(row["name"])
        lines.append(f"| {row['name']} | {row['node_type']}{' (spot)' if row['spot_market'] else ''} | {row['instance']} "
                     f"| {row['nodes']} | {cycle.steps if cycle else '-'} | {cycle.global_batch if cycle else '-'} "
                     f"| {row['step_seconds']:.3f} |" if cycle else
                     f"| {row['name']} | {row['node_type']} | {row['instance']} | {row['nodes']} | - | - | - |")
    lines += ["", "## Assumptions", ""] + [f"- {note}" for note in assumptions(plan, result)]
    lines += ["", "## Estimate", "", "| item | node-hours (spot plan) | GPU-hours | on-demand $ | spot $ |",
              "|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['name']} | {row['node_hours_spot']:.1f} | {row['gpu_hours']:.1f} | "
                     f"{row['usd_on_demand']:,.0f} | {row['usd_spot']:,.0f} |")
    lines.append(f"| **total** | {totals['node_hours_spot']:.1f} | {totals['gpu_hours']:.1f} | "
                 f"**{totals['usd_on_demand']:,.0f}** | **{totals['usd_spot']:,.0f}** |")
    lines += ["", "## Actuals so far", ""]
    if actuals is None:
        lines.append("No run registry given (`--runs STORAGE`), so no actuals.")
    elif not actuals:
        lines.append("The run registry has no started runs yet.")
    else:
        spent = sum(a["usd"] for a in actuals)
        lines += [f"{len(actuals)} runs, {sum(a['hours'] for a in actuals):.2f} run-hours, ${spent:,.2f} spent.", "",
                  "| run | status | hours | node types | $/h | spent $ |", "|---|---|---|---|---|---|"]
        for a in actuals:
            types = ", ".join(f"{k} x{v}" for k, v in a["node_types"].items()) or "-"
            unpriced = f" (no price: {', '.join(a['unpriced_node_types'])})" if a["unpriced_node_types"] else ""
            lines.append(f"| {a['run']} | {a['status']} | {a['hours']:.3f} | {types}{unpriced} | "
                         f"{a['usd_per_hour']:.3f} | {a['usd']:.2f} |")
        lines += ["", "## Variance", "", "| cycle | runs | estimate $ | actual $ | variance $ | spent / estimate |",
                  "|---|---|---|---|---|---|"]
        for row in by_cycle(plan, result, actuals):
            lines.append(f"| {row['cycle']} | {row['runs']} | {row['estimate_usd']:,.0f} | {row['actual_usd']:,.2f} | "
                         f"{row['variance_usd']:,.2f} | {row['done_fraction']:.1%} |")
    grid = sensitivity(plan, cluster, catalog, runs)
    lines += ["", "## Sensitivity", "",
              "Total spot-plan $ when the FLOPs model's MFU and every cycle's spot interruption rate are scaled "
              "(measured and fixed step times do not move with MFU):", "",
              "| MFU scale \\ interruption-rate scale | " + " | ".join(f"x{s:g}" for s in INTERRUPTION_SCALES) + " |",
              "|---|" + "---|" * len(INTERRUPTION_SCALES)]
    for scale, row in zip(MFU_SCALES, grid):
        mfu = f" (MFU {plan.flops_model.mfu * scale:.2f})" if plan.flops_model else ""
        lines.append(f"| x{scale:g}{mfu} | " + " | ".join(f"{value:,.0f}" for value in row) + " |")
    return "\n".join(lines) + "\n"
