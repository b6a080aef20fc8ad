import math

import torch
import torchvision

from oss_cluster.metrics import ALEXNET_WEIGHTS, LPIPSGauge, flip, psnr, quality_report, ssim, to_y


def images():
    torch.manual_seed(0)
    target = torch.rand(2, 3, 32, 40) * 0.8
    return target + 0.1, target


def test_psnr_rgb_and_y_known_values():
    pred, target = images()
    assert abs(psnr(pred, target) - 20.0) < 1e-4
    y_step = 0.1 * (65.481 + 128.553 + 24.966) / 255
    assert abs(psnr(pred, target, space="y") - 20 * math.log10(1 / y_step)) < 1e-3
    assert abs(to_y(torch.zeros(1, 3, 1, 1)).item() - 16 / 255) < 1e-7


def test_border_crop_is_applied():
    _, target = images()
    pred = target.clone()
    pred[..., :2, :] += 0.5  # damage only the top border
    assert psnr(pred, target, border=0) < 30 and psnr(pred, target, border=2) > 100


def test_ssim_and_flip():
    pred, target = images()
    assert abs(ssim(target, target) - 1.0) < 1e-9
    noisy = (target + 0.2 * torch.randn_like(target)).clamp(0, 1)
    assert ssim(noisy, target) < 0.9
    assert flip(target, target) == 0.0
    assert flip(noisy, target) > 0.01


def test_lpips_reports_unavailable_without_weights(tmp_path):
    gauge = LPIPSGauge(tmp_path / "missing.pth")
    pred, target = images()
    value = gauge(pred, target)
    assert not gauge.available and value.startswith("unavailable: ") and "missing.pth" in value


def test_lpips_loads_local_backbone_weights(tmp_path):
    """With a torchvision AlexNet checkpoint on disk (here randomly initialised) the real LPIPS code runs."""
    path = tmp_path / ALEXNET_WEIGHTS
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    gauge = LPIPSGauge(path)
    assert gauge.available, gauge.reason
    pred, target = images()
    assert gauge(target, target) == 0.0
    assert gauge(pred, target) > 0.0


def test_report_states_spaces_and_crop(tmp_path):
    pred, target = images()
    report = quality_report(pred, target, border=3, lpips_gauge=LPIPSGauge(tmp_path / "none.pth"))
    assert report["border_crop"] == 3 and "Y (BT.601" in report["psnr_spaces"] and "RGB" in report["psnr_spaces"]
    assert set(report) >= {"psnr_rgb", "psnr_y", "ssim_y", "flip", "lpips"}
    assert report["lpips"].startswith("unavailable")
