"""Every registered model: forward and backward on a tiny input, in temporal and single-image mode."""

import pytest
import torch

from oss_cluster.models import build_model, list_models
from oss_cluster.models.temporal import run_window


def tiny_batch(batch=1, frames=2, h=12, w=20, ratio=1.5, motion_scale=1.0):
    H, W = round(h * ratio), round(w * ratio)
    torch.manual_seed(0)
    return {
        "lr": torch.rand(batch, frames, 3, h, w), "gt": torch.rand(batch, frames, 3, H, W),
        "depth": 1 + torch.rand(batch, frames, 1, h, w) * 10, "jitter": torch.rand(batch, frames, 2) - 0.5,
        "motion": torch.randn(batch, frames, 2, h, w) * motion_scale,
        "disocclusion": (torch.rand(batch, frames, 1, h, w) > 0.9).float(),
    }


def test_registry_lists_teachers_and_students():
    assert {"hat_tiny", "hat_small", "hat_heavy", "student_pico", "student_standard", "student_heavy"} <= set(list_models())
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        build_model("nope")
    with pytest.raises(TypeError, match="bad options"):
        build_model("student_pico", colour=3)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("temporal", [True, False])
def test_forward_backward(name, temporal):
    model = build_model(name, temporal=temporal)
    batch = tiny_batch()
    outputs, state = run_window(model, batch)
    history = state[0]  # (history buffer, ...): the accumulated colour and its weight
    assert outputs.shape == batch["gt"].shape and history.shape == (batch["gt"].shape[0], 4, *batch["gt"].shape[-2:])
    assert torch.isfinite(outputs).all()
    ((outputs - batch["gt"]) ** 2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("name", list_models())
def test_no_model_reads_the_renderer_disocclusion_mask(name):
    """Models see what a game gives: the same frames with the oracle mask changed or removed give the same outputs."""
    batch = tiny_batch(frames=3)
    model = build_model(name).eval()
    with torch.no_grad():
        torch.manual_seed(1)
        reference, _ = run_window(model, batch)
        flipped = {**batch, "disocclusion": 1 - batch["disocclusion"]}
        removed = {key: value for key, value in batch.items() if key != "disocclusion"}
        for other in (flipped, removed):
            torch.manual_seed(1)
            assert torch.equal(run_window(model, other)[0], reference)
