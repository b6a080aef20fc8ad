"""FLOPs of registered models, counted with torch's flop counter (the cost plan and the latency roofline)."""

from __future__ import annotations


def step_flops(model_name: str, render_hw: tuple[int, int], output_hw: tuple[int, int]) -> float:
    """Forward FLOPs torch counts for one recurrent step of an untrained model at these sizes."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..models import build_model

    model = build_model(model_name).eval()
    (h, w), (H, W) = render_hw, output_hw
    inputs = (torch.rand(1, 3, h, w), torch.rand(1, 1, h, w), torch.zeros(1, 2), torch.zeros(1, 2, h, w),
              torch.zeros(1, 1, h, w), torch.rand(1, 3, H, W))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*inputs)
    return float(counter.get_total_flops())


def training_flops_per_window(model_name: str, crop: int, window: int, ratio: float) -> float:
    """Forward FLOPs of one step at a crop x crop output, x frames per window, x 3 (forward + backward)."""
    side = max(1, round(crop / ratio))
    return 3.0 * step_flops(model_name, (side, side), (crop, crop)) * window
