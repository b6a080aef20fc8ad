"""Comparison anchors over the same sample schema: bicubic and a temporal TAAU modelled on FSR 2.

TAAU is FSR 2's public algorithm without its sharpening pass, from what a game gives it (colour,
depth, motion vectors, jitter) and its own history: the analytic accumulation of
`models/accumulate.py` (spatial and sample estimates, bicubic reprojection, derived disocclusion,
YCoCg rectification, a history weight that falls with motion and instability) with nothing learned.
Every temporal model's head starts from the same accumulation and learns corrections on top.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .models.accumulate import Accumulator, empty_history, rgb_from_ycocg, ycocg
from .models.temporal import jitter_resample, upsample_motion

TAAU_KEYS = ("lr", "depth", "jitter", "motion")


def bicubic(lr: torch.Tensor, out_size: tuple[int, int], jitter: torch.Tensor | None = None) -> torch.Tensor:
    """Bicubic resize [B, C, h, w] -> [B, C, H, W]; antialiased when downscaling.

    With `jitter` ([B, 2] render pixels) the jittered sample positions are honoured (what a game's
    plain upscaler would do with a jittered frame); without it, a plain image resize.
    """
    downscaling = out_size[0] < lr.shape[-2] or out_size[1] < lr.shape[-1]
    if jitter is None or downscaling:
        return F.interpolate(lr, size=out_size, mode="bicubic", align_corners=False, antialias=downscaling).clamp(0, 1)
    return jitter_resample(lr, jitter, out_size, mode="bicubic").clamp(0, 1)


# Kept for callers of the YCoCg helpers here.
_ycocg, _rgb = ycocg, rgb_from_ycocg


class TAAU:
    """FSR 2-style temporal upscaler (no learning). `step` advances one frame; `state` is a dict with
    the history buffer ([B, 4, H, W]: colour and accumulated sample weight) and the frame's depth.
    Keyword arguments are the Accumulator's (its defaults were chosen on held-out game-motion sequences)."""

    def __init__(self, **accumulator_options):
        self.accumulator = Accumulator(**accumulator_options)

    def step(self, lr, depth, jitter, motion, state: dict | None, out_size: tuple[int, int]):
        """One frame: lr [B,3,h,w], depth [B,1,h,w], jitter [B,2], motion [B,2,h,w] -> (output [B,3,H,W], state)."""
        if state is None:
            history, previous_depth = empty_history(lr, out_size)
        else:
            history, previous_depth = state["history"], state["depth"]
        reprojected = self.accumulator.reproject(lr, depth, jitter, motion, previous_depth, history)
        output, history = self.accumulator.blend(reprojected)
        return output.clamp(0, 1), {"history": history, "depth": depth}

    def run(self, batch: dict, out_size: tuple[int, int], state: dict | None = None):
        """Over a window batch ({key: [B, K, ...]}): ([B, K, 3, H, W], final state)."""
        outputs = []
        for k in range(batch["lr"].shape[1]):
            frame = {key: batch[key][:, k] for key in TAAU_KEYS}
            output, state = self.step(frame["lr"], frame["depth"], frame["jitter"], frame["motion"], state, out_size)
            outputs.append(output)
        return torch.stack(outputs, dim=1), state


DEPTH_TOLERANCE = 0.02  # splats within 2 % of the nearest depth landing on a pixel blend; farther ones are hidden
BACKGROUND_TOLERANCE = 0.1  # hole filling copies only from neighbours within 10 % of the local background depth
FILL_ITERATIONS = 32  # hole filling grows the background inward by one pixel per iteration


