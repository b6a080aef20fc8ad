import pytest
import torch

from oss_cluster.models import build_model
from oss_cluster.models.hat import HAT, HAT_PARAM_TARGETS, relative_index, shift_mask, window_partition, window_reverse


@pytest.mark.parametrize("name", sorted(HAT_PARAM_TARGETS))
def test_parameter_count_within_10_percent(name):
    count = sum(p.numel() for p in build_model(name).parameters())
    target = HAT_PARAM_TARGETS[name]
    assert abs(count - target) <= 0.1 * target, f"{name}: {count:,} params vs target {target:,}"


def test_window_round_trip_and_indices():
    x = torch.randn(2, 8, 12, 5)
    assert torch.equal(window_reverse(window_partition(x, 4), 4, 8, 12), x)
    index = relative_index(4, 4)
    assert index.shape == (16, 16) and index.min() == 0 and index.max() == 48
    overlap = relative_index(4, 6)
    assert overlap.shape == (16, 36) and overlap.max() == (4 + 6 - 1) ** 2 - 1
    mask = shift_mask(8, 8, 4, 2)
    assert mask.shape == (4, 16, 16) and (mask == 0).any() and (mask == -100).any()


def small_hat(**kw):
    return HAT(embed_dim=12, groups=2, depth=2, heads=3, window=4, compress=3, squeeze=4, upsample_channels=8,
               refine_hidden=4, **kw)


@pytest.mark.parametrize("size", [(8, 8), (9, 13), (5, 6)])
def test_sizes_not_multiple_of_window_are_padded_and_cropped(size):
    model = small_hat().eval()
    h, w = size
    x = torch.rand(1, model.in_channels, h, w)
    assert model.features(x).shape == (1, 8, h, w)


def test_padding_does_not_leak_into_the_crop():
    """The features at pixel (0, 0) depend on the input there (the crop is aligned, not shifted)."""
    model = small_hat().eval()
    x = torch.rand(1, model.in_channels, 9, 13)
    y = x.clone()
    y[..., 0, 0] += 1.0
    assert (model.features(x)[..., 0, 0] - model.features(y)[..., 0, 0]).abs().max() > 0


def test_shifted_attention_is_translation_equivariant_in_the_interior():
    """Window attention mixes only within windows: a change far away leaves distant windows untouched in one HAB."""
    model = small_hat().eval()
    block = model.layers[0].blocks[0]  # unshifted
    tokens = torch.randn(1, 8 * 8, 12)
    changed = tokens.clone()
    changed[0, 0] += 1.0  # pixel (0, 0): window (0, 0)
    diff = (block(tokens, (8, 8)) - block(changed, (8, 8))).abs().view(8, 8, 12).sum(-1)
    assert diff[:4, :4].sum() > 0
    assert diff[5:, 5:].sum() == 0  # beyond the CAB's 5x5 receptive field and outside the window
