"""Frozen run names and the run registry under a storage root.

A run name is `<family>-v<major>.<minor>-<tier>-<NNN>`, e.g. `srcnn-v6.2-pico-002`. Once allocated a
name is frozen: it is never handed out again and its record is never replaced by a new run.

Layout under the storage root:
    runs/<name>/claim.json     written once, exclusively, when the name is allocated
    runs/<name>/metrics.json   config, times, node types, step and eval metrics, artefact keys
    runs/<name>/tensorboard/   TensorBoard event files of every reported metric and strip
    runs/<name>/...            artefacts (checkpoints, comparison strips, exports)
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .storage import Storage
from .tensorboard_log import TensorBoardLog
from .tiers import TIERS

RUNS_PREFIX = "runs"
ENDED = ("finished", "failed", "stopped_early", "stopped", "terminated")  # how a run's attempt can end
NAME_PATTERN = re.compile(
    r"^(?P<family>[a-z][a-z0-9_]*)-v(?P<major>\d+)\.(?P<minor>\d+)-(?P<tier>[a-z]+)-(?P<number>\d{3,})$"
)


class RunNameError(ValueError):
    pass


class RunExistsError(FileExistsError):
    """The run name is frozen: it was allocated before and cannot be reused or overwritten."""


@dataclass(frozen=True, order=True)
class RunName:
    family: str
    major: int
    minor: int
    tier: str
    number: int

    @classmethod
    def parse(cls, text: str) -> "RunName":
        match = NAME_PATTERN.match(text)
        if not match:
            raise RunNameError(
                f"{text!r} is not a run name: expected <family>-v<major>.<minor>-<tier>-<NNN>, "
                "e.g. srcnn-v6.2-pico-002"
            )
        if match["tier"] not in TIERS:
            raise RunNameError(f"{text!r}: unknown tier {match['tier']!r} (known: {', '.join(TIERS)})")
        return cls(match["family"], int(match["major"]), int(match["minor"]), match["tier"], int(match["number"]))

    @classmethod
    def make(cls, family: str, version: str, tier: str, number: int) -> "RunName":
        """Build and validate a name from parts (`version` is 'major.minor')."""
        return cls.parse(f"{family}-v{version}-{tier}-{number:03d}")

    @property
    def series(self) -> str:
        """Everything but the number: names in one series are numbered 001, 002, ..."""
        return f"{self.family}-v{self.major}.{self.minor}-{self.tier}"

    def __str__(self) -> str:
        return f"{self.series}-{self.number:03d}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Run:
    """A handle on one run's record; every change is written to metrics.json at once (atomically)."""

    def __init__(self, storage: Storage, name: RunName, record: dict[str, Any]):
        self.storage = storage
        self.name = name
        self.record = record
        self._tensorboard: TensorBoardLog | None = None

    def __getstate__(self):  # a TensorBoard writer stays in the process that opened it
        return {**self.__dict__, "_tensorboard": None}

    @property
    def tensorboard(self) -> TensorBoardLog:
        """This process's TensorBoard log of the run (created on first use)."""
        if self._tensorboard is None:
            self._tensorboard = TensorBoardLog(self.storage, self.prefix)
        return self._tensorboard

    @property
    def prefix(self) -> str:
        return f"{RUNS_PREFIX}/{self.name}"

    def key(self, *parts: str) -> str:
        """Storage key of an artefact inside this run."""
        return "/".join((self.prefix, *parts))

    def save(self) -> None:
        key = self.key("metrics.json")
        if self.record.get("status") == "running" and self.storage.exists(key):
            # Another process may have ended this attempt meanwhile (a sweep recording that Tune stopped
            # the trial, the driver recording a failure): a writer still holding "running" keeps that ending.
            stored = self.storage.read_json(key)
            attempts = self.record.get("attempts") or [{}]
            if stored.get("status") in ENDED and (stored.get("ended_at") or "") > attempts[-1].get("started_at", ""):
                self.record["status"], self.record["ended_at"] = stored["status"], stored["ended_at"]
        self.storage.write_json(key, self.record)

    def log_step(self, step: int, **metrics: float) -> None:
        self.record["step_metrics"].append({"step": step, "time": _now(), **metrics})
        self.save()
        self.tensorboard.scalars("train", step, metrics)

    def log_eval(self, step: int, **metrics: Any) -> None:
        self.record["eval_metrics"].append({"step": step, "time": _now(), **metrics})
        self.save()
        self.tensorboard.scalars("eval", step, metrics, upload=True)

    def log_strip(self, step: int, png: bytes) -> str:
        """Store a comparison strip (`strips/step-NNNNNNN.png`), point `latest_strip` at it and add it to
        TensorBoard; returns its key."""
        key = self.key("strips", f"step-{step:07d}.png")
        self.storage.write_bytes(key, png)
        self.tensorboard.image("strip", step, png)
        self.add_artefact("latest_strip", key)
        return key

    def add_artefact(self, label: str, key: str) -> None:
        self.record["artefacts"][label] = key
        self.save()

    def set_node_types(self, node_types: dict[str, int]) -> None:
        """Record the node types and counts the run uses, e.g. {"heavy_trainer": 2}."""
        self.record["node_types"] = dict(node_types)
        self.save()

    def log_worker_group(self, node_types: dict[str, int], **facts: Any) -> None:
        """A worker group started (the first, or one Ray Train restarted after a failure): the node types
        its workers occupy, and facts such as the step it resumed from. Spend is priced per group."""
        self.record.setdefault("worker_groups", []).append({"started_at": _now(), "node_types": dict(node_types),
                                                            **facts})
        self.record["node_types"] = dict(node_types)
        self.save()

    def mark_started(self) -> None:
        self.record.setdefault("attempts", []).append({"started_at": _now(), "host": socket.gethostname(),
                                                       "pid": os.getpid()})
        self.record["status"] = "running"
        self.save()

    def finish(self, status: str = "finished") -> None:
        self.record["ended_at"] = _now()
        self.record["status"] = status
        self.save()
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


