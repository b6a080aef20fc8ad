"""What the dashboard shows, gathered from storage: runs, evaluations, sweeps, latency tests, cost, claims.

Everything here reads; nothing in storage is changed. `collect` returns the site's `data.json` (the
summary every page starts from) and one detail document per run (`run/<name>.json`: curves, strips,
evaluations, checkpoints, config); `Media` copies the images and clips those documents link into the
site folder.
"""

from __future__ import annotations

import io
import json
import os
import socket
import statistics
from datetime import datetime, timezone
from pathlib import Path

from ..runs import ENDED, RUNS_PREFIX, RunName, RunNameError
from ..storage import Storage, StorageError
from ..tiers import TIERS

STATUS_LABELS = {"running": "running", "finished": "finished", "failed": "failed", "stopped_early": "stopped early",
                 "stopped": "stopped", "terminated": "stopped", "created": "created"}
STALE_AFTER_S = 3600.0  # a running run silent this long (and 5x its usual log interval) has lost its process
HEADLINE = ("psnr_rgb", "flip")
ANCHORS = ("model", "bicubic", "taau")
CURVE_KEYS = ("loss", "lr", "samples_per_s", "step_time_s")


class DashboardError(RuntimeError):
    """Storage that cannot be read, or a site folder that cannot be written."""


def _time(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def last_update(record: dict) -> datetime | None:
    """The newest time the run's record shows it alive (start, attempts, worker groups, steps, evaluations)."""
    times = [record.get("started_at")]
    times += [entry.get("started_at") for entry in record.get("attempts") or []]
    times += [entry.get("started_at") for entry in record.get("worker_groups") or []]
    for series in ("step_metrics", "eval_metrics"):
        if record.get(series):
            times.append(record[series][-1].get("time"))
    parsed = [t for t in map(_time, times) if t is not None]
    return max(parsed) if parsed else None


def _process_gone(attempt: dict) -> bool:
    """The attempt's driver process ran on this machine and no longer exists."""
    pid = attempt.get("pid")
    if not pid or attempt.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OverflowError):
        return False
    return False


def run_status(record: dict, now: datetime, stale_after_s: float = STALE_AFTER_S) -> tuple[str, str]:
    """(label, detail): the recorded status in words, or "lost" for a run still marked running whose process
    is gone (its driver ran here and has exited) or that has been silent for longer than
    max(stale_after_s, 5 x its median interval between step logs)."""
    status = record.get("status") or "created"
    label = STATUS_LABELS.get(status, status)
    if status != "running":
        return label, record.get("ended_at") or ""
    attempts = record.get("attempts") or [{}]
    seen = last_update(record)
    if _process_gone(attempts[-1]):
        return "lost", (f"its driver (pid {attempts[-1]['pid']} on {attempts[-1]['host']}) exited without "
                        f"recording an ending; last update {seen.isoformat() if seen else 'never'}")
    times = [t for t in (_time(e.get("time")) for e in record.get("step_metrics") or []) if t is not None]
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
    limit = max(stale_after_s, 5 * statistics.median(gaps)) if gaps else stale_after_s
    if seen is not None and (now - seen).total_seconds() > limit:
        silent = (now - seen).total_seconds()
        return "lost", (f"marked running but silent for {silent / 60:.0f} min (limit {limit / 60:.0f} min): its "
                        f"process ended without recording an ending; last update {seen.isoformat()}")
    return label, f"last update {seen.isoformat()}" if seen else ""


def latest_eval(record: dict) -> dict:
    evals = record.get("eval_metrics") or []
    return evals[-1] if evals else {}


def run_summary(record: dict, now: datetime, spend: dict, stale_after_s: float) -> dict:
    """One row of the runs table."""
    status, detail = run_status(record, now, stale_after_s)
    steps = record.get("step_metrics") or []
    evaluation = latest_eval(record)
    config = record.get("config") or {}
    seen = last_update(record)
    return {
        "name": record["name"], "family": record.get("family"), "version": record.get("version"),
        "tier": record.get("tier"), "number": record.get("number"), "model": (config.get("model") or {}).get("name"),
        "status": status, "status_detail": detail, "recorded_status": record.get("status"),
        "step": steps[-1]["step"] if steps else 0, "steps": (config.get("train") or {}).get("steps"),
        "started_at": record.get("started_at"), "ended_at": record.get("ended_at"),
        "last_update": seen.isoformat() if seen else None,
        "eval_step": evaluation.get("step"),
        "metrics": {f"{who}/{metric}": evaluation.get(f"{who}/{metric}") for who in ANCHORS for metric in HEADLINE
                    if _numeric(evaluation.get(f"{who}/{metric}"))},
        "canvas_contribution": evaluation.get("model/canvas_contribution"),
        "fx_vs_sr_over_motion": evaluation.get("extrapolation/a0.5/fx_vs_sr_over_motion"),
        "spend_usd": spend.get("usd"), "spend_unpriced": spend.get("unpriced_node_types") or [],
        "node_types": record.get("node_types") or {},
    }


