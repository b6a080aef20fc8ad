"""What every temporal model and baseline shares: the history warp, jitter-aware resampling, the
arbitrary-ratio reconstruction head, and the recurrent step interface.

Conventions (see oss_cluster/data/schema.py): render pixel (i, j) was sampled at render coordinates
(j + 0.5 + jx, i + 0.5 + jy); output pixel (Y, X) has its centre at render coordinates
((X + 0.5) w / W, (Y + 0.5) h / H). Motion vectors point from the current pixel to where its surface
was in the previous frame, in render pixels. Colours are sRGB-encoded in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# FLOPs per output pixel of the resampling the head does with grid_sample (which torch's flop
# counter does not count): bilinear = 4 taps x (multiply + add) per channel, for the base colour (3
# channels) and the sub-grid prediction (4 channels). Budget tests add this to the counted FLOPs.
RESAMPLE_FLOPS_PER_OUTPUT_PIXEL = 4 * 2 * (3 + 4)


def _output_grid(batch: int, out_size: tuple[int, int], device, dtype) -> torch.Tensor:
    """Normalised (align_corners=False) coordinates of output pixel centres: [B, H, W, 2] (x, y)."""
    height, width = out_size
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
    return grid.unsqueeze(0).expand(batch, height, width, 2)


def jitter_resample(image: torch.Tensor, jitter: torch.Tensor, out_size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resample a jittered render [B, C, h, w] to the output grid [B, C, H, W].

    Sample (i, j) lies at render coordinates (j + 0.5 + jx, i + 0.5 + jy), so each output pixel is
    looked up at its own position minus the jitter; `jitter` is [B, 2] in render pixels of `image`.
    """
    batch, _, h, w = image.shape
    grid = _output_grid(batch, out_size, image.device, image.dtype)
    shift = torch.stack([jitter[:, 0] * 2 / w, jitter[:, 1] * 2 / h], dim=-1).to(image.dtype)
    return F.grid_sample(image, grid - shift[:, None, None, :], mode=mode, padding_mode="border", align_corners=False)


