"""Every registered model: forward and backward on a tiny input, in temporal and single-image mode."""

import pytest
import torch

from oss_cluster.models import build_model, list_models
from oss_cluster.models.temporal import run_window


def tiny_batch(batch=1, frames=2, h=12, w=20, ratio=1.5):
    H, W = round(h * ratio), round(w * ratio)
    torch.manual_seed(0)
    return {
        "lr": torch.rand(batch, frames, 3, h, w), "gt": torch.rand(batch, frames, 3, H, W),
        "depth": torch.rand(batch, frames, 1, h, w) * 10, "jitter": torch.rand(batch, frames, 2) - 0.5,
        "motion": torch.randn(batch, frames, 2, h, w), "disocclusion": (torch.rand(batch, frames, 1, h, w) > 0.9).float(),
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
    last = state[0] if isinstance(state, tuple) else state  # stateful models carry (output, extra)
    assert outputs.shape == batch["gt"].shape and last.shape == batch["gt"][:, -1].shape
    assert torch.isfinite(outputs).all()
    ((outputs - batch["gt"]) ** 2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
