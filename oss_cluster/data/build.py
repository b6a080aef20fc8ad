"""Build a shard dataset from a frame source (synthetic renderer or TartanAir) into any Storage."""

from __future__ import annotations

import math
from datetime import datetime

from tqdm import tqdm

from ..config import DataConfig
from ..storage import Storage
from .schema import DataError, input_size_for
from .shards import ShardWriter
from .synth import synth_windows
from .tartanair import TARTANAIR, find_trajectories, flow_check, open_trajectory, tartanair_windows


def default_output(source: str) -> str:
    return f"./oss-runs/datasets/{source}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def build_dataset(cfg: DataConfig, out: Storage, progress: bool = True) -> dict:
    """Render or load frames as `cfg` says, write shards and a manifest to `out`; returns the manifest."""
    if cfg.source == "synth":
        out_size = tuple(cfg.out_size)
        per_sequence = (cfg.frames_per_sequence // cfg.window) * cfg.window
        sequences = math.ceil(cfg.frames / cfg.frames_per_sequence)
        total = sum(
            (min(cfg.frames_per_sequence, cfg.frames - s * cfg.frames_per_sequence) // cfg.window) * cfg.window
            for s in range(sequences)
        )
        windows = synth_windows(
            cfg.frames, cfg.ratio, out_size, cfg.window, cfg.frames_per_sequence, cfg.seed, cfg.objects, cfg.gt_samples,
            motion_scale=cfg.motion_scale, motion=cfg.motion,
        )
        extra = {"sequences": sequences, "frames_per_sequence": per_sequence, "gt_samples": cfg.gt_samples}
    elif cfg.source == "tartanair":
        out_size = (TARTANAIR.height, TARTANAIR.width)
        trajectories = [open_trajectory(folder, cfg.root) for folder in find_trajectories(cfg.root)]
        total = sum((len(t) // cfg.window) * cfg.window for t in trajectories)
        checks = {t.name: flow_check(t).as_dict() for t in trajectories}
        windows = tartanair_windows(cfg.root, cfg.ratio, cfg.window)
        extra = {"sequences": len(trajectories), "flow_check": checks}
    else:
        raise DataError(f"cannot build a dataset from source {cfg.source!r} (use synth or tartanair)")

    writer = ShardWriter(
        out, window=cfg.window, in_size=input_size_for(out_size, cfg.ratio), out_size=out_size, ratio=cfg.ratio,
        source=cfg.source, windows_per_shard=cfg.windows_per_shard, config=cfg.model_dump(mode="json"),
    )
    with tqdm(total=total, unit="frame", desc=f"build {cfg.source}", disable=not progress) as bar:
        for window in windows:
            writer.add(window)
            bar.update(window.length)
    return writer.close(extra)


def format_summary(manifest: dict, uri: str) -> str:
    h, w = manifest["in_size"]
    H, W = manifest["out_size"]
    lines = [
        f"dataset      {uri}",
        f"source       {manifest['source']} ({manifest['sequences']} sequences)",
        f"frames       {manifest['frames']} in {manifest['windows']} windows of {manifest['window']}",
        f"resolution   {w}x{h} -> {W}x{H} (ratio {manifest['ratio']:g})",
        f"shards       {len(manifest['shards'])}",
        f"bytes        {manifest['bytes']:,} ({manifest['bytes'] / 2**20:.1f} MiB)",
        f"mean motion  {manifest['mean_motion_px']:.3f} render px/frame",
    ]
    percentiles = manifest.get("motion_percentiles_px") or {}
    if percentiles:
        ratio = manifest["ratio"]
        cells = [(key, value) for key, value in percentiles.items() if key.startswith("p")]
        lines.append("motion       render px/frame " + ", ".join(f"{key} {value:.2f}" for key, value in cells)
                     + f"; still {percentiles['still_fraction']:.1%} of pixels")
        lines.append("             output px/frame " + ", ".join(f"{key} {value * ratio:.2f}" for key, value in cells))
    for name, check in manifest.get("flow_check", {}).items():
        if check["pixels"]:
            lines.append(
                f"flow check   {name}: depth+pose vs dataset flow over {check['pixels']:,} valid px in "
                f"{check['pairs']} pairs: mean EPE {check['mean_epe_px']:.4f} px, median {check['median_epe_px']:.4f} px, "
                f"{check['fraction_over_1px']:.2%} over 1 px"
            )
        else:
            lines.append(f"flow check   {name}: no flow files with valid pixels to compare against")
    return "\n".join(lines)
