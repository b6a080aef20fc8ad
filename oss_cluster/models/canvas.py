"""Persistent Gaussian canvas (after GS-STVSR) with cross-attention fusion and OSS-FX extrapolation.

A canvas is a fixed-capacity set of image-space 2D Gaussians per batch item, carried across frames:
means in output pixels, covariance through a Cholesky factor, a feature vector (its first three
channels are colour), an opacity, a depth key for compositing order, and the last frame's
displacement (velocity) for extrapolation. Each frame:

1. warp (EWA): a Gaussian at p moves to q with q + m(q) = p, m the motion field (current ->
   previous, output pixels; solved by Newton steps). Its covariance is resampled with the local
   Jacobian of that mapping, J = (I + dm/dq)^-1: Sigma' = J Sigma J^T. The EWA low-pass (0.3 I, as
   gsplat adds) is applied when rendering, not accumulated in the state.
2. update: an MLP over each Gaussian's state and the SR network's features sampled at its mean
   predicts corrections; Gaussians that became transparent or left the screen are pruned; new ones
   are spawned at disoccluded render pixels into free slots, so the count never exceeds the cap.
3. render at any output size with `raster.rasterize`.

`CanvasSR` fuses the rendered canvas into an SR network by cross-attention (queries: SR features;
keys/values: canvas features around each render pixel), and a `composite_head` blends the network's
colour with the canvas colour; `fusion_magnitude` scales the canvas at the composite head's input.
`extrapolate(state, alpha)` advances the whole frame to t + alpha: the network's colour is
forward-warped by alpha x motion with a depth test and background hole filling (the depth-aware
baseline's warp), the canvas is rendered with every Gaussian advanced by alpha x its velocity
(Gaussians the canvas kept behind a foreground surface show where that surface uncovers them), and
the composite head blends the two as for the SR frame: no second network. Training pulls it toward
the ground truth at t + alpha (`fx_weight`, see `auxiliary_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register_model
from ..baselines import forward_warp
from .raster import covariance_to_conic, rasterize
from .student import Student
from .accumulate import empty_history
from .precision import full_precision
from .temporal import TemporalSR, derive_disocclusion, gather_subgrid

EWA_LOW_PASS = 0.3  # pixels^2 added to every covariance at render time (gsplat's value)
MIN_OPACITY = 0.02  # Gaussians fainter than this are pruned


@dataclass
class CanvasState:
    """Canvas tensors, batch-first with a fixed capacity N (inactive slots have active = False)."""

    means: torch.Tensor  # [B, N, 2] output pixels
    chol: torch.Tensor  # [B, N, 3] (log L11, L21, log L22): Sigma = L L^T, output pixels^2
    features: torch.Tensor  # [B, N, F]; features[..., :3] is colour (sRGB-encoded)
    opacity: torch.Tensor  # [B, N] logits
    depth: torch.Tensor  # [B, N] compositing key (scene depth, nearer first)
    velocity: torch.Tensor  # [B, N, 2] output pixels moved in the last warp (previous -> current)
    active: torch.Tensor  # [B, N] bool
    size: tuple[int, int]  # output (H, W)

    @property
    def count(self) -> torch.Tensor:
        return self.active.sum(dim=1)


@full_precision
def covariance(chol: torch.Tensor) -> torch.Tensor:
    """[..., 3] Cholesky parameters -> [..., 2, 2] covariance."""
    l11, l21, l22 = chol[..., 0].exp(), chol[..., 1], chol[..., 2].exp()
    zero = torch.zeros_like(l11)
    lower = torch.stack([torch.stack([l11, zero], -1), torch.stack([l21, l22], -1)], -2)
    return lower @ lower.transpose(-1, -2)


MAX_SIGMA = 32.0  # output pixels: no Gaussian's footprint grows beyond this (a folding warp could blow it up)


def cholesky_parameters(cov: torch.Tensor) -> torch.Tensor:
    """[..., 2, 2] covariance -> [..., 3] (log L11, L21, log L22), each factor within MAX_SIGMA."""
    l11 = cov[..., 0, 0].clamp(min=1e-8).sqrt().clamp(max=MAX_SIGMA)
    l21 = (cov[..., 0, 1] / l11).clamp(-MAX_SIGMA, MAX_SIGMA)
    l22 = (cov[..., 1, 1] - l21 * l21).clamp(min=1e-8).sqrt().clamp(max=MAX_SIGMA)
    return torch.stack([l11.log(), l21, l22.log()], -1)


@full_precision
def sample_at(field: torch.Tensor, points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear samples of a field [B, C, h, w] (any resolution) at output-pixel points [B, N, 2] -> [B, N, C]."""
    height, width = size
    grid = torch.stack([points[..., 0] / width * 2 - 1, points[..., 1] / height * 2 - 1], -1)[:, :, None, :]
    return F.grid_sample(field, grid, mode="bilinear", padding_mode="border", align_corners=False)[..., 0].transpose(1, 2)


