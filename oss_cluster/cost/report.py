"""Actual spend from the run registry: each run's start/end times and node types, priced per hour."""

from __future__ import annotations

from datetime import datetime, timezone

from ..runs import RunRegistry
from ..storage import Storage
from .catalog import hourly_price


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def run_actuals(storage: Storage, catalog: dict, cluster: dict, now: datetime | None = None,
                records: dict[str, dict] | None = None) -> list[dict]:
    """One row per run: hours (end or now - start), node types, USD/hour and USD spent. `records` ({name:
    metrics.json record}, in name order) are the registry's records when the caller has read them already."""
    now = now or datetime.now(timezone.utc)
    if records is None:
        registry = RunRegistry(storage)
        records = {str(name): registry.open(name).record for name in registry.names()}
    rows = []
    for name, record in records.items():
        started = _time(record.get("started_at"))
        if started is None:
            continue  # allocated, never started
        ended = _time(record.get("ended_at")) or now
        hours = max(0.0, (ended - started).total_seconds() / 3600)
        node_types = record.get("node_types") or {}
        rate, unpriced = hourly_price(node_types, catalog, cluster)
        usd = rate * hours
        groups = record.get("worker_groups") or []
        if groups:  # each worker group priced for its own nodes, from its start to the next group's (or the end)
            usd, unpriced = 0.0, []
            bounds = [_time(g["started_at"]) for g in groups] + [ended]
            for group, begin, end in zip(groups, bounds, bounds[1:]):
                group_rate, missing = hourly_price(group.get("node_types") or {}, catalog, cluster)
                usd += group_rate * max(0.0, (end - begin).total_seconds() / 3600)
                unpriced += [m for m in missing if m not in unpriced]
        rows.append({"run": str(name), "status": record.get("status"), "started_at": record.get("started_at"),
                     "ended_at": record.get("ended_at"), "hours": hours, "node_types": node_types,
                     "usd_per_hour": rate, "usd": usd, "unpriced_node_types": unpriced})
    return rows


def by_cycle(plan, estimate: dict, actuals: list[dict]) -> list[dict]:
    """Estimate beside actual spend per plan cycle (runs listed in the cycle's `runs`), plus a row for the runs in
    no cycle where there are any."""
    rows, claimed = [], set()
    estimates = {row["name"]: row for row in estimate["rows"]}
    for cycle in plan.cycles:
        mine = [a for a in actuals if a["run"] in cycle.runs]
        claimed.update(a["run"] for a in mine)
        row = estimates[cycle.name]
        planned = row["usd_spot"] if row["spot_market"] else row["usd_on_demand"]
        actual = sum(a["usd"] for a in mine)
        rows.append({"cycle": cycle.name, "runs": len(mine), "estimate_usd": planned, "actual_usd": actual,
                     "variance_usd": actual - planned, "done_fraction": actual / planned if planned else 0.0})
    rest = [a for a in actuals if a["run"] not in claimed]
    if rest:
        rows.append({"cycle": "(runs in no cycle)", "runs": len(rest), "estimate_usd": 0.0,
                     "actual_usd": sum(a["usd"] for a in rest), "variance_usd": sum(a["usd"] for a in rest),
                     "done_fraction": 0.0})
    return rows


def format_actuals(actuals: list[dict]) -> str:
    types = [", ".join(f"{k} x{v}" for k, v in row["node_types"].items()) or "-" for row in actuals]
    run_w = max([30] + [len(row["run"]) for row in actuals])
    type_w = max([10] + [len(text) for text in types])
    lines = [f"{'run':{run_w}s} {'status':14s} {'hours':>8s} {'node types':{type_w}s} {'$/h':>9s} {'spent $':>10s}"]
    for row, text in zip(actuals, types):
        note = f"  (no price: {', '.join(row['unpriced_node_types'])})" if row["unpriced_node_types"] else ""
        lines.append(f"{row['run']:{run_w}s} {str(row['status']):14s} {row['hours']:>8.3f} {text:{type_w}s} "
                     f"{row['usd_per_hour']:>9.3f} {row['usd']:>10.2f}{note}")
    if not actuals:
        lines.append("(no started runs: $0.00 spent)")
    return "\n".join(lines)


def format_cycles(rows: list[dict]) -> str:
    width = max([22] + [len(row["cycle"]) for row in rows])
    lines = [f"{'cycle':{width}s} {'runs':>5s} {'estimate $':>12s} {'actual $':>11s} {'variance $':>12s} "
             f"{'spent/est':>10s}"]
    for row in rows:
        if row["runs"] == 0 and row["actual_usd"] == 0:
            lines.append(f"{row['cycle']:{width}s} {0:>5d} {row['estimate_usd']:>12,.0f} {'-':>11s} "
                         f"{'not started':>12s} {'-':>10s}")
            continue
        lines.append(f"{row['cycle']:{width}s} {row['runs']:>5d} {row['estimate_usd']:>12,.0f} {row['actual_usd']:>11,.2f} "
                     f"{row['variance_usd']:>12,.2f} {row['done_fraction']:>9.1%}")
    return "\n".join(lines)
