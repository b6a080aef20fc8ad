"""Per-tier latency of the shipped students against the tier targets, in-process and over HTTP.

For each tier: frames at the tier's render resolution (times `scale`) are upscaled by its student,
(a) in-process through the same backend the Serve replicas use and (b) over HTTP through the Serve
endpoint, from a Ray task that asks for the tier's custom resource (`tier_<tier>`) when the cluster
has it, so it runs on that tier's target-hardware worker. Reported: p50/p95/p99 ms, pass/fail against
the tier's latency target, and the target's roofline: max(student FLOPs per frame / peak, the step's
compulsory bytes (inputs read, outputs written once) / memory bandwidth), both at the assumed efficiency,
beside the memory time of the graph as written (every operation's reads and writes), so a CPU measurement
and the target can be read side by side.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request

import numpy as np

from ..cluster import tier_gpus, tier_pinning
from ..tiers import TIERS, scaled_size


def student_costs_per_frame(model_name: str, size: tuple[int, int], ratio: float) -> dict[str, float]:
    """One recurrent step at render size (w, h): {"flops", "io_bytes", "graph_bytes"} (cost.flops.step_costs)."""
    from ..cost.flops import step_costs

    # Count at a small size and scale by pixels (every layer is per-pixel; counting at 4K is slow).
    w, h = 128, 72
    H, W = scaled_size(h, w, ratio)
    out_h, out_w = scaled_size(size[1], size[0], ratio)
    scale = out_w * out_h / (H * W)
    return {key: value * scale for key, value in step_costs(model_name, (h, w), (H, W)).items()}


def student_flops_per_frame(model_name: str, size: tuple[int, int], ratio: float) -> float:
    """FLOPs of one recurrent step at render size (w, h), every operation counted (cost.flops.OpCounter)."""
    return student_costs_per_frame(model_name, size, ratio)["flops"]


def roofline_ms(tier_name: str, flops: float, bytes_moved: float = 0.0) -> float:
    """The target's roofline for a step: max(FLOPs / peak, bytes / memory bandwidth), both at the tier's assumed
    efficiency (the convention of its FLOPs budget)."""
    tier = TIERS[tier_name]
    compute = flops / (tier.peak_tflops * 1e12 * tier.efficiency)
    memory = bytes_moved / (tier.memory_gbps * 1e9 * tier.efficiency) if tier.memory_gbps else 0.0
    return max(compute, memory) * 1e3


def percentiles(samples_ms: list[float]) -> dict:
    values = np.asarray(samples_ms)
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)),
            "p99": float(np.percentile(values, 99)), "n": int(values.size)}


def measure_tier(tier_name: str, manifest: dict, storage_cfg: dict | None, scale: float, frames: int, warmup: int,
                 url: str | None, threads: int) -> dict:
    """Runs on the tier's worker: in-process and HTTP latencies of `frames` frames after `warmup`."""
    import platform
    import socket

    from ..storage import storage_from_config
    from ..config import StorageConfig
    from ..models.accumulate import HISTORY_CHANNELS
    from .backends import load_backend
    from .codec import encode_png, to_uint8

    tier = TIERS[tier_name]
    storage = storage_from_config(StorageConfig.model_validate(storage_cfg)) if storage_cfg else None
    backend = load_backend(manifest, storage, threads=threads)
    ratio = float(manifest["ratio"])
    w, h = max(8, round(tier.input_size[0] * scale)), max(8, round(tier.input_size[1] * scale))
    H, W = scaled_size(h, w, ratio)
    rng = np.random.default_rng(0)
    lr = rng.random((1, 3, h, w), dtype=np.float32)
    inputs = {"lr": lr, "depth": np.ones((1, 1, h, w), np.float32), "jitter": np.zeros((1, 2), np.float32),
              "motion": np.zeros((1, 2, h, w), np.float32), "previous_depth": np.ones((1, 1, h, w), np.float32),
              "previous": np.zeros((1, HISTORY_CHANNELS, H, W), np.float32)}
    in_process = []
    for index in range(warmup + frames):
        started = time.perf_counter()
        _, inputs["previous"] = backend.run(inputs)
        if index >= warmup:
            in_process.append((time.perf_counter() - started) * 1e3)
    result = {"tier": tier_name, "backend": backend.name, "render_size": [w, h], "output_size": [W, H],
              "host": socket.gethostname(), "cpu": platform.processor() or platform.machine(),
              "in_process_ms": percentiles(in_process), "timing_includes": backend.timing_includes}
    if url:
        body = encode_png(to_uint8(lr[0]))
        http = []
        # An endpoint reached from another machine needs the API token (OSS_SERVE_TOKEN, as on the Serve nodes).
        token = os.environ.get("OSS_SERVE_TOKEN")
        for index in range(warmup + frames):
            request = urllib.request.Request(f"{url}/v1/upscale?tier={tier_name}", data=body, method="POST",
                                             headers={"Content-Type": "image/png", "X-Session-Id": "latency",
                                                      **({"Authorization": f"Bearer {token}"} if token else {})})
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=600) as response:
                response.read()
            if index >= warmup:
                http.append((time.perf_counter() - started) * 1e3)
        result["http_ms"] = percentiles(http)
    return result


