"""Temporal accumulation after FSR 2: the analytic core of the TAAU anchor and of every temporal model.

From what a game gives (colour, depth, motion vectors, jitter) and the stream's own history buffer
([B, 4, H, W]: the last output and its accumulated sample weight, the "count"):

1. spatial estimate: jitter-aware bicubic of the current frame, so that with no usable history the
   output is at least as good as the plain upscale (FSR 2 sizes its kernel for the same reason);
2. sample estimate: the current frame's jittered samples around each output pixel, Gaussian-weighted
   by their true distance, with a confidence from the nearest one (what accumulation gathers);
3. reprojection: the history is warped by the motion vectors (the shared `warp_previous`; bicubic
   resampling: bilinear blurs a moving history a little more every frame);
4. disocclusion from depth and motion (the shared `derive_disocclusion`) drops the history there;
5. rectification: the history is clipped to the current 3x3 neighbourhood's colour distribution in
   YCoCg (mean +- gamma standard deviations), gamma wider where the pixel stands still;
6. history weight: the warped count, lowered where the clip had to move the history (luminance
   instability: something changed) and capped under motion below one frame's worth (a moving
   history is resampled every frame and loses detail: measured, a longer moving history scored lower
   in every motion bucket); then
       output = (count x history + prior x spatial + confidence x sample) / (count + prior + confidence)
   with prior = `prior` x (1 - count), the spatial estimate fading out as the count reaches one frame.

`Accumulator.blend` takes optional per-pixel gains on the count and the confidence and a colour
residual: with none it is TAAU; the models' reconstruction heads predict them (so every temporal
model starts as TAAU and learns where to trust history and samples more or less).
Speeds are in output pixels per frame, kernel widths in output pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .temporal import (derive_disocclusion, jitter_resample, nearest_taps, subpixel_axes, upsample_motion,
                       warp_previous)

HISTORY_CHANNELS = 4  # the history buffer: RGB of the last output + its accumulated sample weight


def ycocg(rgb: torch.Tensor) -> torch.Tensor:
    r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    return torch.cat([0.25 * r + 0.5 * g + 0.25 * b, 0.5 * r - 0.5 * b, -0.25 * r + 0.5 * g - 0.25 * b], dim=1)


def rgb_from_ycocg(ycc: torch.Tensor) -> torch.Tensor:
    y, co, cg = ycc[:, 0:1], ycc[:, 1:2], ycc[:, 2:3]
    return torch.cat([y + co - cg, y + cg, y - co - cg], dim=1)


def lerp_by_speed(still: float, moving: float, speed: torch.Tensor, full_speed: float) -> torch.Tensor:
    """`still` at speed 0, `moving` from `full_speed` output pixels per frame on, linear between."""
    return still + (moving - still) * (speed / full_speed).clamp(0, 1)


def neighbourhood(lr: torch.Tensor, jitter: torch.Tensor, out_size: tuple[int, int]):
    """The 3x3 jittered samples around every output pixel and their squared distances to its centre.

    lr [B, C, h, w], jitter [B, 2] -> (samples [B, C, 3, 3, H, W], distance^2 [B, 3, 3, H, W] in render
    pixels^2), the 3s being the column (dx) and row (dy) offsets -1, 0, 1: gathered by column and row
    (`nearest_taps`), the distances from the per-column and per-row offsets, which are separable.
    """
    h, w = lr.shape[-2:]
    taps = torch.arange(-1, 2, device=lr.device, dtype=torch.float32)
    dx, dy = subpixel_axes(jitter, (h, w), out_size)  # output centre minus nearest sample, render px
    dist2 = (dx[:, None, None, None, :] - taps.view(1, 3, 1, 1, 1)) ** 2 + \
        (dy[:, None, None, :, None] - taps.view(1, 1, 3, 1, 1)) ** 2
    return nearest_taps(lr, jitter, out_size), dist2


def colour_box(lr: torch.Tensor, jitter: torch.Tensor, out_size: tuple[int, int]):
    """Mean and standard deviation (YCoCg) of the 3x3 render pixels around each output pixel's nearest
    sample: computed at render resolution, picked per output pixel. -> ([B, 3, H, W], [B, 3, H, W])."""
    colour = ycocg(lr)
    padded = F.pad(colour, (1, 1, 1, 1), mode="replicate")
    mean = F.avg_pool2d(padded, 3, stride=1)
    spread = ((F.avg_pool2d(padded * padded, 3, stride=1) - mean * mean).clamp(min=0) + 1e-12).sqrt()
    stats = jitter_resample(torch.cat([mean, spread], dim=1), jitter, out_size, mode="nearest")
    return stats[:, :3], stats[:, 3:]


@dataclass
class Reprojected:
    """Everything the blend needs for one frame ([B, C, H, W] at the output resolution)."""

    spatial: torch.Tensor  # jitter-aware bicubic of the current frame
    sample: torch.Tensor  # Gaussian-weighted nearest samples
    confidence: torch.Tensor  # weight of the nearest sample, in (0, 1]
    history: torch.Tensor  # warped, rectified history (the spatial estimate where there is none)
    count: torch.Tensor  # accumulated sample weight behind `history`, after instability and motion caps
    valid: torch.Tensor  # 1 where the history could be reprojected (in frame, not disoccluded)
    speed: torch.Tensor  # output pixels per frame


class Accumulator:
    """FSR 2-style accumulation without learned parts. Defaults were chosen on held-out synthetic
    sequences with game-like motion (steady-state PSNR and FLIP per motion bucket, at 1.5x and 2x)."""

    def __init__(self, max_history: float = 16.0, motion_history: float = 0.75, full_speed: float = 0.1,
                 sigma: float = 0.6, sigma_still: float = 0.4, gamma: float = 1.0, gamma_still: float = 1.5,
                 instability: float = 8.0, prior: float = 4.0, history_resample: str = "bicubic"):
        self.max_history, self.motion_history, self.full_speed = max_history, motion_history, full_speed
        self.sigma, self.sigma_still, self.gamma, self.gamma_still = sigma, sigma_still, gamma, gamma_still
        self.instability, self.prior, self.history_resample = instability, prior, history_resample

    def reproject(self, lr, depth, jitter, motion, previous_depth, previous) -> Reprojected:
        """lr [B,3,h,w], depth [B,1,h,w], jitter [B,2], motion [B,2,h,w] (render px, current -> previous),
        previous_depth [B,1,h,w] (<= 0: no history), previous [B,4,H,W] history buffer."""
        h = lr.shape[-2]
        out_size = tuple(previous.shape[-2:])
        spatial = jitter_resample(lr, jitter, out_size, mode="bicubic")
        flow = upsample_motion(motion, out_size)
        speed = torch.sqrt(flow[:, :1] ** 2 + flow[:, 1:] ** 2)
        samples, dist2 = neighbourhood(lr, jitter, out_size)
        sigma = lerp_by_speed(self.sigma_still, self.sigma, speed, self.full_speed) * h / out_size[0]  # render px
        weights = torch.exp(-dist2 / (2 * sigma[:, :, None] ** 2))  # [B, 3, 3, H, W]
        sample = (samples * weights[:, None]).sum((2, 3)) / weights.sum((1, 2))[:, None]
        confidence = weights.amax((1, 2))[:, None]
        mean, spread = colour_box(lr, jitter, out_size)
        gamma = lerp_by_speed(self.gamma_still, self.gamma, speed, self.full_speed)
        low, high = mean - gamma * spread, mean + gamma * spread

        disoccluded = derive_disocclusion(depth, motion, previous_depth)
        warped, valid = warp_previous(previous[:, :3], motion, disoccluded, mode=self.history_resample)
        count, _ = warp_previous(previous[:, 3:4], motion, disoccluded)
        count = count.clamp(min=0) * valid
        colour = ycocg(warped)
        clipped = torch.maximum(torch.minimum(colour, high), low)
        # Luminance instability: how far the clip moved the history, relative to the box size.
        moved = (clipped - colour)[:, :1].abs() / (high - low)[:, :1].clamp(min=1e-3)
        count = count * torch.exp(-self.instability * moved)
        count = torch.minimum(count, lerp_by_speed(self.max_history, self.motion_history, speed, self.full_speed))
        history = torch.where(valid > 0, rgb_from_ycocg(clipped), spatial)
        return Reprojected(spatial, sample, confidence, history, count, valid, speed)

    def blend(self, r: Reprojected, count_gain=None, sample_gain=None, residual=None):
        """-> (output [B,3,H,W], the next history buffer [B,4,H,W]). Gains scale the count and the
        sample confidence per pixel (None: 1); the residual is added to the output only. The buffer keeps
        the accumulated colour without it (as FSR 2 keeps its history unsharpened): a residual carried
        into a history of weight n would come back n times over in a still image."""
        count = r.count if count_gain is None else r.count * count_gain
        confidence = r.confidence if sample_gain is None else r.confidence * sample_gain
        prior = self.prior * (1 - count).clamp(min=0)
        accumulated = (count * r.history + prior * r.spatial + confidence * r.sample) / (count + prior + confidence)
        output = accumulated if residual is None else accumulated + residual
        buffer = torch.cat([accumulated, (count + confidence).clamp(max=self.max_history)], dim=1)
        return output, buffer


def empty_history(lr: torch.Tensor, out_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(history buffer, previous depth) of a stream's first frame: zeros (a previous depth of 0 marks no history)."""
    b, _, h, w = lr.shape
    return lr.new_zeros(b, HISTORY_CHANNELS, *out_size), lr.new_zeros(b, 1, h, w)
