import torch

from oss_cluster.losses import charbonnier, temporal_stability, window_loss


def test_charbonnier_values():
    x = torch.zeros(2, 3, 4, 4)
    assert abs(charbonnier(x, x, eps=1e-3).item() - 1e-3) < 1e-9
    assert abs(charbonnier(x + 0.3, x, eps=1e-3).item() - (0.09 + 1e-6) ** 0.5) < 1e-6


def test_temporal_stability_penalises_flicker_not_true_change():
    torch.manual_seed(0)
    gt = torch.rand(1, 3, 3, 8, 8)
    batch = {"gt": gt, "motion": torch.zeros(1, 3, 2, 4, 4), "depth": torch.ones(1, 3, 1, 4, 4)}
    assert temporal_stability(gt, batch).item() < 2e-3  # following the ground truth's own change costs ~eps
    flicker = gt + torch.tensor([0.0, 0.2, 0.0]).view(1, 3, 1, 1, 1)
    assert temporal_stability(flicker, batch).item() > 0.1
    assert window_loss(flicker, batch, temporal_weight=1.0) > window_loss(flicker, batch, temporal_weight=0.0)


def test_lowpass_term_weighs_broad_errors_over_pixel_noise():
    from oss_cluster.losses import lowpass_charbonnier

    torch.manual_seed(0)
    target = torch.rand(1, 2, 3, 32, 32)
    noise = target + 0.1 * torch.sign(torch.randn_like(target))  # +-0.1 per pixel: fine-grained
    offset = target + 0.1  # +0.1 everywhere: the same per-pixel error, broad
    assert torch.isclose(charbonnier(noise, target), charbonnier(offset, target), atol=1e-4)
    assert lowpass_charbonnier(noise, target, sigma=1.0) < 0.5 * lowpass_charbonnier(offset, target, sigma=1.0)
    batch = {"gt": target}
    assert window_loss(noise, batch, lowpass_weight=1.0) < window_loss(offset, batch, lowpass_weight=1.0)
