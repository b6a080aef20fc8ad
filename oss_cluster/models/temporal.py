"""What every temporal model and baseline shares: the history warp, derived disocclusion, jitter-aware
resampling, the arbitrary-ratio reconstruction head (learned corrections to the temporal
accumulation of accumulate.py), and the recurrent step interface.

Conventions (see oss_cluster/data/schema.py): render pixel (i, j) was sampled at render coordinates
(j + 0.5 + jx, i + 0.5 + jy); output pixel (Y, X) has its centre at render coordinates
((X + 0.5) w / W, (Y + 0.5) h / H). Motion vectors point from the current pixel to where its surface
was in the previous frame, in render pixels. Colours are sRGB-encoded in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _output_grid(batch: int, out_size: tuple[int, int], device) -> torch.Tensor:
    """Normalised (align_corners=False) coordinates of output pixel centres: [B, H, W, 2] (x, y), always
    fp32 (bf16 would misplace them by up to 2^-8 of the image: see models/precision.py)."""
    height, width = out_size
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
    return grid.unsqueeze(0).expand(batch, height, width, 2)


# Nearest-sample lookups are nudged by this much (render pixels) so that an output pixel exactly between
# two samples always takes the lower one: torch and ONNX Runtime break exact ties differently.
TIE_EPS = 1.0 / 128


def _source_positions(length_in: int, length_out: int, shift: torch.Tensor) -> torch.Tensor:
    """[B, length_out]: where each output pixel centre falls on one axis of the source, in sample indices
    (sample i at i), for a source whose samples are shifted by `shift` [B] of its pixels."""
    centres = (torch.arange(length_out, device=shift.device, dtype=torch.float32) + 0.5) * length_in / length_out
    return centres[None, :] - 0.5 - shift[:, None]


def _axis_taps(positions: torch.Tensor, length: int, mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(source indices [B, K, L] clamped into the axis, weights [B, K, L] or None for nearest) of grid_sample's
    1-D kernel with border padding at `positions` [B, L]: nearest 1 tap, bilinear 2, bicubic 4 (A = -0.75)."""
    if mode == "bicubic":  # the taps are clamped, not the position (as grid_sample does)
        first = torch.floor(positions)
        t = positions - first
        a = -0.75
        near = lambda d: ((a + 2) * d - (a + 3)) * d * d + 1  # noqa: E731  |d| <= 1
        far = lambda d: ((a * d - 5 * a) * d + 8 * a) * d - 4 * a  # noqa: E731  1 < |d| < 2
        weights = torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=1)
        offsets = torch.arange(-1, 3, device=positions.device, dtype=torch.float32).view(1, 4, 1)
    else:
        positions = positions.clamp(0, length - 1)
        if mode == "nearest":
            return torch.floor(positions + 0.5).long()[:, None], None
        first = torch.floor(positions)
        t = positions - first
        weights = torch.stack([1 - t, t], dim=1)
        offsets = torch.arange(0, 2, device=positions.device, dtype=torch.float32).view(1, 2, 1)
    return (first[:, None] + offsets).clamp(0, length - 1).long(), weights


