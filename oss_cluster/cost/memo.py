"""The multi-cycle Heavy training cost memo (Markdown): bottom line first, then the plan, every assumption
with its value, the estimate, actuals and variance, and its sensitivity to step time, spot interruptions
and spot prices."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from .plan import assumptions, bottom_line, estimate
from .report import by_cycle

STEP_SCALES = (0.25, 0.5, 1.0, 2.0)
INTERRUPTION_SCALES = (0.0, 1.0, 2.0, 4.0)
SPOT_PRICE_SCALES = (0.7, 1.0, 1.3)  # the catalog's spot prices are planning figures, about +-30 %


def sensitivity(plan, cluster, catalog, runs=None, columns=INTERRUPTION_SCALES, axis="interruption_scale"):
    """Total spot-plan $ for each (step-time scale, column scale): rows step time, columns `axis`."""
    return [[estimate(plan, cluster, catalog, runs, step_scale=m, **{axis: c})["totals"]["usd_spot"] for c in columns]
            for m in STEP_SCALES]


def _grid(title: str, plan, cluster, catalog, runs, columns, axis, label) -> list[str]:
    lines = ["", title, "", f"| step time \\ {label} | " + " | ".join(f"x{c:g}" for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for scale, row in zip(STEP_SCALES, sensitivity(plan, cluster, catalog, runs, columns, axis)):
        lines.append(f"| x{scale:g} | " + " | ".join(f"{value:,.0f}" for value in row) + " |")
    return lines


def write_memo(plan, plan_path: str, cluster, catalog, actuals: list[dict] | None, runs=None,
               catalog_source: Path | None = None, registry_note: str | None = None) -> str:
    """The memo's Markdown. `actuals`: report.run_actuals rows ([] for a registry with no runs, None for no
    registry); `registry_note`: a line about the registry to show above them (where it was looked for)."""
    result = estimate(plan, cluster, catalog, runs)
    totals = result["totals"]
    lines = [f"# Multi-cycle Heavy training cost memo: {plan.name}", "", f"**{bottom_line(result)}**", "",
             f"Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `python -m oss_cluster.cost memo` "
             f"from `{plan_path}`.", "", "## Plan", "",
             "| item | node type | instance | nodes | steps | global batch | step time (s) |",
             "|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        if row["kind"] == "cycle":
            lines.append(f"| {row['name']} | {row['node_type']}{' (spot)' if row['spot_market'] else ''} | "
                         f"{row['instance']} | {row['nodes']} | {row['steps']:,} | {row['global_batch']} | "
                         f"{row['step_seconds']:.3f} |")
        else:
            lines.append(f"| {row['name']} | {row['node_type']} | {row['instance']} | {row['nodes']} | - | - | - |")
    lines += ["", "## Assumptions", ""] + [f"- {note}" for note in
                                           assumptions(plan, result, cluster, catalog, catalog_source)]
    lines += ["", "## Estimate", "", "| item | node-hours (spot plan) | GPU-hours | on-demand $ | spot $ |",
              "|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['name']} | {row['node_hours_spot']:.1f} | {row['gpu_hours']:.1f} | "
                     f"{row['usd_on_demand']:,.0f} | {row['usd_spot']:,.0f} |")
    lines.append(f"| **total** | {totals['node_hours_spot']:.1f} | {totals['gpu_hours']:.1f} | "
                 f"**{totals['usd_on_demand']:,.0f}** | **{totals['usd_spot']:,.0f}** |")
    lines += ["", "## Actuals so far", ""]
    if registry_note:
        lines += [registry_note, ""]
    if actuals is None:
        lines.append("No run registry given (`--runs STORAGE`), so no actuals.")
    elif not actuals:
        lines.append("No started runs: $0.00 spent so far.")
    else:
        spent = sum(a["usd"] for a in actuals)
        lines += [f"{len(actuals)} runs, {sum(a['hours'] for a in actuals):.2f} run-hours, ${spent:,.2f} spent.", "",
                  "| run | status | hours | node types | $/h | spent $ |", "|---|---|---|---|---|---|"]
        for a in actuals:
            types = ", ".join(f"{k} x{v}" for k, v in a["node_types"].items()) or "-"
            unpriced = f" (no price: {', '.join(a['unpriced_node_types'])})" if a["unpriced_node_types"] else ""
            lines.append(f"| {a['run']} | {a['status']} | {a['hours']:.3f} | {types}{unpriced} | "
                         f"{a['usd_per_hour']:.3f} | {a['usd']:.2f} |")
    if actuals is not None:
        lines += ["", "## Variance", "", "| cycle | runs | estimate $ | actual $ | variance $ | spent / estimate |",
                  "|---|---|---|---|---|---|"]
        for row in by_cycle(plan, result, actuals):
            if row["runs"] == 0 and row["actual_usd"] == 0:
                lines.append(f"| {row['cycle']} | 0 | {row['estimate_usd']:,.0f} | - | not started | - |")
            else:
                lines.append(f"| {row['cycle']} | {row['runs']} | {row['estimate_usd']:,.0f} | {row['actual_usd']:,.2f} "
                             f"| {row['variance_usd']:,.2f} | {row['done_fraction']:.1%} |")
    lines += ["", "## Sensitivity", "",
              "Total spot-plan $ when every cycle's step time is scaled (rows), against the spot interruption rate "
              "and against spot prices (columns):"]
    lines += _grid("Step time x spot interruption rate:", plan, cluster, catalog, runs, INTERRUPTION_SCALES,
                   "interruption_scale", "interruption rate")
    lines += _grid("Step time x spot price:", plan, cluster, catalog, runs, SPOT_PRICE_SCALES,
                   "spot_price_scale", "spot price")
    return "\n".join(lines) + "\n"