def _curves(record: dict) -> dict:
    train = [{"step": e["step"], **{k: e[k] for k in CURVE_KEYS if _numeric(e.get(k))}}
             for e in record.get("step_metrics") or []]
    evals = [{k: v for k, v in e.items() if _numeric(v)} for e in record.get("eval_metrics") or []]
    return {"train": train, "eval": evals}


class Media:
    """Copies storage objects the pages link (strips, clips, plots) into `<site>/files/<key>`, once each:
    these artefacts are written once under frozen run names, so a copy already in the site is current."""

    def __init__(self, storage: Storage, site: Path):
        self.storage = storage
        self.site = site
        self.missing: list[str] = []

    def link(self, key: str) -> str | None:
        """The site-relative URL of `key`, copying it on first use; None (and noted) when storage lacks it."""
        target = self.site / "files" / key
        if not target.exists():
            try:
                data = self.storage.read_bytes(key)
            except (FileNotFoundError, StorageError):
                self.missing.append(key)
                return None
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".part")
            partial.write_bytes(data)
            partial.replace(target)
        return f"files/{key}"

    def strip(self, key: str) -> dict | None:
        """A strip and, when its PNG carries the panel layout, its model and GT panels cut out (the slider)."""
        url = self.link(key)
        if url is None:
            return None
        entry = {"url": url, "panels": {}}
        from PIL import Image

        from ..evaluate.strips import strip_layout

        source = self.site / url
        with Image.open(source) as image:
            layout = strip_layout(image)
            if layout is None:
                return entry
            for label in ("model", "GT"):
                if label not in layout["panels"]:
                    continue
                panel = source.with_name(f"{source.stem}.{label.lower()}.png")
                if not panel.exists():
                    left = layout["panels"].index(label) * layout["width"]
                    box = (left, layout["top"], left + layout["width"], layout["top"] + layout["height"])
                    image.crop(box).save(panel)
                entry["panels"][label] = str(panel.relative_to(self.site))
        return entry


def _evaluations(storage: Storage, keys: list[str], media: Media) -> list[dict]:
    """Every `evals/<dataset>/<source>/report.json` of a run, newest first, with its strips and clips."""
    found = []
    for key in keys:
        if not key.endswith("/report.json") or "/evals/" not in key:
            continue
        try:
            report = storage.read_json(key)
        except (ValueError, StorageError, FileNotFoundError) as err:
            found.append({"key": key, "error": f"cannot read {key}: {err}"})
            continue
        summary = report.get("summary") or {}
        steady = {method: {k: v for k, v in values.items() if _numeric(v)}
                  for method, values in summary.items() if isinstance(values, dict) and method in
                  ("bicubic", "taau", "model")}
        media_rows = []
        for sequence, written in (report.get("media") or {}).items():
            media_rows.append({"sequence": sequence,
                               "strip": media.strip(written["strip"]) if written.get("strip") else None,
                               "clip": media.link(written["clip"]) if written.get("clip") else None,
                               "sr_fx_clip": media.link(written["sr_fx_clip"]) if written.get("sr_fx_clip") else None})
        fx = report.get("extrapolation") or {}
        found.append({"key": key, "label": key.split("/evals/")[1].rsplit("/report.json")[0],
                      "created_at": report.get("created_at"), "source": report.get("source"),
                      "dataset": (report.get("dataset") or {}).get("label"), "steady": steady,
                      "extrapolation": {a: v for a, v in fx.items() if a.startswith("a")}, "media": media_rows})
    return sorted(found, key=lambda e: e.get("created_at") or "", reverse=True)


