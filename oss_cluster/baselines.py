"""Comparison anchors over the same sample schema: bicubic and a temporal TAAU modelled on FSR 2.

TAAU follows FSR 2's public algorithm, without its sharpening pass:
1. reproject a high-resolution history by the motion vectors (the shared `warp_previous`);
2. depth-based disocclusion: a pixel whose previous-frame depth at the reprojected position is
   clearly nearer than its current depth was hidden, so its history is dropped;
3. upsample the current jittered samples: Gaussian-weighted 3x3 neighbourhood of samples around
   each output pixel, by their true (jittered) distance, with a confidence from the nearest one;
4. clamp the reprojected history to the 3x3 neighbourhood's colour box in YCoCg (rejects stale
   history such as ghosting);
5. accumulate: blend weight = confidence / (history count + confidence), count capped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .models.temporal import FRAME_KEYS, jitter_resample, subpixel_offset, warp_previous


def bicubic(lr: torch.Tensor, out_size: tuple[int, int], jitter: torch.Tensor | None = None) -> torch.Tensor:
    """Bicubic resize [B, C, h, w] -> [B, C, H, W]; antialiased when downscaling.

    With `jitter` ([B, 2] render pixels) the jittered sample positions are honoured (what a game's
    plain upscaler would do with a jittered frame); without it, a plain image resize.
    """
    downscaling = out_size[0] < lr.shape[-2] or out_size[1] < lr.shape[-1]
    if jitter is None or downscaling:
        return F.interpolate(lr, size=out_size, mode="bicubic", align_corners=False, antialias=downscaling).clamp(0, 1)
    return jitter_resample(lr, jitter, out_size, mode="bicubic").clamp(0, 1)


def _ycocg(rgb: torch.Tensor) -> torch.Tensor:
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    return torch.stack([0.25 * r + 0.5 * g + 0.25 * b, 0.5 * r - 0.5 * b, -0.25 * r + 0.5 * g - 0.25 * b], dim=1)


def _rgb(ycocg: torch.Tensor) -> torch.Tensor:
    y, co, cg = ycocg[:, 0], ycocg[:, 1], ycocg[:, 2]
    return torch.stack([y + co - cg, y + cg, y - co - cg], dim=1)


class TAAU:
    """FSR 2-style temporal upscaler (no learning). `step` advances one frame; `state` is a dict."""

    def __init__(self, max_history: float = 16.0, sigma: float = 0.5, depth_tolerance: float = 0.05):
        # sigma: width of the sample reconstruction kernel in output pixels (FSR 2 sizes its kernel
        # to the output grid so accumulated samples resolve detail above the render resolution).
        self.max_history, self.sigma, self.depth_tolerance = max_history, sigma, depth_tolerance

    def upsample_current(self, lr, jitter, out_size):
        """Gaussian-weighted upsample of the 3x3 samples around each output pixel, its confidence and the colour box."""
        b, c, h, w = lr.shape
        neighbours = F.unfold(F.pad(lr, (1, 1, 1, 1), mode="replicate"), 3).view(b, c * 9, h, w)
        gathered = jitter_resample(neighbours, jitter, out_size, mode="nearest").view(b, c, 9, *out_size)
        offset = subpixel_offset(jitter, (h, w), out_size)  # output centre minus nearest sample, render px
        dy, dx = torch.meshgrid(torch.arange(-1, 2.0), torch.arange(-1, 2.0), indexing="ij")
        dist2 = (offset[:, 0:1] - dx.reshape(1, 9, 1, 1).to(lr)) ** 2 + (offset[:, 1:2] - dy.reshape(1, 9, 1, 1).to(lr)) ** 2
        sigma = self.sigma * h / out_size[0]  # output pixels -> render pixels
        weights = torch.exp(-dist2 / (2 * sigma**2))  # [B, 9, H, W]
        colour = (gathered * weights[:, None]).sum(2) / weights.sum(1, keepdim=True)
        confidence = weights.max(dim=1, keepdim=True).values
        box = _ycocg(gathered.permute(0, 2, 1, 3, 4).reshape(b * 9, c, *out_size)).view(b, 9, c, *out_size)
        return colour, confidence, box.min(dim=1).values, box.max(dim=1).values

    def step(self, lr, depth, jitter, motion, state: dict | None, out_size: tuple[int, int]):
        """One frame: lr [B,3,h,w], depth [B,1,h,w], jitter [B,2], motion [B,2,h,w] -> (output [B,3,H,W], state)."""
        colour, confidence, low, high = self.upsample_current(lr, jitter, out_size)
        if state is None:
            count = torch.zeros_like(confidence)
            history = colour
        else:
            # Depth-based disocclusion at render resolution: the previous frame saw something nearer.
            previous_depth, _ = warp_previous(state["depth"], motion)
            disoccluded = (previous_depth < depth * (1 - self.depth_tolerance)).to(lr.dtype)
            history, valid = warp_previous(state["colour"], motion, disoccluded)
            count, _ = warp_previous(state["count"], motion, disoccluded)
            count = count * valid
            history = _rgb(torch.maximum(torch.minimum(_ycocg(history), high), low))
        alpha = confidence / (count + confidence).clamp(min=1e-6)
        output = (history + alpha * (colour - history)).clamp(0, 1)
        state = {"colour": output, "count": (count + confidence).clamp(max=self.max_history), "depth": depth}
        return output, state

    def run(self, batch: dict, out_size: tuple[int, int], state: dict | None = None):
        """Over a window batch ({key: [B, K, ...]}): ([B, K, 3, H, W], final state)."""
        outputs = []
        for k in range(batch["lr"].shape[1]):
            frame = {key: batch[key][:, k] for key in FRAME_KEYS}
            output, state = self.step(frame["lr"], frame["depth"], frame["jitter"], frame["motion"], state, out_size)
            outputs.append(output)
        return torch.stack(outputs, dim=1), state


def forward_warp(image: torch.Tensor, motion: torch.Tensor, alpha: float) -> torch.Tensor:
    """Push every output pixel alpha of the way along its motion (constant velocity): the frame-extrapolation baseline.

    image [B, C, H, W]; motion [B, 2, h, w] render pixels, current -> previous, so a surface at x is
    expected at x - alpha * motion(x) at time t + alpha. Bilinear splatting; pixels nothing lands
    on keep the unwarped image.
    """
    from .models.temporal import upsample_motion

    b, c, height, width = image.shape
    flow = upsample_motion(motion, (height, width))
    ys, xs = torch.meshgrid(torch.arange(height, device=image.device, dtype=image.dtype),
                            torch.arange(width, device=image.device, dtype=image.dtype), indexing="ij")
    tx = xs - alpha * flow[:, 0]
    ty = ys - alpha * flow[:, 1]
    x0, y0 = torch.floor(tx), torch.floor(ty)
    accumulated = image.new_zeros(b, c, height * width)
    weights = image.new_zeros(b, 1, height * width)
    for dx in (0, 1):
        for dy in (0, 1):
            cx, cy = x0 + dx, y0 + dy
            w = (1 - (tx - cx).abs()) * (1 - (ty - cy).abs())
            inside = (cx >= 0) & (cx < width) & (cy >= 0) & (cy < height)
            w = (w * inside).view(b, 1, -1)
            index = (cy.clamp(0, height - 1) * width + cx.clamp(0, width - 1)).long().view(b, 1, -1)
            accumulated.scatter_add_(2, index.expand(b, c, -1), image.view(b, c, -1) * w)
            weights.scatter_add_(2, index, w)
    covered = weights > 1e-3
    splatted = accumulated / weights.clamp(min=1e-3)
    return torch.where(covered, splatted, image.view(b, c, -1)).view(b, c, height, width)
