"""Score methods over whole sequences: per frame, in the steady state, per motion bucket, and over time.

    summary, rows = score({"bicubic": Bicubic(), "taau": TAAUMethod(), "model": ModelMethod(m)}, sequences)

Every method runs recurrently from the first frame of each sequence with no history, as a game would
stream it. Figures are given twice: over every frame ("all") and in the steady state (frames >=
STEADY_FROM, once history has accumulated); the headline figures of each method are the steady-state
ones. Alongside the per-frame gauges (PSNR RGB and Y, SSIM, FLIP, LPIPS where its weights exist):

- motion buckets: output pixels grouped by the length of their motion vector in render pixels per
  frame (static < 0.01, < 1, 1-4, > 4); PSNR from the pooled squared error and mean FLIP of each
  bucket, so a loss under motion cannot hide in an average;
- warp error: mean |out_t - warp(out_{t-1})| over pixels visible in both frames (the dataset's motion
  vectors, derived disocclusion), beside the ground truth's own (`ground_truth/warp_error`);
- flicker: mean |(out_t - warp(out_{t-1})) - (gt_t - warp(gt_{t-1}))| over the same pixels: temporal
  change the ground truth does not have (flicker, ghosting trails), 0 for a perfect method;
- a perceptual video metric (ColorVideoVDP, JOD, higher is better; each sequence's first VIDEO_FRAMES
  frames) where asked for and installed.

Images are [B, 3, H, W] sRGB-encoded in [0, 1]; `border` pixels are cropped from every gauge.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.schema import Window
from ..metrics import PSNR_SPACES, LPIPSGauge, _crop, flip_map, psnr, ssim
from ..models.temporal import FRAME_KEYS, derive_disocclusion, warp_previous

EVAL_BORDER = 4
STEADY_FROM = 8  # frames before this index are the warm-up of every sequence
# name -> (low, high) motion-vector length in render pixels per frame
MOTION_BUCKETS = {"static": (0.0, 0.01), "lt1": (0.01, 1.0), "1to4": (1.0, 4.0), "gt4": (4.0, math.inf)}
BUCKET_LABELS = {"static": "static", "lt1": "<1", "1to4": "1-4", "gt4": ">4"}
FRAME_GAUGES = ("psnr_rgb", "psnr_y", "ssim_y", "flip")
VIDEO_FRAMES = 120  # the video metric judges at most this many frames of each sequence (held in memory)
PHASES = ("all", "steady")


def window_tensors(window: Window) -> dict:
    """A Window's arrays as float32 tensors ({name: [K, ...]})."""
    return {name: torch.from_numpy(value.astype(np.float32)) for name, value in window.arrays().items()}


