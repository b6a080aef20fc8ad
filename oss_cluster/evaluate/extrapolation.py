"""OSS-FX (frame extrapolation from the persistent canvas) against the true intermediate frames."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..baselines import forward_warp
from ..data.schema import Window
from ..metrics import flip, psnr
from ..models.temporal import FRAME_KEYS
from .scoring import EVAL_BORDER, window_tensors


@torch.no_grad()
def evaluate_extrapolation(model, sequences: Sequence[Window], mids: Sequence[torch.Tensor], alpha: float = 0.5,
                           border: int = EVAL_BORDER) -> dict:
    """OSS-FX at t + alpha against the true intermediate frames, beside "repeat the last output" and
    "forward-warp the last output by alpha x motion"; plus the extrapolated-vs-SR difference over the
    inter-frame motion (mean |fx - SR_t| / mean |SR_t - SR_{t-1}|), which is ~0 when the composite
    head ignores the canvas."""
    scores: dict[str, list[float]] = {}
    moved, changed = [], []
    was_training = model.training
    model.eval()
    for window, mid in zip(sequences, mids):
        batch = {k: v[None] for k, v in window_tensors(window).items()}
        out_size, state, previous = tuple(batch["gt"].shape[-2:]), None, None
        model.last_window = []
        for k in range(window.length):
            frame = {key: batch[key][:, k] for key in FRAME_KEYS}
            output, state = model.step(frame, state, out_size)
            del model.last_window[:-1]  # per-frame renders are not needed here
            if previous is not None:  # from the second frame on, the canvas has a velocity
                truth = mid[k][None]
                candidates = {"oss_fx": model.extrapolate(state, alpha), "repeat_last": output,
                              "forward_warp": forward_warp(output, frame["motion"], alpha)}
                for name, image in candidates.items():
                    scores.setdefault(f"{name}/psnr_rgb", []).append(psnr(image, truth, border))
                    scores.setdefault(f"{name}/flip", []).append(flip(image, truth, border))
                moved.append(float((candidates["oss_fx"] - output).abs().mean()))
                changed.append(float((output - previous).abs().mean()))
            previous = output
    model.train(was_training)
    result = {key: float(np.mean(values)) for key, values in scores.items()}
    result["fx_vs_sr_over_motion"] = float(np.mean(moved) / max(np.mean(changed), 1e-12))
    result["alpha"] = alpha
    return result


def format_extrapolation(fx: dict) -> str:
    return (f"alpha {fx['alpha']:g}: PSNR RGB oss_fx {fx['oss_fx/psnr_rgb']:.3f}, repeat_last {fx['repeat_last/psnr_rgb']:.3f}, "
            f"forward_warp {fx['forward_warp/psnr_rgb']:.3f}; FLIP oss_fx {fx['oss_fx/flip']:.4f}, "
            f"repeat_last {fx['repeat_last/flip']:.4f}, forward_warp {fx['forward_warp/flip']:.4f}; "
            f"fx-vs-SR / motion {fx['fx_vs_sr_over_motion']:.4f}")