def gather_rows(image: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """image [B, C, h, w], index [B, K, H] (row numbers, per image) -> [B, C, K, H, w]: one Gather of whole rows
    over the flattened images (block copies; ONNX Runtime gathers along the last axis element by element, so
    columns are gathered as the rows of a transposed image)."""
    b, c, h, w = image.shape
    k, rows = index.shape[1], index.shape[2]
    first_row = torch.arange(b * c, device=image.device).view(b, c, 1, 1) * h
    flat = (first_row + index[:, None]).reshape(-1)
    return image.reshape(b * c * h, w).index_select(0, flat).view(b, c, k, rows, w)


def resample_separable(image: torch.Tensor, out_size: tuple[int, int], shift: torch.Tensor,
                       mode: str = "bilinear") -> torch.Tensor:
    """grid_sample (border padding, align_corners=False) of `image` [B, C, h, w] at the output pixel centres,
    the source's samples shifted by `shift` [B, 2] (x, y) of its pixels -> [B, C, H, W], fp32.

    The sample positions of a uniform grid with one shift per image are separable, so this is two 1-D passes
    (columns at the source's height, then rows), each a Gather of whole rows and a weighted sum of the taps:
    the same result as grid_sample (to float rounding) without its per-pixel coordinate arithmetic, which made
    grid_sample most of a student's time (benchmarks/bench_student.py).
    """
    h, w = image.shape[-2:]
    height, width = out_size
    shift = shift.float()
    cols, col_weights = _axis_taps(_source_positions(w, width, shift[:, 0]), w, mode)
    rows, row_weights = _axis_taps(_source_positions(h, height, shift[:, 1]), h, mode)
    out = gather_rows(image.float().transpose(2, 3), cols)  # [B, C, K, W, h]
    out = out[:, :, 0] if col_weights is None else (out * col_weights[:, None, :, :, None]).sum(2)
    out = gather_rows(out.transpose(2, 3), rows)  # [B, C, K, H, W]
    return out[:, :, 0] if row_weights is None else (out * row_weights[:, None, :, :, None]).sum(2)


def nearest_taps(image: torch.Tensor, jitter: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """The 3x3 jittered samples around every output pixel's nearest one: [B, C, 3 (dx), 3 (dy), H, W], offsets
    -1, 0, 1 in render pixels, replicated at the borders. Ties go to the lower sample (TIE_EPS), as in
    `jitter_resample(..., mode="nearest")` and `subpixel_offset`."""
    b, c, h, w = image.shape
    height, width = out_size
    jitter = jitter.float() + TIE_EPS
    neighbours = torch.arange(-1, 2, device=image.device).view(1, 3, 1)
    cols, _ = _axis_taps(_source_positions(w, width, jitter[:, 0]), w, "nearest")
    rows, _ = _axis_taps(_source_positions(h, height, jitter[:, 1]), h, "nearest")
    out = gather_rows(image.float().transpose(2, 3), (cols + neighbours).clamp(0, w - 1))  # [B, C, 3, W, h]
    out = gather_rows(out.reshape(b, c * 3, width, h).transpose(2, 3), (rows + neighbours).clamp(0, h - 1))
    return out.view(b, c, 3, 3, height, width)


def jitter_resample(image: torch.Tensor, jitter: torch.Tensor, out_size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resample a jittered render [B, C, h, w] to the output grid [B, C, H, W] (fp32).

    Sample (i, j) lies at render coordinates (j + 0.5 + jx, i + 0.5 + jy), so each output pixel is
    looked up at its own position minus the jitter; `jitter` is [B, 2] in render pixels of `image`.
    With mode "nearest", ties go to the lower sample (see TIE_EPS and `subpixel_offset`). Border padding,
    grid_sample's kernels (bicubic A = -0.75), computed separably (`resample_separable`).
    """
    jitter = jitter.float()
    if mode == "nearest":
        jitter = jitter + TIE_EPS
    return resample_separable(image, out_size, jitter, mode)


def upsample_motion(motion: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """Motion [B, 2, h, w] in render pixels to [B, 2, H, W] in output pixels (nearest: no blending across edges)."""
    h, w = motion.shape[-2:]
    height, width = out_size
    up = F.interpolate(motion.float(), size=out_size, mode="nearest")
    # Sizes stay symbolic (no torch.tensor of Python floats) so ONNX export keeps height/width dynamic.
    return torch.cat([up[:, :1] * (width / w), up[:, 1:] * (height / h)], dim=1)


def warp_previous(previous: torch.Tensor, motion: torch.Tensor, disocclusion: torch.Tensor | None = None,
                  mode: str = "bilinear"):
    """Warp the previous output to the current frame by the motion vectors.

    previous: [B, C, H, W] output of the last frame; motion: [B, 2, h, w] render pixels,
    current -> previous; disocclusion: [B, 1, h, w] (1 = newly visible) or None; mode: grid_sample's
    resampling ("bilinear", or "bicubic" for a sharper history).
    Returns (warped [B, C, H, W], valid [B, 1, H, W]); warped is zero where not valid (disoccluded
    or fetched from outside the previous frame). Every model and baseline uses this one warp.
    """
    batch, _, height, width = previous.shape
    flow = upsample_motion(motion, (height, width))
    grid = _output_grid(batch, (height, width), previous.device)
    source = grid + torch.stack([flow[:, 0] * 2 / width, flow[:, 1] * 2 / height], dim=-1)
    warped = F.grid_sample(previous.float(), source, mode=mode, padding_mode="border", align_corners=False)
    valid = ((source.abs() <= 1).all(dim=-1, keepdim=True)).permute(0, 3, 1, 2).float()
    if disocclusion is not None:
        valid = valid * (1 - F.interpolate(disocclusion.float(), size=(height, width), mode="nearest"))
    return warped * valid, valid


# A surface counts as hidden in the previous frame when what that frame saw at its reprojected
# position is this much nearer (relative depth): slack for depth sampled at jittered positions and
# for dolly moves, which change a surface's depth between frames.
DISOCCLUSION_DEPTH_TOLERANCE = 0.05


def derive_disocclusion(depth: torch.Tensor, motion: torch.Tensor, previous_depth: torch.Tensor,
                        tolerance: float = DISOCCLUSION_DEPTH_TOLERANCE) -> torch.Tensor:
    """Disocclusion from what a game has: [B, 1, h, w], 1 where a render pixel's surface was not visible last frame.

    depth, previous_depth: [B, 1, h, w] planar depth of this frame and of the previous one (any
    units; a previous depth <= 0 means "no previous frame"); motion: [B, 2, h, w] render pixels,
    current -> previous. A pixel is disoccluded when its motion leads outside the previous frame, or
    when the previous depth at the reprojected position is nearer than its own depth by more than
    `tolerance` (something stood in front of it). The previous depth is read as the farthest of the
    samples around that position that bilinear interpolation would use (one where it lands on a
    sample), so a foreground edge next to it is not taken for an occluder.
    The one disocclusion every model, TAAU, loss, evaluation and the Serve endpoint use: the
    renderer's exact mask (the `disocclusion` data field) is for diagnostics only.
    """
    batch, _, h, w = depth.shape
    motion, depth, previous_depth = motion.float(), depth.float(), previous_depth.float()
    xs = torch.arange(w, device=depth.device, dtype=torch.float32).view(1, 1, w) + 0.5 + motion[:, 0]
    ys = torch.arange(h, device=depth.device, dtype=torch.float32).view(1, h, 1) + 0.5 + motion[:, 1]
    u, v = xs - 0.5, ys - 0.5  # in sample indices: sample i sits at i
    u0, v0 = torch.floor(u), torch.floor(v)
    right, down = (u - u0) > TIE_EPS, (v - v0) > TIE_EPS  # does the position reach the next sample?

    def at(di: int, dj: int) -> torch.Tensor:  # previous depth of sample (v0 + di, u0 + dj), by its exact centre
        grid = torch.stack([(u0 + dj + 0.5) / w * 2 - 1, (v0 + di + 0.5) / h * 2 - 1], dim=-1)
        return F.grid_sample(previous_depth, grid, mode="nearest", padding_mode="border",
                             align_corners=False)

    before = at(0, 0)
    before = torch.where(right[:, None], torch.maximum(before, at(0, 1)), before)
    before = torch.where(down[:, None], torch.maximum(before, at(1, 0)), before)
    before = torch.where((right & down)[:, None], torch.maximum(before, at(1, 1)), before)
    outside = ((xs < 0) | (xs >= w) | (ys < 0) | (ys >= h))[:, None]
    hidden = (before < depth * (1 - tolerance)) | (before <= 0)
    return (outside | hidden).to(depth.dtype)


def gather_subgrid(image: torch.Tensor, in_size: tuple[int, int], sub: int) -> torch.Tensor:
    """Bring an output-resolution image [B, C, H, W] onto the render grid as [B, C*sub*sub, h, w].

    Render pixel (i, j) gets the image sampled at sub x sub evenly spaced points inside it (an
    arbitrary-ratio space-to-depth), so the network sees the history at full detail.
    """
    h, w = in_size
    sampled = resample_separable(image, (h * sub, w * sub), image.new_zeros(image.shape[0], 2))
    return F.pixel_unshuffle(sampled, sub)


def subpixel_axes(jitter: torch.Tensor, in_size: tuple[int, int], out_size: tuple[int, int]):
    """(dx [B, W], dy [B, H]): the offset (render pixels, in (-0.5, 0.5]) of each output column's and row's centre
    from the nearest sample, the one `jitter_resample(..., mode="nearest")` picks (ties go to the lower sample)."""
    h, w = in_size
    jitter = jitter.float()
    dx = _source_positions(w, out_size[1], jitter[:, 0])
    dy = _source_positions(h, out_size[0], jitter[:, 1])
    return dx - torch.floor(dx - TIE_EPS + 0.5), dy - torch.floor(dy - TIE_EPS + 0.5)


def subpixel_offset(jitter: torch.Tensor, in_size: tuple[int, int], out_size: tuple[int, int]) -> torch.Tensor:
    """[B, 2, H, W]: `subpixel_axes` on every output pixel."""
    height, width = out_size
    dx, dy = subpixel_axes(jitter, in_size, out_size)
    return torch.stack([dx[:, None, :].expand(-1, height, width), dy[:, :, None].expand(-1, height, width)], dim=1)


class ReconstructionHead(nn.Module):
    """Render-resolution features + temporal accumulation -> output image of any size (any SR ratio).

    The analytic part is TAAU's accumulation (models/accumulate.py): spatial and sample estimates of
    the current frame, the reprojected and rectified history with its accumulated weight. A conv
    (3x3, or 1x1 for students) predicts, per render pixel, a sub x sub grid of colour residuals and
    two gain logits; the grid is resampled to the output pixels at the jittered sample positions (so
    sub-pixel placement follows the jitter the network also sees). The blend is TAAU's with the
    history weight and the sample confidence each scaled by 2 sigmoid(gain) (this accumulation is
    the history buffer), and the output adds the residual to it: a zero-initialised head is TAAU,
    and learning moves it from there.
    `refine_hidden` > 0 adds a per-output-pixel MLP over [colour, history, valid, sub-pixel offset]
    (teachers can afford it; students keep it 0). residual=False predicts only the two gains: the
    network steers the accumulation and makes no colour of its own (the Pico student: measured, its
    residual did not raise PSNR and cost FLIP).
    """

    def __init__(self, in_channels: int, sub: int = 2, refine_hidden: int = 0, temporal: bool = True, kernel: int = 3,
                 residual: bool = True):
        super().__init__()
        self.sub, self.temporal, self.residual = sub, temporal, residual
        self.channels = 5 if residual else 2  # [residual RGB,] history-weight gain, sample-confidence gain
        self.to_subgrid = nn.Conv2d(in_channels, self.channels * sub * sub, kernel, padding=kernel // 2)
        nn.init.zeros_(self.to_subgrid.weight)  # start as TAAU: no residual, gains 2 sigmoid(0) = 1
        nn.init.zeros_(self.to_subgrid.bias)
        self.refine = None
        if refine_hidden:
            self.refine = nn.Sequential(
                nn.Conv2d(3 + 3 + 1 + 2, refine_hidden, 1), nn.GELU(), nn.Conv2d(refine_hidden, 3, 1)
            )
            nn.init.zeros_(self.refine[2].weight)
            nn.init.zeros_(self.refine[2].bias)

    def forward(self, features, lr, jitter, reprojected, accumulator):
        """features [B, C, h, w]; lr [B, 3, h, w]; jitter [B, 2]; reprojected: accumulate.Reprojected
        -> (output [B, 3, H, W], history buffer [B, 4, H, W])."""
        out_size = tuple(reprojected.spatial.shape[-2:])
        grid = F.pixel_shuffle(self.to_subgrid(features), self.sub)
        predicted = jitter_resample(grid, jitter * self.sub, out_size)
        gains = 2 * torch.sigmoid(predicted[:, -2:])
        count_gain = gains[:, :1] if self.temporal else 0
        residual = predicted[:, :3] if self.residual else None
        output, buffer = accumulator.blend(reprojected, count_gain, gains[:, 1:], residual)
        if self.refine is not None:  # like the residual, a correction of the output, not of the history
            offset = subpixel_offset(jitter, tuple(lr.shape[-2:]), out_size)
            output = output + self.refine(torch.cat([output, reprojected.history, reprojected.valid, offset], dim=1))
        return output, buffer


class TemporalSR(nn.Module):
    """Base of every SR model: one recurrent step from the current frame and its own history.

    forward(lr [B,3,h,w], depth [B,1,h,w], jitter [B,2], motion [B,2,h,w], previous_depth [B,1,h,w],
            previous [B,4,H,W]) -> (output [B,3,H,W], history buffer [B,4,H,W])
    `previous` is the history buffer the last step returned (its output and accumulated sample weight)
    and `previous_depth` the last frame's depth: what a game keeps. Disocclusion is derived from them
    (`derive_disocclusion`); the output size is the buffer's size. For the first frame pass zeros
    for both (a previous depth <= 0 means "no history"). With temporal=False (single-image mode) the
    history is never used.
    Subclasses implement `features(x)` mapping the assembled input [B, in_channels, h, w] to
    [B, head_channels, h, w].
    """

    def __init__(self, temporal: bool = True, sub: int = 2, head_channels: int = 32, refine_hidden: int = 0,
                 head_kernel: int = 3, residual: bool = True):
        from .accumulate import Accumulator

        super().__init__()
        self.temporal, self.sub = temporal, sub
        # lr, disparity, jitter, motion, then the rectified history (3 sub^2), its validity and its
        # accumulated weight (sub^2 each) on the render grid
        self.in_channels = 3 + 1 + 2 + 2 + 5 * sub * sub if temporal else 3 + 2
        self.head = ReconstructionHead(head_channels, sub, refine_hidden, temporal, head_kernel, residual)
        self.accumulator = Accumulator()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def assemble(self, lr, depth, jitter, motion, reprojected) -> torch.Tensor:
        h, w = lr.shape[-2:]
        jitter_planes = jitter[:, :, None, None].expand(-1, 2, h, w)
        if not self.temporal:
            return torch.cat([lr, jitter_planes], dim=1)
        disparity = 1.0 / (1.0 + depth.clamp(min=0))  # bounded whatever the depth units
        # Motion in render px, squashed to (-1, 1): how far the history travelled (a moving history
        # was resampled and is less trustworthy), bounded whatever the speed.
        speed = torch.sqrt(motion[:, :1] ** 2 + motion[:, 1:] ** 2)
        valid = reprojected.valid
        return torch.cat([
            lr, disparity, jitter_planes, motion / (1.0 + speed),
            gather_subgrid(reprojected.history * valid, (h, w), self.sub), gather_subgrid(valid, (h, w), self.sub),
            gather_subgrid(reprojected.count / self.accumulator.max_history, (h, w), self.sub),
        ], dim=1)

    def step(self, frame: dict, state, out_size: tuple[int, int]):
        """One recurrent step on a frame dict (FRAME_KEYS); state = (history buffer, previous depth), None at the start."""
        if state is None:
            from .accumulate import empty_history

            state = empty_history(frame["lr"], out_size)
        previous, previous_depth = state
        output, buffer = self(frame["lr"], frame["depth"], frame["jitter"], frame["motion"], previous_depth, previous)
        return output, (buffer, frame["depth"])

    def reproject(self, lr, depth, jitter, motion, previous_depth, previous):
        """The accumulation inputs for this frame (no history in single-image mode)."""
        if not self.temporal:
            previous_depth = torch.zeros_like(previous_depth)
        return self.accumulator.reproject(lr, depth, jitter, motion, previous_depth, previous)

    def forward(self, lr, depth, jitter, motion, previous_depth, previous):
        reprojected = self.reproject(lr, depth, jitter, motion, previous_depth, previous)
        x = self.assemble(lr, depth, jitter, motion, reprojected)
        return self.head(self.features(x), lr, jitter, reprojected, self.accumulator)


# What a model reads of each frame: what a game gives it (the `disocclusion` data field is the
# renderer's oracle mask, kept for diagnostics only).
FRAME_KEYS = ("lr", "depth", "jitter", "motion")


def run_window(model: nn.Module, batch: dict, out_size: tuple[int, int] | None = None, state=None):
    """Run a model recurrently over a window batch ({key: [B, K, ...]}): ([B, K, 3, H, W], state).

    `state` carries what the model keeps between frames (its history buffer and the previous depth;
    the canvas too for stateful models); None starts without history.
    """
    out_size = out_size or tuple(batch["gt"].shape[-2:])
    if hasattr(model, "last_window"):
        model.last_window = []
    outputs = []
    for k in range(batch["lr"].shape[1]):
        output, state = model.step({key: batch[key][:, k] for key in FRAME_KEYS}, state, out_size)
        outputs.append(output)
    return torch.stack(outputs, dim=1), state
