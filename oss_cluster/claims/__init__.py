"""The research claims registry: hypotheses with gates that run on data in storage, and discoveries backed
by data on disk.

    docs/research/hypotheses/H###.md   one hypothesis each: YAML front matter + Markdown body
    docs/research/discoveries.md       the D-series: measured findings, each naming the files that back it

A hypothesis's front matter:

    id: H009
    title: ...
    status: untested | in-progress | validated | refuted
    test_plan: what to run
    acceptance_gate: the gate in words
    gate:
      runs: {family: canvas, tier: null, model: null, min_steps: 2000}  # the newest finished run with at least
                                                                          # min_steps steps is judged
      checks:                                            # all must hold (metrics of its latest evaluation)
        - {metric: model/canvas_contribution, op: "<", value: 0.001}
        - {metric: model/psnr_rgb, op: ">=", than: taau/psnr_rgb, margin: 1.0}
      pass: validated      # the status when every check holds
      fail: refuted        # the status when one does not
    linked_runs: [...]     # runs a gate has judged (kept by `claims check`)

A gate with no finished run to judge leaves the status as it is, or makes it in-progress while a matching
run is training. Discoveries are `## D### title` sections with `data:` lines naming files (repository
paths) and `figure:` lines quoting what those files print; `claims check` confirms every file exists and
every quoted figure is in it.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
REGISTRY = REPO / "docs" / "research"
STATUSES = ("untested", "in-progress", "validated", "refuted")
OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
FRONT_MATTER = re.compile(r"\A---\n(?P<yaml>.*?)\n---\n(?P<body>.*)\Z", re.S)
REQUIRED = ("id", "title", "status", "test_plan", "acceptance_gate", "gate")


class ClaimsError(ValueError):
    """A registry file that does not parse or says something impossible; the message names the file."""


@dataclass
class Hypothesis:
    path: Path
    meta: dict
    body: str

    @property
    def id(self) -> str:
        return self.meta["id"]


@dataclass
class Discovery:
    id: str
    title: str
    text: str
    data: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)


def _check_gate(path: Path, gate) -> None:
    if not isinstance(gate, dict) or not isinstance(gate.get("checks"), list) or not gate["checks"]:
        raise ClaimsError(f"{path}: gate: needs 'runs' and a non-empty list 'checks'")
    unknown = set(gate.get("runs") or {}) - {"family", "tier", "model", "min_steps"}
    if unknown:
        raise ClaimsError(f"{path}: gate.runs: unknown keys {sorted(unknown)} (known: family, tier, model, min_steps)")
    for index, check in enumerate(gate["checks"]):
        where = f"{path}: gate.checks[{index}]"
        if not isinstance(check, dict) or "metric" not in check:
            raise ClaimsError(f"{where}: needs 'metric'")
        if check.get("op") not in OPS:
            raise ClaimsError(f"{where}: op {check.get('op')!r} is not one of {', '.join(OPS)}")
        if ("value" in check) == ("than" in check):
            raise ClaimsError(f"{where}: give exactly one of 'value' (a number) or 'than' (another metric)")
    for outcome in ("pass", "fail"):
        if gate.get(outcome) not in STATUSES:
            raise ClaimsError(f"{path}: gate.{outcome}: {gate.get(outcome)!r} is not one of {', '.join(STATUSES)}")


def read_hypothesis(path: Path) -> Hypothesis:
    match = FRONT_MATTER.match(path.read_text())
    if not match:
        raise ClaimsError(f"{path}: no YAML front matter (the file must start with '---' and close it with '---')")
    try:
        meta = yaml.safe_load(match["yaml"])
    except yaml.YAMLError as err:
        raise ClaimsError(f"{path}: front matter is not YAML: {err}") from None
    missing = [key for key in REQUIRED if key not in (meta or {})]
    if missing:
        raise ClaimsError(f"{path}: front matter lacks {', '.join(missing)}")
    if meta["status"] not in STATUSES:
        raise ClaimsError(f"{path}: status {meta['status']!r} is not one of {', '.join(STATUSES)}")
    if meta["id"] != path.stem:
        raise ClaimsError(f"{path}: id {meta['id']!r} differs from the file name {path.stem!r}")
    _check_gate(path, meta["gate"])
    meta.setdefault("linked_runs", [])
    return Hypothesis(path, meta, match["body"])


def read_discoveries(path: Path) -> list[Discovery]:
    if not path.exists():
        return []
    found, current = [], None
    for line in path.read_text().splitlines():
        heading = re.match(r"^## (D\d{3,})\s+(.*)$", line)
        if heading:
            current = Discovery(heading[1], heading[2].strip(" -—"), "")
            found.append(current)
        elif current is not None:
            tagged = re.match(r"^\s*[-*]?\s*(data|figure):\s*`(.+)`\s*$", line)
            if tagged:
                (current.data if tagged[1] == "data" else current.figures).append(tagged[2])
            else:
                current.text += line + "\n"
    for discovery in found:
        if not discovery.data:
            raise ClaimsError(f"{path}: {discovery.id} names no data (add a line: data: `path/to/file`)")
    return found


@dataclass
class Registry:
    hypotheses: list[Hypothesis]
    discoveries: list[Discovery]
    root: Path


def load_registry(root: Path = REGISTRY) -> Registry:
    folder = root / "hypotheses"
    hypotheses = [read_hypothesis(p) for p in sorted(folder.glob("H*.md"))] if folder.is_dir() else []
    return Registry(hypotheses, read_discoveries(root / "discoveries.md"), root)


def _newest(records: list[dict]) -> dict | None:
    return max(records, key=lambda r: (r.get("ended_at") or "", r.get("name"))) if records else None


def _steps(record: dict) -> int:
    steps = record.get("step_metrics") or []
    return steps[-1]["step"] if steps else 0


def judge(hypothesis: Hypothesis, records: dict[str, dict], min_steps: int | None = None) -> dict:
    """Run one gate over run records: {status (what the gate says), run, checks [...], reason}. `min_steps`
    overrides the gate's own (smoke checks judge short runs too)."""
    gate = hypothesis.meta["gate"]
    wanted = {k: v for k, v in (gate.get("runs") or {}).items() if k != "min_steps"}
    least = int((gate.get("runs") or {}).get("min_steps") or 0) if min_steps is None else min_steps

    def matches(record: dict) -> bool:
        model = ((record.get("config") or {}).get("model") or {}).get("name")
        return all(value is None or {"family": record.get("family"), "tier": record.get("tier"),
                                     "model": model}[key] == value for key, value in wanted.items())

    mine = [r for r in records.values() if matches(r)]
    ended = [r for r in mine if r.get("status") == "finished" and r.get("eval_metrics")]
    finished = [r for r in ended if _steps(r) >= least]
    selector = ", ".join(f"{k} {v}" for k, v in wanted.items() if v is not None) or "any run"
    selector += f", at least {least} steps" if least else ""
    current = hypothesis.meta["status"]
    if not finished:
        if ended:
            short = ", ".join(f"{r['name']} ({_steps(r)})" for r in ended)
            return {"status": current, "run": None, "checks": [],
                    "reason": f"no finished run ({selector}) to judge; too short: {short}"}
        running = [r["name"] for r in mine if r.get("status") == "running"]
        if running:
            return {"status": "in-progress", "run": None, "checks": [],
                    "reason": f"no finished run ({selector}) yet; training: {', '.join(running)}"}
        return {"status": current, "run": None, "checks": [], "reason": f"no finished run ({selector}) to judge"}
    run = _newest(finished)
    metrics = run["eval_metrics"][-1]
    checks, holds = [], True
    for check in gate["checks"]:
        value = metrics.get(check["metric"])
        if "than" in check:
            other = metrics.get(check["than"])
            bound = None if other is None else other + float(check.get("margin", 0.0))
            against = f"{check['than']}{' %+g' % check['margin'] if check.get('margin') else ''}"
        else:
            bound, against = float(check["value"]), f"{check['value']:g}"
        if not isinstance(value, (int, float)) or not isinstance(bound, (int, float)):
            missing = check["metric"] if not isinstance(value, (int, float)) else check["than"]
            return {"status": current, "run": run["name"], "checks": checks,
                    "reason": f"{run['name']} (step {metrics.get('step')}) has no {missing} in its latest evaluation"}
        ok = OPS[check["op"]](value, bound)
        holds &= ok
        checks.append({"metric": check["metric"], "value": value, "op": check["op"], "bound": bound,
                       "against": against, "holds": ok})
    status = gate["pass"] if holds else gate["fail"]
    words = "; ".join(f"{c['metric']} {c['value']:.5g} {c['op']} {c['against']} ({c['bound']:.5g}): "
                      f"{'yes' if c['holds'] else 'no'}" for c in checks)
    return {"status": status, "run": run["name"], "step": metrics.get("step"), "checks": checks,
            "reason": f"{run['name']} at step {metrics.get('step')}: {words}"}


