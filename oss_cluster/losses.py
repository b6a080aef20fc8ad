"""Training losses: Charbonnier and an optional temporal-stability term."""

from __future__ import annotations

import torch

from .models.temporal import warp_previous


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """mean(sqrt((pred - target)^2 + eps^2)); any matching shapes."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


def temporal_stability(outputs: torch.Tensor, batch: dict, eps: float = 1e-3) -> torch.Tensor:
    """Penalise frame-to-frame change of the output beyond the ground truth's own change.

    outputs, batch["gt"]: [B, K, 3, H, W]; batch motion/disocclusion: [B, K, *, h, w]. For k >= 1 the
    previous output and previous ground truth are warped to frame k by the shared warp; the loss is
    Charbonnier of (out_k - warp(out_{k-1})) - (gt_k - warp(gt_{k-1})) over valid pixels.
    """
    if outputs.shape[1] < 2:
        return outputs.new_zeros(())
    terms = []
    for k in range(1, outputs.shape[1]):
        motion, disocclusion = batch["motion"][:, k], batch["disocclusion"][:, k]
        warped_out, valid = warp_previous(outputs[:, k - 1], motion, disocclusion)
        warped_gt, _ = warp_previous(batch["gt"][:, k - 1], motion, disocclusion)
        change = (outputs[:, k] - warped_out) - (batch["gt"][:, k] - warped_gt)
        terms.append((torch.sqrt(change**2 + eps * eps) * valid).sum() / (valid.sum() * 3).clamp(min=1))
    return torch.stack(terms).mean()


def window_loss(outputs: torch.Tensor, batch: dict, eps: float = 1e-3, temporal_weight: float = 0.0) -> torch.Tensor:
    """Charbonnier to the ground truth over every frame of the window, plus the weighted stability term."""
    loss = charbonnier(outputs, batch["gt"], eps)
    if temporal_weight > 0:
        loss = loss + temporal_weight * temporal_stability(outputs, batch, eps)
    return loss
