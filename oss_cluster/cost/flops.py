"""Training FLOPs per window of a registered model, counted with torch's flop counter."""

from __future__ import annotations


def training_flops_per_window(model_name: str, crop: int, window: int, ratio: float) -> float:
    """Forward FLOPs of one step at a crop x crop output, x frames per window, x 3 (forward + backward)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..models import build_model

    model = build_model(model_name).eval()
    h = w = max(1, round(crop / ratio))
    inputs = (torch.rand(1, 3, h, w), torch.rand(1, 1, h, w), torch.zeros(1, 2), torch.zeros(1, 2, h, w),
              torch.zeros(1, 1, h, w), torch.rand(1, 3, crop, crop))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*inputs)
    return 3.0 * counter.get_total_flops() * window