def run_latency(tiers: list[str], manifests: dict[str, dict], storage_cfg: dict | None, scale: float = 1.0,
                frames: int = 20, warmup: int = 3, url: str | None = None, threads: int = 1) -> list[dict]:
    """Measure each tier on a Ray task pinned to its target-hardware worker (when the cluster has one)."""
    import ray

    rows = []
    for tier_name in tiers:
        # A small logical CPU share, so the task fits beside the tier's Serve replicas on a small
        # worker; it uses `threads` real threads either way.
        # A GPU where the tier's target nodes have one, so the timing is the TensorRT engine's there.
        options = {"num_cpus": 0.25, "num_gpus": tier_gpus(tier_name)}
        pinned = tier_pinning(tier_name, 0.01, "auto", f"latency test of {tier_name}")
        if pinned:
            options["resources"] = pinned
        task = ray.remote(measure_tier).options(**options)
        row = ray.get(task.remote(tier_name, manifests[tier_name], storage_cfg, scale, frames, warmup, url, threads))
        tier = TIERS[tier_name]
        ratio = float(manifests[tier_name]["ratio"])
        flops = student_flops_per_frame(manifests[tier_name]["model"], tuple(row["render_size"]), ratio)
        full = student_costs_per_frame(manifests[tier_name]["model"], tier.input_size, ratio)
        row.update(pinned=bool(pinned), target_ms=tier.latency_ms, hardware=tier.reference_gpu,
                   flops_per_frame=flops, roofline_target_ms=roofline_ms(tier_name, full["flops"], full["io_bytes"]),
                   roofline_target_compute_ms=roofline_ms(tier_name, full["flops"]),
                   roofline_target_memory_ms=roofline_ms(tier_name, 0.0, full["io_bytes"]),
                   graph_memory_target_ms=roofline_ms(tier_name, 0.0, full["graph_bytes"]),
                   scale=scale, source_run=manifests[tier_name].get("source_run"))
        measured = row["in_process_ms"]["p99"]
        row["pass"] = bool(scale == 1.0 and measured <= tier.latency_ms)
        row["verdict"] = ("PASS" if row["pass"] else "FAIL") if scale == 1.0 else "n/a (scaled)"
        rows.append(row)
    return rows


LATENCY_PREFIX = "latency"  # <storage>/latency/<UTC time>.json: every latency test, read by the dashboard's tiers page


def save_results(storage, rows: list[dict]) -> str:
    """Keep a latency test's rows in storage beside the runs; returns the key (never overwrites one)."""
    from datetime import datetime, timezone

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    key = f"{LATENCY_PREFIX}/{stamp}.json"
    payload = {"measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rows": rows}
    if not storage.create_exclusive(key, dumps(payload).encode()):
        raise FileExistsError(f"{storage.url(key)} exists")
    return key


def format_rows(rows: list[dict]) -> str:
    header = (f"{'tier':9s} {'backend':11s} {'render':>10s} {'in-proc p50/p95/p99 ms':>24s} {'HTTP p50/p95/p99 ms':>24s} "
              f"{'target':>7s} {'verdict':>12s} {'roofline on target (compute | memory; graph memory)':>52s}  worker")
    lines = [header]
    for row in rows:
        p = row["in_process_ms"]
        http = row.get("http_ms")
        http_text = f"{http['p50']:.1f}/{http['p95']:.1f}/{http['p99']:.1f}" if http else "-"
        lines.append(f"{row['tier']:9s} {row['backend']:11s} {row['render_size'][0]:>5d}x{row['render_size'][1]:<4d} "
                     f"{p['p50']:>10.1f}/{p['p95']:.1f}/{p['p99']:.1f} {http_text:>24s} {row['target_ms']:>5.1f}ms "
                     f"{row['verdict']:>12s} {row['roofline_target_ms']:>7.3f} ms ({row['roofline_target_compute_ms']:.3f} | "
                     f"{row['roofline_target_memory_ms']:.3f}; {row['graph_memory_target_ms']:.3f}) {row['hardware']}  "
                     f"{row['host']}{' [tier_' + row['tier'] + ']' if row['pinned'] else ''}")
    for backend, includes in sorted({(row["backend"], row.get("timing_includes")) for row in rows if row.get("timing_includes")}):
        lines.append(f"in-process time with {backend} covers {includes}")
    return "\n".join(lines)


def dumps(rows: list[dict]) -> str:
    return json.dumps(rows, indent=2)
