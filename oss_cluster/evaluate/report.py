"""Evaluation results as text tables, flat metric keys and per-frame CSV."""

from __future__ import annotations

import csv
import io

from .scoring import BUCKET_LABELS, FRAME_GAUGES, MOTION_BUCKETS


def methods_of(result: dict) -> list[str]:
    return [name for name, value in result.items() if isinstance(value, dict) and "psnr_rgb" in value]


def _number(value, spec: str, width: int) -> str:
    return f"{value:{width}{spec}}" if isinstance(value, (int, float)) and value is not None else f"{'n/a':>{width}s}"


def _gauge_table(result: dict, phase: str | None) -> list[str]:
    lines = [f"{'method':10s} {'PSNR RGB':>9s} {'PSNR Y':>8s} {'SSIM Y':>7s} {'FLIP':>7s} {'LPIPS':>7s} "
             f"{'warp err':>8s} {'flicker':>8s}"]
    for method in methods_of(result):
        r = result[method] if phase is None else result[method][phase]
        lines.append(f"{method:10s} {r['psnr_rgb']:9.3f} {r['psnr_y']:8.3f} {r['ssim_y']:7.4f} {r['flip']:7.4f} "
                     f"{_number(r['lpips'], '.4f', 7)} {_number(r.get('warp_error'), '.5f', 8)} "
                     f"{_number(r.get('flicker'), '.5f', 8)}")
    return lines


def bucket_table(result: dict, phase: str | None = None) -> list[str]:
    """PSNR RGB / FLIP per motion bucket, each column headed with its share of the pixels."""
    methods = methods_of(result)
    if not methods:
        return []
    first = result[methods[0]] if phase is None else result[methods[0]][phase]
    heads = [f"{BUCKET_LABELS[b]} ({first['buckets'][b]['share']:.0%})" for b in MOTION_BUCKETS]
    lines = [f"{'method':10s} " + " ".join(f"{head:>16s}" for head in heads)]
    for method in methods:
        buckets = (result[method] if phase is None else result[method][phase])["buckets"]
        cells = []
        for name in MOTION_BUCKETS:
            cell = buckets[name]
            cells.append(f"{cell['psnr_rgb']:7.2f} / {cell['flip']:6.4f}" if cell["psnr_rgb"] is not None else f"{'n/a':>16s}")
        lines.append(f"{method:10s} " + " ".join(f"{cell:>16s}" for cell in cells))
    return lines


def format_eval(result: dict) -> str:
    """The headline (steady-state) table, the all-frames table and the motion buckets."""
    steady = result.get("headline") == "steady"
    lines = [f"{'steady state (frames >= ' + str(result['steady_from']) + ')' if steady else 'all frames (no sequence reaches the steady state)'}: "
             f"{result['sequences']} sequences, {result['steady_frames'] if steady else result['frames']} frames"]
    lines += _gauge_table(result, None)
    lines.append(f"ground truth warp error {result['ground_truth']['warp_error']:.5f}")
    lines.append(f"per motion bucket (render px/frame, share of pixels): PSNR RGB / FLIP")
    lines += bucket_table(result)
    if steady:
        lines.append(f"all frames ({result['frames']}):")
        lines += _gauge_table(result, "all")
    lines.append(f"({result['psnr_spaces']}; border crop {result['border_crop']} px; FLIP, warp error and flicker "
                 "lower is better)")
    methods = methods_of(result)
    missing = next((result[m]["lpips"] for m in methods if not isinstance(result[m]["lpips"], float)), "")
    if missing:
        lines.append(f"LPIPS {missing}")
    if result.get("video_metric"):
        videos = [f"{m} {result[m]['video']:.3f}" for m in methods if isinstance(result[m].get("video"), float)]
        reason = next((result[m]["video"] for m in methods if isinstance(result[m].get("video"), str)), "")
        lines.append(f"{result['video_metric']}: " + (", ".join(videos) if videos else reason))
    if "disocclusion" in result:
        d = result["disocclusion"]
        lines.append(f"derived disocclusion vs the dataset's mask: IoU {d['iou']:.3f}, precision {d['precision']:.3f}, "
                     f"recall {d['recall']:.3f}")
    for method in methods:
        if "canvas_contribution" in result[method]:
            lines.append(f"canvas contribution ({method}: mean |output - output with canvas zeroed|): "
                         f"{result[method]['canvas_contribution']:.5f}")
    return "\n".join(lines)


def flatten_eval(result: dict, prefix: str = "") -> dict:
    """{"model": {"psnr_rgb": x, "buckets": {"gt4": {...}}}} -> {"model/psnr_rgb": x, "model/buckets/gt4/...": ...}."""
    flat = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_eval(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


CSV_COLUMNS = ("sequence", "frame", "method", "steady", *FRAME_GAUGES, "lpips", "warp_error", "flicker", "motion_px")


def frames_csv(rows: list[dict]) -> bytes:
    """Per-frame rows as CSV (one row per sequence, frame and method)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: ("" if row.get(key) is None else row.get(key)) for key in CSV_COLUMNS})
    return buffer.getvalue().encode()