def forward_warp(image: torch.Tensor, motion: torch.Tensor, alpha: float | torch.Tensor, depth: torch.Tensor | None = None,
                 fill_iterations: int = FILL_ITERATIONS) -> torch.Tensor:
    """Push every output pixel alpha of the way along its motion (constant velocity): the frame-extrapolation baseline.

    image [B, C, H, W]; motion [B, 2, h, w] render pixels, current -> previous, so a surface at x is
    expected at x - alpha * motion(x) at time t + alpha. Bilinear splatting.

    Without depth (the naive warp) everything that lands on a pixel blends, foreground and
    background alike, and pixels nothing lands on keep the unwarped image. With depth [B, 1, h, w]
    (as Mob-FGSR-style frame generation does): the nearest surface landing on a pixel wins (a
    z-buffer of the splats; those farther than the nearest by more than DEPTH_TOLERANCE are
    dropped), and holes, the background a moving foreground uncovers, are filled from the
    background: each hole pixel takes its farthest covered neighbour, growing inward one pixel per
    iteration (pixels still empty after `fill_iterations` keep the unwarped image).
    """
    b, c, height, width = image.shape
    flow = upsample_motion(motion, (height, width))
    ys, xs = torch.meshgrid(torch.arange(height, device=image.device, dtype=image.dtype),
                            torch.arange(width, device=image.device, dtype=image.dtype), indexing="ij")
    alpha = torch.as_tensor(alpha, dtype=image.dtype, device=image.device).reshape(-1, 1, 1)  # a float or [B]
    tx = xs - alpha * flow[:, 0]
    ty = ys - alpha * flow[:, 1]
    x0, y0 = torch.floor(tx), torch.floor(ty)
    taps = []
    for dx in (0, 1):
        for dy in (0, 1):
            cx, cy = x0 + dx, y0 + dy
            w = (1 - (tx - cx).abs()) * (1 - (ty - cy).abs())
            inside = (cx >= 0) & (cx < width) & (cy >= 0) & (cy < height) & (w > 0)
            index = (cy.clamp(0, height - 1) * width + cx.clamp(0, width - 1)).long().view(b, 1, -1)
            taps.append((index, (w * inside).view(b, 1, -1), inside.view(b, 1, -1)))
    source_depth = None
    if depth is not None:
        source_depth = F.interpolate(depth, size=(height, width), mode="nearest").view(b, 1, -1)
        nearest = source_depth.new_full((b, 1, height * width), float("inf"))
        for index, _, inside in taps:
            candidate = torch.where(inside, source_depth, torch.full_like(source_depth, float("inf")))
            nearest = nearest.scatter_reduce(2, index, candidate, reduce="amin")
    accumulated = image.new_zeros(b, c, height * width)
    weights = image.new_zeros(b, 1, height * width)
    landed_depth = image.new_zeros(b, 1, height * width)
    for index, w, _ in taps:
        if source_depth is not None:  # z-test against the nearest splat on the target pixel
            w = w * (source_depth <= nearest.gather(2, index) * (1 + DEPTH_TOLERANCE))
            landed_depth.scatter_add_(2, index, source_depth * w)
        accumulated.scatter_add_(2, index.expand(b, c, -1), image.view(b, c, -1) * w)
        weights.scatter_add_(2, index, w)
    covered = weights > 1e-3
    splatted = accumulated / weights.clamp(min=1e-3)
    if source_depth is None:
        return torch.where(covered, splatted, image.view(b, c, -1)).view(b, c, height, width)
    splatted = splatted.view(b, c, height, width)
    landed_depth = (landed_depth / weights.clamp(min=1e-3)).view(b, 1, height, width)
    covered = covered.view(b, 1, height, width)
    # The background around each hole: the farthest covered depth within reach of the filling.
    reach = 2 * fill_iterations + 1
    background = F.max_pool2d(torch.where(covered, landed_depth, torch.full_like(landed_depth, -float("inf"))),
                              reach, stride=1, padding=fill_iterations)
    for _ in range(fill_iterations):
        if bool(covered.all()):
            break
        splatted, landed_depth, covered = _fill_from_background(splatted, landed_depth, covered, background)
    return torch.where(covered, splatted, image)


def _fill_from_background(colour: torch.Tensor, depth: torch.Tensor, covered: torch.Tensor, background: torch.Tensor):
    """One step of hole filling: each uncovered pixel takes the colour and depth of its farthest
    covered 3x3 neighbour, among those at the depth of the local `background` [B, 1, H, W] (within
    BACKGROUND_TOLERANCE): the uncovered region is background, never the foreground that moved off it."""
    b, c, height, width = colour.shape
    far = torch.where(covered & (depth >= background * (1 - BACKGROUND_TOLERANCE)), depth,
                      torch.full_like(depth, -float("inf")))
    neighbours_depth = F.unfold(F.pad(far, (1, 1, 1, 1), value=-float("inf")), 3)  # [B, 9, H*W]
    # a background pixel must match the background of the hole it fills, not only its own
    neighbours_depth = torch.where(neighbours_depth >= background.view(b, 1, -1) * (1 - BACKGROUND_TOLERANCE),
                                   neighbours_depth, torch.full_like(neighbours_depth, -float("inf")))
    neighbours_colour = F.unfold(F.pad(colour, (1, 1, 1, 1)), 3).view(b, c, 9, -1)
    farthest = neighbours_depth.argmax(dim=1, keepdim=True)  # [B, 1, H*W]
    found = torch.isfinite(neighbours_depth.gather(1, farthest)).view(b, 1, height, width)
    fill_colour = neighbours_colour.gather(2, farthest[:, None].expand(b, c, 1, -1)).view(b, c, height, width)
    fill_depth = neighbours_depth.gather(1, farthest).view(b, 1, height, width)
    grow = ~covered & found
    return (torch.where(grow, fill_colour, colour), torch.where(grow, fill_depth, depth), covered | grow)
