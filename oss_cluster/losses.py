"""Training losses: Charbonnier, a low-pass term, and an optional temporal-stability term."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .models.temporal import derive_disocclusion, warp_previous


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """mean(sqrt((pred - target)^2 + eps^2)); any matching shapes."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


def temporal_stability(outputs: torch.Tensor, batch: dict, eps: float = 1e-3) -> torch.Tensor:
    """Penalise frame-to-frame change of the output beyond the ground truth's own change.

    outputs, batch["gt"]: [B, K, 3, H, W]; batch motion/depth: [B, K, *, h, w]. For k >= 1 the
    previous output and previous ground truth are warped to frame k by the shared warp (disocclusion
    derived from depth and motion); the loss is Charbonnier of (out_k - warp(out_{k-1})) -
    (gt_k - warp(gt_{k-1})) over valid pixels.
    """
    if outputs.shape[1] < 2:
        return outputs.new_zeros(())
    terms = []
    for k in range(1, outputs.shape[1]):
        motion = batch["motion"][:, k]
        disocclusion = derive_disocclusion(batch["depth"][:, k], motion, batch["depth"][:, k - 1])
        warped_out, valid = warp_previous(outputs[:, k - 1], motion, disocclusion)
        warped_gt, _ = warp_previous(batch["gt"][:, k - 1], motion, disocclusion)
        change = (outputs[:, k] - warped_out) - (batch["gt"][:, k] - warped_gt)
        terms.append((torch.sqrt(change**2 + eps * eps) * valid).sum() / (valid.sum() * 3).clamp(min=1))
    return torch.stack(terms).mean()


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N, C, H, W] (sigma in pixels, edges replicated)."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-x**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    images = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1),
                      groups=c)
    return F.conv2d(F.pad(images, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1),
                    groups=c)


def lowpass_charbonnier(outputs: torch.Tensor, target: torch.Tensor, sigma: float, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier between Gaussian-blurred outputs and targets ([..., 3, H, W]): errors people see
    (broad, low-frequency) weigh more than pixel noise, as in perceptual metrics' contrast sensitivity."""
    flat = lambda t: t.reshape(-1, *t.shape[-3:])  # noqa: E731
    return charbonnier(gaussian_blur(flat(outputs), sigma), gaussian_blur(flat(target), sigma), eps)


def window_loss(outputs: torch.Tensor, batch: dict, eps: float = 1e-3, temporal_weight: float = 0.0,
                lowpass_weight: float = 0.0, lowpass_sigma: float = 1.0) -> torch.Tensor:
    """Charbonnier to the ground truth over every frame of the window, plus the weighted low-pass and
    stability terms."""
    loss = charbonnier(outputs, batch["gt"], eps)
    if lowpass_weight > 0:
        loss = loss + lowpass_weight * lowpass_charbonnier(outputs, batch["gt"], lowpass_sigma, eps)
    if temporal_weight > 0:
        loss = loss + temporal_weight * temporal_stability(outputs, batch, eps)
    return loss