def motion_buckets(motion: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """Bucket index (order of MOTION_BUCKETS) of every output pixel: [B, H, W] from motion [B, 2, h, w]."""
    length = torch.sqrt(motion[:, :1] ** 2 + motion[:, 1:] ** 2)
    length = F.interpolate(length, size=out_size, mode="nearest")[:, 0]
    edges = torch.tensor([low for low, _ in MOTION_BUCKETS.values()][1:], dtype=length.dtype)
    return torch.bucketize(length, edges, right=True)


class _Tally:
    """Running sums for one method over one phase (all frames or the steady state)."""

    def __init__(self):
        self.frames: dict[str, list] = {name: [] for name in (*FRAME_GAUGES, "lpips")}
        n = len(MOTION_BUCKETS)
        self.squared_error, self.flip_sum, self.pixels = np.zeros(n), np.zeros(n), np.zeros(n)
        self.temporal: dict[str, list[float]] = {"warp_error": [], "flicker": []}

    def add_frame(self, gauges: dict, squared_error: torch.Tensor, flip: np.ndarray, buckets: torch.Tensor) -> None:
        for name in self.frames:
            self.frames[name].append(gauges[name])
        index = buckets.numpy().ravel()
        self.squared_error += np.bincount(index, squared_error.numpy().ravel(), len(MOTION_BUCKETS))
        self.flip_sum += np.bincount(index, flip.ravel(), len(MOTION_BUCKETS))
        self.pixels += np.bincount(index, minlength=len(MOTION_BUCKETS))

    def summary(self) -> dict | None:
        if not self.frames["psnr_rgb"]:
            return None
        result = {name: float(np.mean(self.frames[name])) for name in FRAME_GAUGES}
        lpips = self.frames["lpips"]
        result["lpips"] = float(np.mean(lpips)) if all(isinstance(v, float) for v in lpips) else lpips[0]
        for name, values in self.temporal.items():
            result[name] = float(np.mean(values)) if values else None
        total = self.pixels.sum()
        result["buckets"] = {
            name: {"psnr_rgb": 10 * math.log10(self.pixels[i] / max(self.squared_error[i], 1e-12)) if self.pixels[i] else None,
                   "flip": self.flip_sum[i] / self.pixels[i] if self.pixels[i] else None,
                   "share": self.pixels[i] / total if total else 0.0}
            for i, name in enumerate(MOTION_BUCKETS)
        }
        return result


def _masked_mean(values: torch.Tensor, valid: torch.Tensor, border: int) -> float:
    values, valid = _crop(values, border), _crop(valid, border)
    return float((values * valid).sum() / (valid.sum() * values.shape[1]).clamp(min=1))


def _frame_gauges(output: torch.Tensor, gt: torch.Tensor, border: int, gauge: LPIPSGauge):
    """(the per-frame gauges, squared error [B, H', W'] and FLIP map [B, H', W'] after the border crop)."""
    flips = flip_map(output, gt, border)
    gauges = {"psnr_rgb": psnr(output, gt, border, "rgb"), "psnr_y": psnr(output, gt, border, "y"),
              "ssim_y": ssim(output, gt, border), "flip": float(flips.mean()), "lpips": gauge(output, gt, border)}
    return gauges, _crop(((output - gt) ** 2).mean(dim=1), border), flips


def _temporal(output, warped, gt, warped_gt, valid, border: int) -> dict:
    """Warp error and flicker of one frame (see the module docstring); `valid` marks pixels seen in both frames."""
    change, truth_change = (output - warped) * valid, (gt - warped_gt) * valid
    return {"warp_error": _masked_mean(change.abs(), valid, border),
            "flicker": _masked_mean((change - truth_change).abs(), valid, border)}


def score(methods: dict, sequences: Sequence[Window], border: int = EVAL_BORDER, lpips_gauge: LPIPSGauge | None = None,
          steady_from: int = STEADY_FROM, video_metric=None, on_frame: Callable | None = None,
          progress: bool = False) -> tuple[dict, list[dict]]:
    """Run every method over every sequence; returns (summary, per-frame rows).

    methods: {name: method with step(frame, state, out_size) and sequence_metrics()} (see methods.py);
    video_metric: a VideoMetric (video.py) or None; on_frame(sequence index, k, {name: output}, gt)
    is called after every frame (clips and strips collect frames through it).
    """
    gauge = lpips_gauge or LPIPSGauge()
    tallies = {name: {phase: _Tally() for phase in PHASES} for name in methods}
    truth = {phase: [] for phase in PHASES}  # the ground truth's own warp error
    extras: dict[str, dict[str, list[float]]] = {name: {} for name in methods}
    videos: dict[str, list[float]] = {name: [] for name in methods}
    agreement = np.zeros(3)  # derived-and-oracle, derived only, oracle only (render pixels)
    rows: list[dict] = []
    total = sum(w.length for w in sequences)
    bar = tqdm(total=total * len(methods), unit="frame", desc="evaluate", disable=not progress)
    for index, window in enumerate(sequences):
        batch = {key: value[None] for key, value in window_tensors(window).items()}
        out_size = tuple(batch["gt"].shape[-2:])
        states = {name: None for name in methods}
        previous: dict[str, torch.Tensor] = {}
        frames_for_video: dict[str, list[np.ndarray]] = {name: [] for name in ("gt", *methods)}
        for k in range(window.length):
            frame = {key: batch[key][:, k] for key in FRAME_KEYS}
            gt = batch["gt"][:, k]
            buckets = _crop(motion_buckets(frame["motion"], out_size), border)
            phases = ("all", "steady") if k >= steady_from else ("all",)
            valid = warped_gt = None
            if k >= 1:
                disoccluded = derive_disocclusion(frame["depth"], frame["motion"], batch["depth"][:, k - 1])
                warped_gt, valid = warp_previous(batch["gt"][:, k - 1], frame["motion"], disoccluded)
                for phase in phases:
                    truth[phase].append(_masked_mean((gt - warped_gt).abs(), valid, border))
                if "disocclusion" in batch:
                    derived, oracle = disoccluded > 0.5, batch["disocclusion"][:, k] > 0.5
                    agreement += [float((derived & oracle).sum()), float((derived & ~oracle).sum()),
                                  float((~derived & oracle).sum())]
            outputs = {}
            for name, method in methods.items():
                output, states[name] = method.step(frame, states[name], out_size)
                output = output.float().clamp(0, 1)
                outputs[name] = output
                gauges, squared, flips = _frame_gauges(output, gt, border, gauge)
                if not all(math.isfinite(gauges[g]) for g in FRAME_GAUGES):
                    raise ValueError(f"{name}: non-finite quality values on {window.sequence} frame {k}: {gauges}")
                temporal = {}
                if k >= 1:
                    temporal = _temporal(output, warp_previous(previous[name], frame["motion"])[0], gt, warped_gt,
                                         valid, border)
                for phase in phases:
                    tally = tallies[name][phase]
                    tally.add_frame(gauges, squared, flips, buckets)
                    for key, value in temporal.items():
                        tally.temporal[key].append(value)
                rows.append({"sequence": window.sequence, "frame": k, "method": name, "steady": k >= steady_from,
                             **{g: gauges[g] for g in (*FRAME_GAUGES, "lpips")},
                             "warp_error": temporal.get("warp_error"), "flicker": temporal.get("flicker"),
                             "motion_px": float(torch.sqrt((frame["motion"] ** 2).sum(1)).mean())})
                previous[name] = output
                if video_metric is not None and k < VIDEO_FRAMES:
                    frames_for_video[name].append(uint8_image(output))
                bar.update(1)
            if video_metric is not None and k < VIDEO_FRAMES:
                frames_for_video["gt"].append(uint8_image(gt))
            if on_frame is not None:
                on_frame(index, k, outputs, gt)
        for name, method in methods.items():
            for key, value in method.sequence_metrics().items():
                extras[name].setdefault(key, []).append(value)
            if video_metric is not None and video_metric.available:
                videos[name].append(video_metric(np.stack(frames_for_video[name]), np.stack(frames_for_video["gt"])))
    bar.close()

    summary: dict = {}
    steady_frames = sum(max(0, w.length - steady_from) for w in sequences)
    for name in methods:
        steady, everything = tallies[name]["steady"].summary(), tallies[name]["all"].summary()
        summary[name] = {**(steady or everything), "all": everything}
        summary[name].update({key: float(np.mean(values)) for key, values in extras[name].items()})
        if video_metric is not None:
            summary[name]["video"] = (float(np.mean(videos[name])) if videos[name]
                                      else f"unavailable: {video_metric.reason}")
    summary["ground_truth"] = {"warp_error": float(np.mean(truth["steady" if steady_frames else "all"] or [0.0])),
                               "all": {"warp_error": float(np.mean(truth["all"] or [0.0]))}}
    tp, derived_only, oracle_only = agreement
    if tp + derived_only + oracle_only > 0:
        summary["disocclusion"] = {"iou": tp / (tp + derived_only + oracle_only),
                                   "precision": tp / max(tp + derived_only, 1), "recall": tp / max(tp + oracle_only, 1)}
    summary.update(psnr_spaces=PSNR_SPACES, border_crop=border, steady_from=steady_from,
                   headline="steady" if steady_frames else "all", sequences=len(sequences), frames=total,
                   steady_frames=steady_frames, video_metric=video_metric.name if video_metric is not None else None)
    return summary, rows


def uint8_image(image: torch.Tensor) -> np.ndarray:
    """[1, 3, H, W] in [0, 1] -> [H, W, 3] uint8."""
    return (image[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
