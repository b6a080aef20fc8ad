"""OSS-FX (frame extrapolation from the persistent canvas) against the true intermediate frames.

Every canvas evaluation streams the model through whole held-out sequences and, at each steady-state
frame t (t >= STEADY_FROM), extrapolates to t + alpha for every alpha in FX_ALPHAS, beside:

- repeat_last: the SR output at t, shown again;
- depth_warp: the SR output forward-warped by alpha x motion, nearest surface winning, holes filled
  from the background (`baselines.forward_warp` with depth: the fair baseline);
- naive_warp: the same warp without the depth test or hole filling.

Each is scored against the renderer's ground truth at t + alpha (PSNR RGB, FLIP) over the whole
frame and over the pixels disoccluded between t and t + alpha only (the renderer's exact mask, used
for scoring, never as an input). PSNR on disoccluded pixels pools the squared error of all of them.
`fx_vs_sr_over_motion` is mean |fx - SR_t| / mean |SR_t - SR_{t-1}|: near 0 when the extrapolated
frame is just the SR frame (the seed's H009 failure), near alpha when it moves like the scene.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..baselines import forward_warp
from ..data.schema import Window
from ..metrics import _crop, flip_map
from ..models.temporal import FRAME_KEYS
from .scoring import EVAL_BORDER, STEADY_FROM, uint8_image, window_tensors

FX_ALPHAS = (0.25, 0.5, 0.75)
FX_METHODS = ("oss_fx", "repeat_last", "depth_warp", "naive_warp")
HEADLINE_ALPHA = 0.5


def alpha_key(alpha: float) -> str:
    return f"a{alpha:g}"


class _Pooled:
    """Squared error and FLIP summed over the frame and over its disoccluded pixels."""

    def __init__(self):
        self.psnr, self.flip, self.sq_dis, self.flip_dis, self.n_dis = [], [], 0.0, 0.0, 0

    def add(self, image: torch.Tensor, truth: torch.Tensor, disoccluded: torch.Tensor, border: int) -> None:
        image, truth = _crop(image.clamp(0, 1), border), _crop(truth, border)
        mask = _crop(disoccluded, border)[:, 0]
        squared = ((image - truth) ** 2).mean(dim=1)  # [B, H, W]
        self.psnr.append(float(10 * torch.log10(1.0 / squared.mean().clamp(min=1e-12))))
        flip = torch.from_numpy(flip_map(image, truth))
        self.flip.append(float(flip.mean()))
        self.sq_dis += float(squared[mask].sum())
        self.flip_dis += float(flip[mask].sum())
        self.n_dis += int(mask.sum())

    def summary(self) -> dict:
        result = {"psnr_rgb": float(np.mean(self.psnr)), "flip": float(np.mean(self.flip))}
        if self.n_dis:
            result["disoccluded_psnr_rgb"] = float(10 * np.log10(1.0 / max(self.sq_dis / self.n_dis, 1e-12)))
            result["disoccluded_flip"] = self.flip_dis / self.n_dis
        return result


@torch.no_grad()
def evaluate_extrapolation(model, sequences: Sequence[Window], futures: Sequence[dict], border: int = EVAL_BORDER,
                           stream_sequences: int = 0) -> dict:
    """OSS-FX and the baselines at every alpha of `futures` (per sequence {alpha: (gt [K, 3, H, W],
    disoccluded [K, 1, H, W] bool)}, from `heldout.heldout_futures`), steady-state frames only.

    Returns {alpha_key: {method: {psnr_rgb, flip, disoccluded_psnr_rgb, disoccluded_flip},
    "fx_vs_sr_over_motion": float, "disoccluded_share": float}, "alphas": [...], "frames": int}, and
    with `stream_sequences` N also "streams": the first N sequences as uint8 [H, W, 3] frames at
    t, t + 0.5, t + 1, ... (SR output, OSS-FX at 0.5, ...), for the SR + FX clip.
    """
    alphas = sorted(futures[0]) if futures else list(FX_ALPHAS)
    pooled = {alpha: {name: _Pooled() for name in FX_METHODS} for alpha in alphas}
    moved = {alpha: [] for alpha in alphas}
    changed, shares, frames, streams = [], {alpha: [] for alpha in alphas}, 0, []
    was_training = model.training
    model.eval()
    for index, (window, future) in enumerate(zip(sequences, futures)):
        batch = {k: v[None] for k, v in window_tensors(window).items()}
        out_size, state, previous = tuple(batch["gt"].shape[-2:]), None, None
        model.last_window = []
        stream = [] if index < stream_sequences else None
        for k in range(window.length):
            frame = {key: batch[key][:, k] for key in FRAME_KEYS}
            output, state = model.step(frame, state, out_size)
            del model.last_window[:-1]  # per-frame renders are not needed here
            if stream is not None:
                stream.append(uint8_image(output))
                if k > 0:
                    stream.append(uint8_image(model.extrapolate(state, HEADLINE_ALPHA)))
            if k >= max(STEADY_FROM, 1) and all(k < len(future[alpha][0]) for alpha in alphas):
                frames += 1
                changed.append(float((output - previous).abs().mean()))
                for alpha in alphas:
                    truth, disoccluded = future[alpha]
                    truth, disoccluded = truth[k][None], disoccluded[k][None]
                    candidates = {"oss_fx": model.extrapolate(state, alpha), "repeat_last": output,
                                  "depth_warp": forward_warp(output, frame["motion"], alpha, frame["depth"]),
                                  "naive_warp": forward_warp(output, frame["motion"], alpha)}
                    for name, image in candidates.items():
                        pooled[alpha][name].add(image, truth, disoccluded, border)
                    moved[alpha].append(float((candidates["oss_fx"] - output).abs().mean()))
                    shares[alpha].append(float(disoccluded.float().mean()))
            previous = output
        if stream is not None:
            streams.append(stream)
    model.train(was_training)
    result: dict = {"alphas": alphas, "frames": frames}
    for alpha in alphas:
        entry = {name: pooled[alpha][name].summary() for name in FX_METHODS}
        entry["fx_vs_sr_over_motion"] = float(np.mean(moved[alpha]) / max(np.mean(changed), 1e-12))
        entry["disoccluded_share"] = float(np.mean(shares[alpha]))
        result[alpha_key(alpha)] = entry
    if stream_sequences:
        result["streams"] = streams
    return result


def next_frame_futures(sequences: Sequence[Window]) -> list[dict]:
    """Futures of a built dataset (any source): alpha 1 against the next frame's ground truth, with the
    next frame's disocclusion mask (render resolution, repeated to output pixels) for the uncovered
    pixels; a sequence's last frame has no future."""
    futures = []
    for window in sequences:
        tensors = window_tensors(window)
        gt, mask = tensors["gt"][1:], tensors["disocclusion"][1:] > 0.5
        mask = torch.nn.functional.interpolate(mask.float(), size=tuple(gt.shape[-2:]), mode="nearest") > 0.5
        futures.append({1.0: (gt, mask)})
    return futures


