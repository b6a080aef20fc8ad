"""Net2Net: every operation preserves the function (max |delta output| < 1e-5) and the result trains."""

import pytest
import torch

from oss_cluster.models.hat import HAT
from oss_cluster.models.net2net import (
    deepen_hat, deepen_student, expand, widen_hat_embedding, widen_hat_mlp, widen_pair, widen_student,
)
from oss_cluster.models.student import Student
from oss_cluster.models.temporal import run_window

from .test_registry import tiny_batch


def small_hat():
    torch.manual_seed(0)
    return HAT(embed_dim=12, groups=2, depth=2, heads=3, window=4, compress=3, squeeze=4, upsample_channels=8,
               refine_hidden=4).eval()


def small_student():
    torch.manual_seed(0)
    return Student(widths=(4, 8, 16), blocks=2, hidden=8, separable=False).eval()


def randomise_zero_inits(model):
    """Give zero-initialised layers (head, refine) real weights so the tests see the whole network."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and module.weight.abs().sum() == 0:
                module.weight.normal_(std=0.1)
    return model


def outputs(model, batch):
    with torch.no_grad():
        return run_window(model, batch)[0]


BATCH = tiny_batch(h=8, w=12, ratio=2.0)


def assert_same_function(before, after):
    delta = (outputs(before, BATCH) - outputs(after, BATCH)).abs().max()
    assert delta < 1e-5, f"max |delta output| = {delta}"


def test_widen_pair_linear_and_conv():
    torch.manual_seed(0)
    for first, second, x in [
        (torch.nn.Linear(5, 7), torch.nn.Linear(7, 3), torch.randn(4, 5)),
        (torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.Conv2d(4, 3, 3, padding=1), torch.randn(1, 2, 6, 6)),
    ]:
        wide_first, wide_second = widen_pair(first, second, 11)
        before = second(torch.relu(first(x)))
        after = wide_second(torch.relu(wide_first(x)))
        assert (before - after).abs().max() < 1e-5
        assert wide_first.weight.shape[0] == 11 and wide_second.weight.shape[1] == 11
    with pytest.raises(ValueError, match="fewer units"):
        widen_pair(torch.nn.Linear(5, 7), torch.nn.Linear(7, 3), 4)


def test_student_widen_and_deepen_preserve_function():
    model = randomise_zero_inits(small_student())
    wider = widen_student(model, 20)
    assert_same_function(model, wider)
    deeper = deepen_student(wider, 4)
    assert len(deeper.blocks) == 4
    assert_same_function(model, deeper)


def test_hat_operations_preserve_function():
    model = randomise_zero_inits(small_hat())
    mlp = widen_hat_mlp(model, 3.0)
    assert mlp.layers[0].blocks[0].mlp.fc1.out_features == 36
    assert_same_function(model, mlp)
    wide = widen_hat_embedding(model, 2)
    assert wide.config["embed_dim"] == 24 and wide.layers[0].blocks[0].attn.qkv.weight.shape == (72, 24)
    assert_same_function(model, wide)
    deep = deepen_hat(model, 3)
    assert len(deep.layers[0].blocks) == 3 and deep.layers[0].blocks[2].shift == 0
    assert_same_function(model, deep)


def test_expand_hat_and_student():
    model = randomise_zero_inits(small_hat())
    big = expand(model, {"embed_dim": 24, "mlp_ratio": 3.0, "depth": 3})
    assert (big.config["embed_dim"], big.config["mlp_ratio"], big.config["depth"]) == (24, 3.0, 3)
    assert_same_function(model, big)
    student = randomise_zero_inits(small_student())
    grown = expand(student, {"hidden": 16, "blocks": 3})
    assert_same_function(student, grown)
    with pytest.raises(ValueError, match="cannot change 'heads'"):
        expand(model, {"heads": 4})
    with pytest.raises(ValueError, match="not a whole multiple"):
        expand(model, {"embed_dim": 18})


@pytest.mark.parametrize("make,target", [(small_student, {"hidden": 16, "blocks": 3}),
                                         (small_hat, {"embed_dim": 24, "depth": 3})])
def test_expanded_model_trains(make, target):
    model = expand(randomise_zero_inits(make()), target).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    # A learnable target: a brightened, upsampled copy of the input.
    target = torch.stack([torch.nn.functional.interpolate(BATCH["lr"][:, k], scale_factor=2, mode="nearest") * 0.8 + 0.1
                          for k in range(BATCH["lr"].shape[1])], dim=1)
    losses = []
    for _ in range(60):
        out = run_window(model, BATCH)[0]
        loss = ((out - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.8