@full_precision
def motion_at(motion: torch.Tensor, points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Motion (current -> previous) at output-pixel points, in output pixels: [B, N, 2]."""
    h, w = motion.shape[-2:]
    scale = points.new_tensor([size[1] / w, size[0] / h])
    return sample_at(motion, points, size) * scale


def inverse_2x2(matrix: torch.Tensor, min_det: float = 1e-3) -> torch.Tensor:
    """[..., 2, 2] inverses with the determinant kept at least `min_det` in size: a motion field that
    folds over itself (objects crossing, the edge of fast motion) makes I + dm/dq singular there."""
    a, b, c, d = matrix[..., 0, 0], matrix[..., 0, 1], matrix[..., 1, 0], matrix[..., 1, 1]
    det = a * d - b * c
    det = torch.where(det >= 0, det.clamp(min=min_det), det.clamp(max=-min_det))
    adjugate = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2)
    return adjugate / det[..., None, None]


@full_precision
def warp_canvas(state: CanvasState, motion: torch.Tensor, newton_steps: int = 2) -> CanvasState:
    """Move the canvas from the previous frame to the current one (EWA covariance resampling).

    motion: [B, 2, h, w] render pixels, current -> previous. Solves q + m(q) = p for every mean p.
    """
    p = state.means
    eye = torch.eye(2, device=p.device, dtype=p.dtype)

    def jacobian(q):  # d m / d q by central differences, one output pixel apart
        columns = []
        for axis in range(2):
            step = torch.zeros_like(q)
            step[..., axis] = 1.0
            columns.append((motion_at(motion, q + step, state.size) - motion_at(motion, q - step, state.size)) / 2)
        return torch.stack(columns, -1)  # [B, N, 2 (component), 2 (axis)]

    q = p - motion_at(motion, p, state.size)
    for _ in range(newton_steps):
        residual = q + motion_at(motion, q, state.size) - p
        q = q - (inverse_2x2(eye + jacobian(q)) @ residual[..., None])[..., 0]
    warp = inverse_2x2(eye + jacobian(q))  # dq/dp
    cov = warp @ covariance(state.chol) @ warp.transpose(-1, -2)
    return replace(state, means=q, chol=cholesky_parameters(cov), velocity=q - p)


def per_item(value, batch: int, like: torch.Tensor) -> torch.Tensor:
    """A float or a [B] tensor (e.g. one extrapolation time per batch item) as a [B] tensor."""
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).expand(batch)


@full_precision
def render_canvas(state: CanvasState, size: tuple[int, int] | None = None, advance: float | torch.Tensor = 0.0,
                  backend: str = "auto"):
    """Rasterize every batch item: ([B, F, H, W] features, [B, 1, H, W] coverage).

    `size` renders at another output size (means and covariances rescale); `advance` (a float or one
    per item, [B]) moves every Gaussian by advance x velocity first (OSS-FX).
    """
    height, width = size or state.size
    scale = state.means.new_tensor([width / state.size[1], height / state.size[0]])
    advance = per_item(advance, state.means.shape[0], state.means)[:, None, None]
    means = (state.means + advance * state.velocity) * scale
    cov = covariance(state.chol) * (scale[:, None] * scale[None, :]) + EWA_LOW_PASS * torch.eye(2, device=means.device)
    opacity = torch.sigmoid(state.opacity) * state.active
    images, coverages = [], []
    for b in range(means.shape[0]):
        keep = state.active[b]
        image, coverage = rasterize(means[b][keep], covariance_to_conic(cov[b][keep]), state.features[b][keep],
                                    opacity[b][keep], (height, width), depths=state.depth[b][keep], backend=backend)
        images.append(image)
        coverages.append(coverage)
    return torch.stack(images), torch.stack(coverages)


class CanvasUpdate(nn.Module):
    """Per-Gaussian corrections from its own state and the SR features sampled at its mean."""

    def __init__(self, features: int, context: int, hidden: int = 32):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(features + context + 3 + 2, hidden), nn.GELU(),
                                 nn.Linear(hidden, 2 + 3 + features + 1 + 2))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)
        self.features = features

    def forward(self, state: CanvasState, context: torch.Tensor) -> CanvasState:
        sampled = sample_at(context, state.means, state.size)
        inputs = torch.cat([state.features, sampled, state.chol, state.velocity.tanh()], -1)
        delta = self.mlp(inputs) * state.active[..., None]
        f = self.features
        return replace(state, means=state.means + delta[..., :2], chol=state.chol + 0.1 * delta[..., 2:5],
                       features=state.features + delta[..., 5:5 + f], opacity=state.opacity + delta[..., 5 + f],
                       velocity=state.velocity + delta[..., 6 + f:8 + f])


def empty_canvas(batch: int, capacity: int, features: int, size, device, dtype=torch.float32) -> CanvasState:
    zeros = lambda *shape: torch.zeros(batch, capacity, *shape, device=device, dtype=dtype)  # noqa: E731
    return CanvasState(zeros(2), zeros(3), zeros(features), zeros(), zeros(), zeros(2),
                       torch.zeros(batch, capacity, dtype=torch.bool, device=device), tuple(size))


def prune(state: CanvasState, margin: float = 8.0) -> CanvasState:
    """Deactivate Gaussians that are nearly transparent or off-screen (by more than `margin` pixels)."""
    height, width = state.size
    x, y = state.means[..., 0], state.means[..., 1]
    on_screen = (x > -margin) & (x < width + margin) & (y > -margin) & (y < height + margin)
    visible = torch.sigmoid(state.opacity) > MIN_OPACITY
    return replace(state, active=state.active & on_screen & visible)


@full_precision
def spawn(state: CanvasState, where: torch.Tensor, lr: torch.Tensor, depth: torch.Tensor, jitter: torch.Tensor,
          seed_features: torch.Tensor, limit: int, motion: torch.Tensor | None = None) -> CanvasState:
    """Fill free slots with Gaussians at render pixels where `where` [B, 1, h, w] is set.

    A new Gaussian sits at its pixel's jittered sample position, with a round footprint of one
    render pixel, the pixel's colour and depth, latent features from `seed_features` [B, F-3, h, w],
    opacity 0.5 and the pixel's motion as its velocity (`motion` [B, 2, h, w], current -> previous
    render pixels; zero without it). At most `limit` per item and frame, never more than the free slots.
    """
    batch, capacity = state.active.shape
    h, w = lr.shape[-2:]
    height, width = state.size
    sx, sy = width / w, height / h
    means, chol, feats = state.means.clone(), state.chol.clone(), state.features.clone()
    opacity, depths, velocity, active = state.opacity.clone(), state.depth.clone(), state.velocity.clone(), state.active.clone()
    pixel_features = torch.cat([lr, seed_features], 1).flatten(2).transpose(1, 2)  # [B, h*w, F]
    for b in range(batch):
        candidates = torch.nonzero(where[b, 0].flatten() > 0.5)[:, 0]
        free = torch.nonzero(~active[b])[:, 0]
        n = min(len(candidates), len(free), limit)
        if n == 0:
            continue
        if len(candidates) > n:  # spread the spawns evenly over the candidates
            candidates = candidates[torch.linspace(0, len(candidates) - 1, n, device=lr.device).long()]
        slots = free[:n]
        rows, cols = candidates // w, candidates % w
        means[b, slots, 0] = (cols.to(lr.dtype) + 0.5 + jitter[b, 0]) * sx
        means[b, slots, 1] = (rows.to(lr.dtype) + 0.5 + jitter[b, 1]) * sy
        chol[b, slots] = torch.stack([torch.full((n,), 0.5 * sx, device=lr.device).log(), torch.zeros(n, device=lr.device),
                                      torch.full((n,), 0.5 * sy, device=lr.device).log()], -1)
        feats[b, slots] = pixel_features[b, candidates]
        opacity[b, slots] = 0.0
        depths[b, slots] = depth[b, 0].flatten()[candidates]
        if motion is None:
            velocity[b, slots] = 0.0
        else:  # previous -> current displacement in output pixels: minus the motion vector
            velocity[b, slots] = -motion[b].flatten(1)[:, candidates].T * motion.new_tensor([sx, sy])
        active[b, slots] = True
    return CanvasState(means, chol, feats, opacity, depths, velocity, active, state.size)


class CanvasFusion(nn.Module):
    """Cross-attention: each render pixel's SR feature (query) attends to the canvas features found
    in and around it (its sub x sub grid in a 3 x 3 pixel neighbourhood: keys and values)."""

    def __init__(self, channels: int, canvas_features: int, dim: int = 16, sub: int = 2):
        super().__init__()
        self.sub, self.dim = sub, dim
        self.query = nn.Conv2d(channels, dim, 1)
        self.key = nn.Linear(canvas_features, dim)
        self.value = nn.Linear(canvas_features, dim)
        self.out = nn.Conv2d(dim, channels, 1)

    def forward(self, features: torch.Tensor, canvas: torch.Tensor) -> torch.Tensor:
        b, _, h, w = features.shape
        f = canvas.shape[1]
        grid = gather_subgrid(canvas, (h, w), self.sub)  # [B, F*s*s, h, w]
        neighbours = F.unfold(grid, 3, padding=1).view(b, f, self.sub * self.sub * 9, h * w)
        tokens = neighbours.permute(0, 3, 2, 1)  # [B, h*w, M, F]
        q = self.query(features).flatten(2).transpose(1, 2)[:, :, None, :]  # [B, h*w, 1, d]
        attended = F.scaled_dot_product_attention(q, self.key(tokens), self.value(tokens))  # [B, h*w, 1, d]
        return self.out(attended[:, :, 0].transpose(1, 2).reshape(b, self.dim, h, w))


class CompositeHead(nn.Module):
    """Blend the network's colour with the canvas colour, per output pixel.

    Input: [network colour, fusion_magnitude x canvas features, coverage]; output: the blended colour
    (1 - g) network + g canvas, with g a learned sigmoid gate times the canvas coverage. The rendered
    canvas is premultiplied by its coverage; its colour is divided back out before blending.
    """

    def __init__(self, canvas_features: int, hidden: int = 16, fusion_magnitude: float = 1.0):
        super().__init__()
        self.fusion_magnitude = fusion_magnitude
        self.gate = nn.Sequential(nn.Conv2d(3 + canvas_features + 1, hidden, 1), nn.GELU(), nn.Conv2d(hidden, 1, 1))
        with torch.no_grad():  # start trusting the canvas where it covers (sigmoid(1) = 0.73): a head
            self.gate[2].bias.fill_(1.0)  # that starts near zero tends to stay there (hypothesis H009)

    def forward(self, network: torch.Tensor, canvas: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
        scaled = self.fusion_magnitude * canvas
        gate = torch.sigmoid(self.gate(torch.cat([network, scaled, coverage], 1))) * coverage
        canvas_colour = canvas[:, :3] / coverage.clamp(min=1e-3)
        return network + gate * (canvas_colour - network)


class CanvasSR(TemporalSR):
    """SR network (a student-style U-Net) + persistent Gaussian canvas + fusion + composite head."""

    stateful = True

    def __init__(self, widths=(16, 32, 64), blocks=2, hidden=64, canvas_features=8, capacity=4096,
                 spawn_per_frame=2048, fusion_magnitude=1.0, aux_weight=0.5, fx_weight=1.0, backend="auto",
                 temporal=True, sub=2):
        super().__init__(temporal=temporal, sub=sub, head_channels=widths[0], head_kernel=1)
        self.config = dict(widths=tuple(widths), blocks=blocks, hidden=hidden, canvas_features=canvas_features,
                           capacity=capacity, spawn_per_frame=spawn_per_frame, fusion_magnitude=fusion_magnitude,
                           aux_weight=aux_weight, fx_weight=fx_weight, backend=backend, temporal=temporal, sub=sub)
        self.network = Student(widths=widths, blocks=blocks, hidden=hidden, separable=False, temporal=temporal, sub=sub)
        self.head = self.network.head
        self.seed = nn.Conv2d(widths[0], canvas_features - 3, 1)
        self.update = CanvasUpdate(canvas_features, widths[0])
        self.fusion = CanvasFusion(widths[0], canvas_features, sub=sub)
        self.composite_head = CompositeHead(canvas_features, fusion_magnitude=fusion_magnitude)
        self.last_window: list[dict] = []  # per-step canvas renders, for the auxiliary loss and logs

    def features(self, x):
        return self.network.features(x)

    def forward(self, *args):
        raise TypeError("CanvasSR is stateful: run it with step() / run_window()")

    def step(self, frame: dict, state, out_size):
        """One frame -> (output [B, 3, H, W], state = (the network's history buffer, CanvasState,
        network colour, depth, motion)).

        Disocclusion (where history is dropped and Gaussians spawn) is derived from the previous and
        current depth and the motion, like every other model's."""
        lr, depth, jitter, motion = (frame[k] for k in ("lr", "depth", "jitter", "motion"))
        batch = lr.shape[0]
        if state is None:
            previous, previous_depth = empty_history(lr, out_size)
            canvas = empty_canvas(batch, self.config["capacity"], self.config["canvas_features"], out_size, lr.device)
        else:
            previous, canvas, _, previous_depth, _ = state
            canvas = warp_canvas(canvas, motion)
        disocclusion = derive_disocclusion(depth, motion, previous_depth)
        reprojected = self.reproject(lr, depth, jitter, motion, previous_depth, previous)
        features = self.features(self.assemble(lr, depth, jitter, motion, reprojected))
        canvas = prune(self.update(canvas, features))
        canvas = spawn(canvas, disocclusion, lr, depth, jitter, self.seed(features), self.config["spawn_per_frame"], motion)
        rendered, coverage = render_canvas(canvas, backend=self.config["backend"])
        network, buffer = self.reconstruct(features, rendered, lr, jitter, reprojected)
        output = self.composite_head(network, rendered, coverage)
        state = (buffer, canvas, network, depth, motion)
        self.last_window.append({"canvas": rendered, "coverage": coverage, "output": output,
                                 "inputs": (features, lr, jitter, reprojected), "state": state})
        return output, state

    def reconstruct(self, features, rendered, lr, jitter, reprojected):
        """The network's colour and history buffer: canvas fused into the SR features by cross-attention, then the head."""
        return self.head(features + self.fusion(features, rendered), lr, jitter, reprojected, self.accumulator)

    def extrapolate(self, state, alpha: float | torch.Tensor) -> torch.Tensor:
        """OSS-FX: the frame at t + alpha (a float, or [B] one per item) [B, 3, H, W]: the network
        colour forward-warped by alpha x motion (nearest surface wins, holes filled from the
        background), the canvas rendered with every Gaussian advanced by alpha x velocity, blended
        by the same composite head (alpha = 0 reproduces the current output)."""
        _, canvas, network, depth, motion = state
        alpha = per_item(alpha, network.shape[0], network)
        advanced = forward_warp(network, motion, alpha, depth)
        rendered, coverage = render_canvas(canvas, advance=alpha, backend=self.config["backend"])
        return self.composite_head(advanced, rendered, coverage)

    def auxiliary_loss(self, batch: dict, eps: float = 1e-3) -> torch.Tensor:
        """Over the last window: aux_weight x Charbonnier of the canvas colour to the ground truth
        where the canvas covers (keeps the canvas a picture of the frame), plus fx_weight x
        Charbonnier of `extrapolate(state_k, alpha_k)` to the ground truth at t + alpha_k
        (batch["gt_future"], batch["future_alpha"]: alpha drawn from (0, 1] per frame by the data;
        frames with alpha 0 have no future and are skipped)."""
        return self.canvas_loss(batch, eps) + self.extrapolation_loss(batch, eps)

    def canvas_loss(self, batch: dict, eps: float = 1e-3) -> torch.Tensor:
        terms = []
        for k, record in enumerate(self.last_window):
            diff = record["canvas"][:, :3] - batch["gt"][:, k] * record["coverage"]  # both premultiplied
            terms.append(torch.sqrt(diff**2 + eps * eps).mean())
        loss = torch.stack(terms).mean() if terms else batch["gt"].new_zeros(())
        return self.config["aux_weight"] * loss

    def extrapolation_loss(self, batch: dict, eps: float = 1e-3) -> torch.Tensor:
        zero = batch["gt"].new_zeros(())
        if not self.config["fx_weight"] or "gt_future" not in batch:
            return zero
        terms = []
        for k, record in enumerate(self.last_window):
            alpha = batch["future_alpha"][:, k, 0]  # [B]
            has_future = (alpha > 0).to(alpha.dtype)
            if not bool(has_future.any()):
                continue
            extrapolated = self.extrapolate(record["state"], alpha)
            per_item_loss = torch.sqrt((extrapolated - batch["gt_future"][:, k]) ** 2 + eps * eps).mean(dim=(1, 2, 3))
            terms.append((per_item_loss * has_future).sum() / has_future.sum())
        return self.config["fx_weight"] * torch.stack(terms).mean() if terms else zero

    def contribution(self) -> float:
        """Mean |output - output with the canvas zeroed (fusion and composite)| over the last window."""
        values = []
        with torch.no_grad():
            for record in self.last_window:
                features, *rest = record["inputs"]
                empty = torch.zeros_like(record["canvas"])
                zeroed = self.composite_head(self.reconstruct(features, empty, *rest)[0], empty,
                                             torch.zeros_like(record["coverage"]))
                values.append(float((record["output"] - zeroed).abs().mean()))
        return sum(values) / max(len(values), 1)


register_model("canvas", CanvasSR)
