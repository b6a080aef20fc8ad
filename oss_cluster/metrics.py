"""Quality gauges: PSNR (RGB and Y), SSIM, FLIP, LPIPS (when its weights are on disk).

Every report states the colour space of each PSNR and the border crop it used. Images are
[B, 3, H, W] sRGB-encoded in [0, 1]. Y is BT.601 luma in studio swing, Y = (16 + 65.481 R +
128.553 G + 24.966 B) / 255, as super-resolution papers compute it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PSNR_SPACES = "psnr_rgb: RGB; psnr_y: Y (BT.601 studio swing)"
ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"  # torchvision's ImageNet AlexNet checkpoint name


def to_y(rgb: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] sRGB in [0, 1] -> [B, 1, H, W] BT.601 studio-swing luma in [16/255, 235/255]."""
    weights = rgb.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1)
    return (16.0 + (rgb * weights).sum(dim=1, keepdim=True)) / 255.0


def _crop(x: torch.Tensor, border: int) -> torch.Tensor:
    return x[..., border:-border, border:-border] if border > 0 else x


def psnr(pred: torch.Tensor, target: torch.Tensor, border: int = 0, space: str = "rgb") -> float:
    """Mean over the batch of per-image PSNR in dB (peak 1.0), after cropping `border` pixels."""
    if space not in ("rgb", "y"):
        raise ValueError(f"psnr space must be 'rgb' or 'y', got {space!r}")
    if space == "y":
        pred, target = to_y(pred), to_y(target)
    pred, target = _crop(pred.clamp(0, 1), border), _crop(target, border)
    mse = ((pred - target) ** 2).flatten(1).mean(dim=1).clamp(min=1e-12)
    return float((10 * torch.log10(1.0 / mse)).mean())


def ssim(pred: torch.Tensor, target: torch.Tensor, border: int = 0) -> float:
    """Mean SSIM on Y (Gaussian window 11, sigma 1.5, K1 = 0.01, K2 = 0.03), after cropping."""
    x, y = _crop(to_y(pred.clamp(0, 1)), border).double(), _crop(to_y(target), border).double()
    coords = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = (g / g.sum())
    window = (g[:, None] * g[None, :]).view(1, 1, 11, 11).to(x.device)
    blur = lambda t: F.conv2d(t, window)  # noqa: E731  valid convolution, like the reference code
    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y, cov = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2, blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.flatten(1).mean(dim=1).mean())


def flip_map(pred: torch.Tensor, target: torch.Tensor, border: int = 0) -> np.ndarray:
    """Per-pixel LDR FLIP error (NVIDIA, package flip-evaluator; lower is better): [B, H', W'] after cropping."""
    import flip_evaluator

    maps = []
    for p, t in zip(_crop(pred.clamp(0, 1), border), _crop(target, border)):
        reference = np.ascontiguousarray(t.permute(1, 2, 0).detach().float().cpu().numpy(), dtype=np.float32)
        test = np.ascontiguousarray(p.permute(1, 2, 0).detach().float().cpu().numpy(), dtype=np.float32)
        error, _, _ = flip_evaluator.evaluate(reference, test, "LDR", applyMagma=False)
        maps.append(np.asarray(error, np.float32).reshape(reference.shape[:2]))
    return np.stack(maps)


def flip(pred: torch.Tensor, target: torch.Tensor, border: int = 0) -> float:
    """Mean LDR FLIP error (lower is better) over the batch."""
    return float(flip_map(pred, target, border).mean())


class LPIPSGauge:
    """LPIPS (AlexNet) through the `lpips` package, if ImageNet AlexNet weights are on local disk.

    The linear calibration layers ship inside the package; the backbone weights are looked up as
    torchvision's checkpoint in the torch hub cache ($TORCH_HOME/hub/checkpoints). Nothing is
    downloaded: without the file, `available` is False and `reason` says what is missing.
    """

    def __init__(self, weights: str | Path | None = None):
        self.model, self.reason = None, ""
        path = Path(weights) if weights else Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS
        if not path.is_file():
            self.reason = f"AlexNet ImageNet weights not found at {path} (LPIPS needs them locally; nothing is downloaded)"
            return
        try:
            import lpips

            model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
            state = torch.load(path, map_location="cpu", weights_only=True)
            backbone = {}
            for name in model.net.state_dict():  # slice{k}.{i}.{param} <- features.{i}.{param}
                _, index, param = name.split(".")
                backbone[name] = state[f"features.{index}.{param}"]
            model.net.load_state_dict(backbone)
            self.model = model.eval()
        except Exception as err:  # a corrupt or mismatched file is reported, not fatal
            self.reason = f"could not load LPIPS with {path}: {err}"

    @property
    def available(self) -> bool:
        return self.model is not None

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, border: int = 0) -> float | str:
        if not self.available:
            return f"unavailable: {self.reason}"
        with torch.no_grad():
            value = self.model(_crop(pred.clamp(0, 1), border) * 2 - 1, _crop(target, border) * 2 - 1)
        return float(value.mean())


def quality_report(pred: torch.Tensor, target: torch.Tensor, border: int = 4, lpips_gauge: LPIPSGauge | None = None) -> dict:
    """All gauges for a batch, with the colour spaces and the border crop stated."""
    report = {
        "psnr_rgb": psnr(pred, target, border, "rgb"),
        "psnr_y": psnr(pred, target, border, "y"),
        "ssim_y": ssim(pred, target, border),
        "flip": flip(pred, target, border),
        "lpips": (lpips_gauge or LPIPSGauge())(pred, target, border),
        "psnr_spaces": PSNR_SPACES,
        "border_crop": border,
    }
    if not all(math.isfinite(report[k]) for k in ("psnr_rgb", "psnr_y", "ssim_y", "flip")):
        raise ValueError(f"non-finite quality values: {report}")
    return report