def run_detail(storage: Storage, record: dict, keys: list[str], summary: dict, media: Media) -> dict:
    """Everything the run page shows."""
    from ..checkpoints import list_checkpoints

    strips = []
    for entry in record.get("eval_metrics") or []:
        if isinstance(entry.get("strip"), str):
            strip = media.strip(entry["strip"])
            if strip is not None:
                strips.append({"step": entry["step"], **strip})
    try:
        checkpoints = [{"key": key, "step": step} for key, step in list_checkpoints(storage, record["name"])]
    except Exception as err:  # noqa: BLE001 - a checkpoint listing problem is shown, not fatal to the page
        checkpoints = [{"key": f"(cannot list checkpoints: {err})", "step": None}]
    return {**summary, "config": record.get("config") or {}, "attempts": record.get("attempts") or [],
            "worker_groups": record.get("worker_groups") or [], "artefacts": record.get("artefacts") or {},
            "checkpoints": checkpoints, "curves": _curves(record), "strips": strips,
            "evaluations": _evaluations(storage, keys, media),
            "tensorboard": any("/tensorboard/events.out.tfevents" in key for key in keys)}


def _supersedes(names: list[RunName]) -> dict[str, str]:
    """Each run's predecessor: the previous number in its series, else the newest run of the same family and
    tier in an older version."""
    previous = {}
    for name in names:
        older = [n for n in names if n.family == name.family and n.tier == name.tier and
                 (n.major, n.minor, n.number) < (name.major, name.minor, name.number)]
        if older:
            previous[str(name)] = str(max(older, key=lambda n: (n.major, n.minor, n.number)))
    return previous


def _sweeps(storage: Storage, keys: list[str], media: Media) -> list[dict]:
    import pandas as pd

    sweeps = []
    for key in sorted(k for k in keys if k.startswith("sweeps/") and k.endswith("/results.csv")):
        folder = key.rsplit("/", 1)[0]
        entry = {"name": folder.split("/", 1)[1], "plot": None, "rows": [], "columns": [], "best_config": None}
        try:
            table = pd.read_csv(io.BytesIO(storage.read_bytes(key)))
            entry["columns"] = list(table.columns)
            entry["rows"] = json.loads(table.to_json(orient="records"))
        except Exception as err:  # noqa: BLE001 - shown on the page
            entry["error"] = f"cannot read {key}: {err}"
        if f"{folder}/metric_vs_fusion.png" in keys:
            entry["plot"] = media.link(f"{folder}/metric_vs_fusion.png")
        if f"{folder}/best.yaml" in keys:  # sweep.py's best config
            entry["best_config"] = storage.read_bytes(f"{folder}/best.yaml").decode()
        sweeps.append(entry)
    return sweeps


def _latency(storage: Storage, keys: list[str]) -> dict[str, dict]:
    """The newest latency-test row of each tier (jobs/latency_test.py keeps them under latency/)."""
    from ..serving.latency import LATENCY_PREFIX

    newest: dict[str, dict] = {}
    for key in sorted(k for k in keys if k.startswith(f"{LATENCY_PREFIX}/") and k.endswith(".json")):
        try:
            payload = storage.read_json(key)
        except (ValueError, StorageError):
            continue
        for row in payload.get("rows") or []:
            newest[row["tier"]] = {**row, "measured_at": payload.get("measured_at"), "key": key}
    return newest


def _best(runs: list[dict]) -> dict | None:
    scored = [r for r in runs if r["status"] == "finished" and _numeric(r["metrics"].get("model/psnr_rgb"))]
    return max(scored, key=lambda r: r["metrics"]["model/psnr_rgb"]) if scored else None


def _tiers(summaries: list[dict], latency: dict[str, dict]) -> list[dict]:
    rows = []
    for name, tier in TIERS.items():
        mine = [r for r in summaries if r["tier"] == name]
        teachers = [r for r in mine if r.get("model") == tier.teacher]
        students = [r for r in mine if r.get("model") == f"student_{name}"]
        rows.append({
            "tier": name, "teacher": f"{tier.teacher_label} ({tier.teacher})", "student": f"student_{name}",
            "student_cap": tier.student_param_cap, "hardware": tier.hardware, "latency_ms": tier.latency_ms,
            "sizes": f"{tier.input_size[0]}x{tier.input_size[1]} -> {tier.output_size[0]}x{tier.output_size[1]}",
            "training": [r["name"] for r in mine if r["status"] == "running"],
            "best_teacher": (_best(teachers) or {}).get("name"), "best_student": (_best(students) or {}).get("name"),
            "latency": latency.get(name),
        })
    return rows