def back(discovery: Discovery, root: Path = REPO) -> dict:
    """Whether every file a discovery names (a path in the repository) exists and every figure it quotes is
    printed in one of them."""
    problems, texts = [], []
    for name in discovery.data:
        path = root / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        else:
            texts.append(path.read_text(errors="replace"))
    for figure in discovery.figures:
        if texts and not any(figure in text for text in texts):
            problems.append(f"figure {figure!r} is not in its data")
    return {"backed": not problems, "problems": problems}


def check_all(registry: Registry, storage=None, records: dict[str, dict] | None = None,
              min_steps: int | None = None) -> dict:
    """Every gate and every discovery's backing, as the dashboard and `claims check` show them."""
    if records is None:
        records = {}
        if storage is not None:
            from ..runs import RunRegistry

            runs = RunRegistry(storage)
            for name in runs.names():
                try:
                    records[str(name)] = runs.open(name).record
                except (FileNotFoundError, ValueError):
                    continue
    hypotheses = []
    for hypothesis in registry.hypotheses:
        result = judge(hypothesis, records, min_steps)
        hypotheses.append({"id": hypothesis.id, "title": hypothesis.meta["title"],
                           "recorded_status": hypothesis.meta["status"], "status": result["status"],
                           "test_plan": hypothesis.meta["test_plan"],
                           "acceptance_gate": hypothesis.meta["acceptance_gate"],
                           "linked_runs": sorted(set(hypothesis.meta.get("linked_runs") or []) |
                                                 ({result["run"]} if result["run"] else set())),
                           "judged_run": result["run"], "reason": result["reason"], "checks": result["checks"],
                           "body": hypothesis.body.strip(),
                           "file": str(hypothesis.path.relative_to(registry.root.parents[1]))
                           if registry.root.parents[1] in hypothesis.path.parents else str(hypothesis.path)})
    discoveries = [{"id": d.id, "title": d.title, "text": d.text.strip(), "data": d.data, "figures": d.figures,
                    **back(d)} for d in registry.discoveries]
    return {"hypotheses": hypotheses, "discoveries": discoveries}


class _Block(yaml.SafeDumper):
    pass


_Block.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def record_status(hypothesis: Hypothesis, result: dict) -> bool:
    """Write a gate's status, judged run and time into the hypothesis file; True when the file changed."""
    meta = dict(hypothesis.meta)
    changed = meta["status"] != result["status"] or (result["judged_run"] and
                                                     result["judged_run"] not in meta.get("linked_runs", []))
    if not changed:
        return False
    meta["status"] = result["status"]
    meta["linked_runs"] = result["linked_runs"]
    meta["last_checked"] = {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            "run": result["judged_run"], "result": result["reason"]}
    text = yaml.dump(meta, Dumper=_Block, sort_keys=False, allow_unicode=True, width=110)
    hypothesis.path.write_text(f"---\n{text}---\n{hypothesis.body}")
    hypothesis.meta = meta
    return True
