"""Shipping students: small U-Net CNNs that do most of their work below render resolution.

Layout (render resolution h x w):
    enter   1x1 conv, input -> w0                      at h x w
    down1   space-to-depth 2, 1x1 conv -> w1           at h/2
    down2   space-to-depth 2, 1x1 conv -> w2           at h/4
    blocks  residual blocks at h/4 (depthwise-separable for Pico)
    up2     1x1 conv -> 4 w1, depth-to-space, + down1 skip
    up1     1x1 conv -> 4 w0, depth-to-space, + enter skip
    head    ReconstructionHead (1x1): corrections to TAAU-style accumulation at any output size
Every tier's student stays under its parameter cap and its FLOPs-per-output-pixel budget
(oss_cluster/tiers.py); ReLU throughout so Net2Net operations are exact. Exports to ONNX with
dynamic height and width.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from . import register_model
from .temporal import TemporalSR


class ResBlock(nn.Module):
    """x + conv(ReLU(conv(x))); `hidden` is the inner width (what Net2Net widens)."""

    def __init__(self, channels: int, hidden: int, separable: bool):
        super().__init__()
        self.separable = separable
        if separable:
            self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
            self.conv1 = nn.Conv2d(channels, hidden, 1)
            self.conv2 = nn.Conv2d(hidden, channels, 1)
        else:
            self.depthwise = nn.Identity()
            self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
            self.conv2 = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(self.depthwise(x))))


class Student(TemporalSR):
    def __init__(self, widths=(8, 16, 32), blocks=2, hidden=32, separable=True, temporal=True, sub=2, residual=True):
        w0, w1, w2 = widths
        super().__init__(temporal=temporal, sub=sub, head_channels=w0, head_kernel=1, residual=residual)
        self.config = dict(widths=tuple(widths), blocks=blocks, hidden=hidden, separable=separable,
                           temporal=temporal, sub=sub, residual=residual)
        self.enter = nn.Conv2d(self.in_channels, w0, 1)
        self.down1 = nn.Conv2d(4 * w0, w1, 1)
        self.down2 = nn.Conv2d(4 * w1, w2, 1)
        self.blocks = nn.ModuleList([ResBlock(w2, hidden, separable) for _ in range(blocks)])
        self.up2 = nn.Conv2d(w2, 4 * w1, 1)
        self.up1 = nn.Conv2d(w1, 4 * w0, 1)

    def features(self, x):
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % 4, 0, (-h) % 4), mode="replicate")
        f0 = F.relu(self.enter(x))
        f1 = F.relu(self.down1(F.pixel_unshuffle(f0, 2)))
        f2 = F.relu(self.down2(F.pixel_unshuffle(f1, 2)))
        for block in self.blocks:
            f2 = block(f2)
        f1 = F.relu(F.pixel_shuffle(self.up2(f2), 2) + f1)
        f0 = F.relu(F.pixel_shuffle(self.up1(f1), 2) + f0)
        return f0[..., :h, :w]


STUDENT_CONFIGS = {
    # Pico is accumulation steered by a small network: its head predicts the history weight and sample
    # confidence per render pixel (sub=1; with sub=2 its FLOPs per output pixel exceed the tier's
    # budget) and no colour residual (residual=False: measured, it did not raise PSNR and cost FLIP).
    "student_pico": dict(widths=(8, 16, 32), blocks=2, hidden=32, separable=True, sub=1, residual=False),
    "student_standard": dict(widths=(16, 32, 64), blocks=3, hidden=64, separable=False),
    "student_heavy": dict(widths=(24, 48, 96), blocks=4, hidden=96, separable=False),
}
STUDENT_TIERS = {"student_pico": "pico", "student_standard": "standard", "student_heavy": "heavy"}


def _make_builder(name: str):
    def build(**overrides) -> Student:
        return Student(**{**STUDENT_CONFIGS[name], **overrides})

    build.__name__ = name
    return build


for _name in STUDENT_CONFIGS:
    register_model(_name, _make_builder(_name))