def _cost(storage: Storage, records: dict[str, dict]) -> dict:
    """The current estimate and actuals, as `python -m oss_cluster.cost` prints them, and the memo."""
    from ..cost.__main__ import DEFAULT_PLAN, _runs_reader
    from ..cost.catalog import CATALOG, CLUSTER, CostError, load_catalog, load_node_types
    from ..cost.memo import write_memo
    from ..cost.plan import assumptions, bottom_line, estimate, format_estimate, load_plan
    from ..cost.report import by_cycle, format_actuals, format_cycles, run_actuals

    try:
        catalog, cluster = load_catalog(CATALOG), load_node_types(CLUSTER)
        plan = load_plan(DEFAULT_PLAN, cluster, catalog)
        registry_reader = _runs_reader(storage)

        def runs(name: str) -> dict:  # the records already read; the registry for any other name the plan lists
            return records[name] if name in records else registry_reader(name)

        result = estimate(plan, cluster, catalog, runs)
        actuals = run_actuals(storage, catalog, cluster, records=records)
        source = CATALOG.with_suffix(".source.yaml")
        return {
            "plan": str(DEFAULT_PLAN.relative_to(DEFAULT_PLAN.parents[1])), "bottom_line": bottom_line(result),
            "estimate": format_estimate(result, False), "estimate_spot": format_estimate(result, True),
            "assumptions": assumptions(plan, result, cluster, catalog, source),
            "actuals": format_actuals(actuals), "cycles": format_cycles(by_cycle(plan, result, actuals)),
            "memo": write_memo(plan, str(DEFAULT_PLAN), cluster, catalog, actuals, runs, source),
            "spend": {row["run"]: row for row in actuals},
        }
    except (CostError, FileNotFoundError, ValueError) as err:
        return {"error": f"the cost module could not price this storage: {err}", "spend": {}}


def collect(storage: Storage, media: Media, now: datetime | None = None,
            stale_after_s: float = STALE_AFTER_S) -> tuple[dict, dict[str, dict]]:
    """(data.json, {run name: run detail}) for everything under `storage`."""
    from ..claims import ClaimsError, check_all, load_registry

    now = now or datetime.now(timezone.utc)
    try:
        keys = storage.list("")
    except Exception as err:  # noqa: BLE001 - any failure to list is the one error the page must show
        raise DashboardError(f"cannot read storage {storage.uri}: {err}") from err
    runs_by_name: dict[str, list[str]] = {}
    for key in keys:
        parts = key.split("/")
        if len(parts) >= 3 and parts[0] == RUNS_PREFIX:
            runs_by_name.setdefault(parts[1], []).append(key)
    names = []
    for text, run_keys in runs_by_name.items():
        if f"{RUNS_PREFIX}/{text}/metrics.json" in run_keys:
            try:
                names.append(RunName.parse(text))
            except RunNameError:
                continue
    names.sort()
    records, unreadable = {}, {}
    for name in names:  # each record read once: the summaries, spend and claims all use these
        try:
            records[str(name)] = storage.read_json(f"{RUNS_PREFIX}/{name}/metrics.json")
        except (ValueError, StorageError, FileNotFoundError) as err:
            unreadable[str(name)] = err
    cost = _cost(storage, records)
    summaries, details = [], {}
    previous = _supersedes(names)
    for name in names:
        if str(name) in unreadable:
            summaries.append({"name": str(name), "family": name.family, "version": f"{name.major}.{name.minor}",
                              "tier": name.tier, "number": name.number, "status": "unreadable",
                              "status_detail": f"metrics.json cannot be read: {unreadable[str(name)]}", "metrics": {}})
            continue
        record = records[str(name)]
        summary = run_summary(record, now, cost["spend"].get(str(name), {}), stale_after_s)
        summary["supersedes"] = previous.get(str(name))
        summaries.append(summary)
        details[str(name)] = run_detail(storage, record, runs_by_name[str(name)], summary, media)
    try:
        claims = check_all(load_registry(), storage, records=records)
    except ClaimsError as err:  # a broken registry file is shown on the claims page, not fatal to the site
        claims = {"error": str(err), "hypotheses": [], "discoveries": []}
    latency = _latency(storage, keys)
    data = {
        "generated_at": now.isoformat(timespec="seconds"), "storage": storage.uri,
        "runs": summaries, "ended_statuses": list(ENDED),
        "tiers": _tiers([s for s in summaries if "metrics" in s and s["status"] != "unreadable"], latency),
        "sweeps": _sweeps(storage, keys, media),
        "cost": {k: v for k, v in cost.items() if k != "spend"},
        "claims": claims,
        "missing_media": media.missing,
    }
    return data, details