def headline(fx: dict) -> dict:
    """The alpha = 0.5 entry (or the middle alpha evaluated)."""
    alphas = fx["alphas"]
    return fx[alpha_key(HEADLINE_ALPHA if HEADLINE_ALPHA in alphas else alphas[len(alphas) // 2])]


def format_extrapolation(fx: dict) -> str:
    """A table per alpha: PSNR / FLIP overall and on disoccluded pixels, per method."""
    lines = [f"OSS-FX, steady-state frames ({fx['frames']}): PSNR RGB / FLIP at t + alpha, all pixels | disoccluded pixels"]
    for alpha in fx["alphas"]:
        entry = fx[alpha_key(alpha)]
        lines.append(f"alpha {alpha:g} (disoccluded {100 * entry['disoccluded_share']:.1f}% of pixels), "
                     f"fx-vs-SR / motion {entry['fx_vs_sr_over_motion']:.4f}")
        for name in FX_METHODS:
            s = entry[name]
            dis = (f"{s['disoccluded_psnr_rgb']:7.3f} / {s['disoccluded_flip']:.4f}" if "disoccluded_psnr_rgb" in s
                   else "    n/a (nothing disoccluded)")
            lines.append(f"  {name:<12} {s['psnr_rgb']:7.3f} / {s['flip']:.4f} | {dis}")
    return "\n".join(lines)