def upsample_motion(motion: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """Motion [B, 2, h, w] in render pixels to [B, 2, H, W] in output pixels (nearest: no blending across edges)."""
    h, w = motion.shape[-2:]
    height, width = out_size
    up = F.interpolate(motion, size=out_size, mode="nearest")
    # Sizes stay symbolic (no torch.tensor of Python floats) so ONNX export keeps height/width dynamic.
    return torch.cat([up[:, :1] * (width / w), up[:, 1:] * (height / h)], dim=1)


def warp_previous(previous: torch.Tensor, motion: torch.Tensor, disocclusion: torch.Tensor | None = None):
    """Warp the previous output to the current frame by the motion vectors (bilinear).

    previous: [B, C, H, W] output of the last frame; motion: [B, 2, h, w] render pixels,
    current -> previous; disocclusion: [B, 1, h, w] (1 = newly visible) or None.
    Returns (warped [B, C, H, W], valid [B, 1, H, W]); warped is zero where not valid (disoccluded
    or fetched from outside the previous frame). Every model and baseline uses this one warp.
    """
    batch, _, height, width = previous.shape
    flow = upsample_motion(motion, (height, width))
    grid = _output_grid(batch, (height, width), previous.device, previous.dtype)
    source = grid + torch.stack([flow[:, 0] * 2 / width, flow[:, 1] * 2 / height], dim=-1)
    warped = F.grid_sample(previous, source, mode="bilinear", padding_mode="border", align_corners=False)
    valid = ((source.abs() <= 1).all(dim=-1, keepdim=True)).permute(0, 3, 1, 2).to(previous.dtype)
    if disocclusion is not None:
        valid = valid * (1 - F.interpolate(disocclusion.to(previous.dtype), size=(height, width), mode="nearest"))
    return warped * valid, valid


def gather_subgrid(image: torch.Tensor, in_size: tuple[int, int], sub: int) -> torch.Tensor:
    """Bring an output-resolution image [B, C, H, W] onto the render grid as [B, C*sub*sub, h, w].

    Render pixel (i, j) gets the image sampled at sub x sub evenly spaced points inside it (an
    arbitrary-ratio space-to-depth), so the network sees the history at full detail.
    """
    batch = image.shape[0]
    h, w = in_size
    fine = _output_grid(batch, (h * sub, w * sub), image.device, image.dtype)
    sampled = F.grid_sample(image, fine, mode="bilinear", padding_mode="border", align_corners=False)
    return F.pixel_unshuffle(sampled, sub)


def subpixel_offset(jitter: torch.Tensor, in_size: tuple[int, int], out_size: tuple[int, int]) -> torch.Tensor:
    """[B, 2, H, W]: offset (render pixels, in [-0.5, 0.5)) of each output pixel centre from the nearest sample."""
    h, w = in_size
    height, width = out_size
    xs = (torch.arange(width, device=jitter.device, dtype=jitter.dtype) + 0.5) * w / width
    ys = (torch.arange(height, device=jitter.device, dtype=jitter.dtype) + 0.5) * h / height
    dx = xs.view(1, 1, width) - 0.5 - jitter[:, 0].view(-1, 1, 1)
    dy = ys.view(1, height, 1) - 0.5 - jitter[:, 1].view(-1, 1, 1)
    dx = dx - torch.round(dx)
    dy = dy - torch.round(dy)
    return torch.stack([dx.expand(-1, height, width), dy.expand(-1, height, width)], dim=1)


class ReconstructionHead(nn.Module):
    """Render-resolution features -> output image of any size (any SR ratio).

    A conv (3x3, or 1x1 for students) predicts, per render pixel, a sub x sub grid of colour residuals and a history-blend
    logit. The grid is resampled to the output pixels at the jittered sample positions (so sub-pixel
    placement follows the jitter the network also sees) and added to a jitter-aware bilinear
    upsample of the render; the warped history is blended in where valid with the learned weight.
    `refine_hidden` > 0 adds a per-output-pixel MLP over [colour, history, valid, sub-pixel offset]
    (teachers can afford it; students keep it 0).
    """

    def __init__(self, in_channels: int, sub: int = 2, refine_hidden: int = 0, temporal: bool = True, kernel: int = 3):
        super().__init__()
        self.sub, self.temporal = sub, temporal
        self.to_subgrid = nn.Conv2d(in_channels, 4 * sub * sub, kernel, padding=kernel // 2)
        nn.init.zeros_(self.to_subgrid.weight)
        with torch.no_grad():  # start as "bilinear, history at weight sigmoid(-2) ~ 0.12"
            self.to_subgrid.bias.zero_()
            self.to_subgrid.bias.view(4, sub * sub)[3] = -2.0
        self.refine = None
        if refine_hidden:
            self.refine = nn.Sequential(
                nn.Conv2d(3 + 3 + 1 + 2, refine_hidden, 1), nn.GELU(), nn.Conv2d(refine_hidden, 3, 1)
            )
            nn.init.zeros_(self.refine[2].weight)
            nn.init.zeros_(self.refine[2].bias)

    def forward(self, features, lr, jitter, history, valid):
        """features [B, C, h, w]; lr [B, 3, h, w]; jitter [B, 2]; history [B, 3, H, W] warped; valid [B, 1, H, W]."""
        out_size = tuple(history.shape[-2:])
        grid = F.pixel_shuffle(self.to_subgrid(features), self.sub)
        predicted = jitter_resample(grid, jitter * self.sub, out_size)
        colour = jitter_resample(lr, jitter, out_size) + predicted[:, :3]
        if self.temporal:
            weight = torch.sigmoid(predicted[:, 3:4]) * valid
            colour = colour + weight * (history - colour)
        if self.refine is not None:
            offset = subpixel_offset(jitter, tuple(lr.shape[-2:]), out_size)
            colour = colour + self.refine(torch.cat([colour, history, valid, offset], dim=1))
        return colour


class TemporalSR(nn.Module):
    """Base of every SR model: one recurrent step from the current frame and the previous output.

    forward(lr [B,3,h,w], depth [B,1,h,w], jitter [B,2], motion [B,2,h,w], disocclusion [B,1,h,w],
            previous [B,3,H,W]) -> output [B,3,H,W]
    The output size is the previous output's size; pass zeros with disocclusion = 1 for the first
    frame. With temporal=False (single-image mode) only lr and jitter are used.
    Subclasses implement `features(x)` mapping the assembled input [B, in_channels, h, w] to
    [B, head_channels, h, w].
    """

    def __init__(self, temporal: bool = True, sub: int = 2, head_channels: int = 32, refine_hidden: int = 0,
                 head_kernel: int = 3):
        super().__init__()
        self.temporal, self.sub = temporal, sub
        # lr, disparity, jitter, then history (3 sub^2) and its validity (sub^2) on the render grid
        self.in_channels = 3 + 1 + 2 + 4 * sub * sub if temporal else 3 + 2
        self.head = ReconstructionHead(head_channels, sub, refine_hidden, temporal, head_kernel)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def assemble(self, lr, depth, jitter, history, valid) -> torch.Tensor:
        h, w = lr.shape[-2:]
        jitter_planes = jitter[:, :, None, None].expand(-1, 2, h, w)
        if not self.temporal:
            return torch.cat([lr, jitter_planes], dim=1)
        disparity = 1.0 / (1.0 + depth.clamp(min=0))  # bounded whatever the depth units
        return torch.cat([
            lr, disparity, jitter_planes,
            gather_subgrid(history, (h, w), self.sub), gather_subgrid(valid, (h, w), self.sub),
        ], dim=1)

    def step(self, frame: dict, state, out_size: tuple[int, int]):
        """One recurrent step on a frame dict; the state is the previous output (None at the start)."""
        previous, disocclusion = state, frame["disocclusion"]
        if previous is None:  # no history yet: zeros, marked invalid everywhere
            previous = frame["lr"].new_zeros((frame["lr"].shape[0], 3, *out_size))
            disocclusion = torch.ones_like(disocclusion)
        output = self(frame["lr"], frame["depth"], frame["jitter"], frame["motion"], disocclusion, previous)
        return output, output

    def forward(self, lr, depth, jitter, motion, disocclusion, previous):
        if self.temporal:
            history, valid = warp_previous(previous, motion, disocclusion)
        else:
            history, valid = torch.zeros_like(previous), torch.zeros_like(previous[:, :1])
        x = self.assemble(lr, depth, jitter, history, valid)
        return self.head(self.features(x), lr, jitter, history, valid)


FRAME_KEYS = ("lr", "depth", "jitter", "motion", "disocclusion")


def run_window(model: nn.Module, batch: dict, out_size: tuple[int, int] | None = None, state=None):
    """Run a model recurrently over a window batch ({key: [B, K, ...]}): ([B, K, 3, H, W], state).

    `state` carries what the model keeps between frames (the previous output for TemporalSR; the
    canvas too for stateful models); None starts without history.
    """
    out_size = out_size or tuple(batch["gt"].shape[-2:])
    if hasattr(model, "last_window"):
        model.last_window = []
    outputs = []
    for k in range(batch["lr"].shape[1]):
        output, state = model.step({key: batch[key][:, k] for key in FRAME_KEYS}, state, out_size)
        outputs.append(output)
    return torch.stack(outputs, dim=1), state