class RunRegistry:
    """Allocates frozen run names under `storage` and opens their records."""

    def __init__(self, storage: Storage):
        self.storage = storage

    def names(self) -> list[RunName]:
        found = set()
        for key in self.storage.list(f"{RUNS_PREFIX}/"):
            parts = key.split("/")
            if len(parts) >= 3 and parts[2] == "claim.json":
                try:
                    found.add(RunName.parse(parts[1]))
                except RunNameError:
                    continue
        return sorted(found)

    def _new_record(self, name: RunName, config: dict | None, node_types: dict[str, int] | None) -> dict:
        return {
            "name": str(name),
            "family": name.family,
            "version": f"{name.major}.{name.minor}",
            "tier": name.tier,
            "number": name.number,
            "config": config or {},
            "started_at": _now(),
            "ended_at": None,
            "status": "created",
            "node_types": dict(node_types or {}),
            "step_metrics": [],
            "eval_metrics": [],
            "artefacts": {},
        }

    def _claim(self, name: RunName, config: dict | None, node_types: dict[str, int] | None) -> Run | None:
        claim = {"name": str(name), "claimed_at": _now(), "host": socket.gethostname(), "pid": os.getpid()}
        if not self.storage.create_exclusive(f"{RUNS_PREFIX}/{name}/claim.json", json.dumps(claim).encode()):
            return None
        run = Run(self.storage, name, self._new_record(name, config, node_types))
        run.save()
        return run

    def allocate(
        self, family: str, version: str, tier: str, config: dict | None = None,
        node_types: dict[str, int] | None = None,
    ) -> Run:
        """Claim the next free number in the series; safe against concurrent processes."""
        series = RunName.make(family, version, tier, 1).series
        taken = [n.number for n in self.names() if n.series == series]
        number = max(taken, default=0) + 1
        for _ in range(10_000):
            name = RunName.make(family, version, tier, number)
            run = self._claim(name, config, node_types)
            if run is not None:
                return run
            number += 1  # someone claimed it between our listing and our claim
        raise RuntimeError(f"could not allocate a run name in series {series}")

    def create(self, name: str | RunName, config: dict | None = None, node_types: dict[str, int] | None = None) -> Run:
        """Claim an explicit name; RunExistsError if it was ever allocated."""
        parsed = RunName.parse(str(name))
        run = self._claim(parsed, config, node_types)
        if run is None:
            raise RunExistsError(
                f"run name {parsed} is frozen: it already exists under {self.storage.url(RUNS_PREFIX)}; "
                "names are never reused or overwritten (open it to resume, or allocate a new one)"
            )
        return run

    def open(self, name: str | RunName) -> Run:
        """An existing run (to resume it or add to its record)."""
        parsed = RunName.parse(str(name))
        key = f"{RUNS_PREFIX}/{parsed}/metrics.json"
        if not self.storage.exists(key):
            raise FileNotFoundError(f"no run {parsed} under {self.storage.url(RUNS_PREFIX)}")
        return Run(self.storage, parsed, self.storage.read_json(key))
