"""Differentiable image-space 2D Gaussian rasterization: gsplat on CUDA, the project's own tiled torch backend elsewhere.

Conventions (gsplat's): pixel (y, x) has its centre at (x + 0.5, y + 0.5); `conics` hold the upper
triangle (a, b, c) of the inverse covariance, sigma = 0.5 (a dx^2 + c dy^2) + b dx dy;
alpha = min(opacity * exp(-sigma), 0.99), and a Gaussian with alpha < 1/255 (or sigma < 0) is
skipped at that pixel. Compositing is front-to-back "over" in ascending `depths` order:
colour = sum_i f_i alpha_i T_i with T_i = prod_{j<i} (1 - alpha_j); a pixel stops taking Gaussians
once T would fall to 1e-4 or below. The returned alpha is 1 - T_final; a background, when given, fills
the remaining T.

The torch backend never materialises an N x H x W tensor: Gaussians are binned to 16 x 16 tiles by
their 3-sigma extent and evaluated tile by tile, in chunks of tiles.
"""

from __future__ import annotations

import math

import torch

TILE = 16
ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4
CHUNK_PAIRS = 8192  # tile x Gaussian slots evaluated at once (each over 256 pixels)


def covariance_to_conic(cov: torch.Tensor) -> torch.Tensor:
    """[N, 2, 2] covariance -> [N, 3] (a, b, c) upper triangle of its inverse."""
    a, b, c = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    det = (a * c - b * b).clamp(min=1e-12)
    return torch.stack([c / det, -b / det, a / det], dim=-1)


def radii_from_covariance(cov: torch.Tensor, opacities: torch.Tensor | None = None) -> torch.Tensor:
    """[N] extent in pixels along the larger axis: 3 sigma, or with `opacities` the exact distance
    beyond which alpha < 1/255 (sqrt(2 ln(255 o)) sigma, at most 3.33 sigma), so binning drops nothing."""
    a, b, c = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    mid = 0.5 * (a + c)
    sigma = torch.sqrt((mid + torch.sqrt((mid * mid - (a * c - b * b)).clamp(min=0.0))).clamp(min=0.0))
    if opacities is None:
        return torch.ceil(3.0 * sigma)
    extent = torch.sqrt(2.0 * torch.log((opacities * 255.0).clamp(min=1.0)))
    return torch.ceil(extent * sigma)


def _conic_covariance(conics: torch.Tensor) -> torch.Tensor:
    """[N, 3] conics -> [N, 2, 2] covariances (the closed-form inverse; a degenerate conic stays finite)."""
    a, b, c = conics[:, 0], conics[:, 1], conics[:, 2]
    det = (a * c - b * b).clamp(min=1e-12)
    return torch.stack([c / det, -b / det, -b / det, a / det], -1).view(-1, 2, 2)


def gaussian_alpha(offset: torch.Tensor, conic: torch.Tensor, opacity: torch.Tensor) -> torch.Tensor:
    """alpha of Gaussians at pixel offsets; offset [..., 2] (pixel - mean), conic [..., 3], opacity [...]."""
    dx, dy = offset[..., 0], offset[..., 1]
    sigma = 0.5 * (conic[..., 0] * dx * dx + conic[..., 2] * dy * dy) + conic[..., 1] * dx * dy
    alpha = torch.clamp(opacity * torch.exp(-sigma), max=ALPHA_MAX)
    return torch.where((sigma < 0) | (alpha < ALPHA_MIN), torch.zeros_like(alpha), alpha)


def composite(alpha: torch.Tensor, features: torch.Tensor):
    """Front-to-back compositing along axis -2 of alpha [..., K, P] with features [..., K, C].

    Returns (colour [..., P, C], coverage [..., P]) where coverage = 1 - final transmittance.
    """
    transmit = torch.cumprod(1.0 - alpha, dim=-2)
    before = torch.cat([torch.ones_like(transmit[..., :1, :]), transmit[..., :-1, :]], dim=-2)
    weight = alpha * before * (transmit > T_MIN)  # gsplat stops before T would reach 1e-4
    return torch.einsum("...kp,...kc->...pc", weight, features), weight.sum(dim=-2)


def _finish(colour, coverage, background):
    if background is not None:
        colour = colour + (1 - coverage)[..., None] * background
    return colour


def rasterize_dense(means, conics, features, opacities, size, depths=None, background=None):
    """Reference: every Gaussian at every pixel (N x H x W). For tests and benchmarks on small scenes."""
    height, width = size
    order = torch.argsort(depths, stable=True) if depths is not None else torch.arange(means.shape[0], device=means.device)
    ys, xs = torch.meshgrid(torch.arange(height, device=means.device), torch.arange(width, device=means.device), indexing="ij")
    pixels = torch.stack([xs, ys], dim=-1).reshape(1, -1, 2).to(means.dtype) + 0.5
    offset = pixels - means[order][:, None, :]
    alpha = gaussian_alpha(offset, conics[order][:, None, :], opacities[order][:, None])
    colour, coverage = composite(alpha, features[order])
    colour = _finish(colour, coverage, background)
    return colour.T.reshape(-1, height, width), coverage.reshape(1, height, width)


def bin_to_tiles(means, radii, size, order):
    """(tile index, Gaussian index) pairs for every tile a Gaussian's 3-sigma square touches, sorted by tile then depth."""
    height, width = size
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    means, radii = means[order].detach(), radii[order].detach()
    x0 = torch.floor((means[:, 0] - radii) / TILE).clamp(0, tiles_x - 1).long()
    x1 = torch.floor((means[:, 0] + radii) / TILE).clamp(0, tiles_x - 1).long()
    y0 = torch.floor((means[:, 1] - radii) / TILE).clamp(0, tiles_y - 1).long()
    y1 = torch.floor((means[:, 1] + radii) / TILE).clamp(0, tiles_y - 1).long()
    visible = ((means[:, 0] + radii >= 0) & (means[:, 0] - radii < width) & (means[:, 1] + radii >= 0)
               & (means[:, 1] - radii < height) & (radii > 0))
    span_x = x1 - x0 + 1
    counts = torch.where(visible, span_x * (y1 - y0 + 1), torch.zeros_like(span_x))
    rank = torch.repeat_interleave(torch.arange(means.shape[0], device=means.device), counts)
    local = torch.arange(rank.shape[0], device=means.device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    tile = (y0[rank] + local // span_x[rank]) * tiles_x + x0[rank] + local % span_x[rank]
    key = tile * means.shape[0] + rank  # rank is depth order: sorting by key sorts by tile, then depth
    sorted_key = torch.sort(key).values
    return sorted_key // means.shape[0], order[sorted_key % means.shape[0]], tiles_x, tiles_y


def rasterize_torch(means, conics, features, opacities, size, depths=None, radii=None, background=None):
    """Tiled torch backend (CPU or GPU). Shapes as `rasterize`."""
    height, width = size
    n, channels = features.shape
    device, dtype = means.device, means.dtype
    if radii is None:
        radii = radii_from_covariance(_conic_covariance(conics).detach(), opacities.detach())
    order = torch.argsort(depths, stable=True) if depths is not None else torch.arange(n, device=device)
    tiles, gaussians, tiles_x, tiles_y = bin_to_tiles(means, radii, size, order)
    colour_tiles = torch.zeros(tiles_x * tiles_y, TILE * TILE, channels, device=device, dtype=dtype)
    coverage_tiles = torch.zeros(tiles_x * tiles_y, TILE * TILE, device=device, dtype=dtype)
    if tiles.numel():
        unique, counts = torch.unique_consecutive(tiles, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        local = torch.stack(torch.meshgrid(torch.arange(TILE, device=device), torch.arange(TILE, device=device),
                                           indexing="ij"), -1).reshape(-1, 2).flip(-1).to(dtype) + 0.5  # (x, y)
        colours, coverages, done = [], [], []
        begin = 0
        counts_list = counts.tolist()
        while begin < len(counts_list):  # chunks of tiles with at most CHUNK_PAIRS padded slots
            end, widest = begin + 1, counts_list[begin]
            while end < len(counts_list) and max(widest, counts_list[end]) * (end - begin + 1) <= CHUNK_PAIRS:
                widest = max(widest, counts_list[end])
                end += 1
            slots = torch.arange(widest, device=device)
            index = starts[begin:end, None] + slots[None, :]
            valid = slots[None, :] < counts[begin:end, None]
            ids = gaussians[index.clamp(max=gaussians.shape[0] - 1)]
            tile_ids = unique[begin:end]
            origin = torch.stack([tile_ids % tiles_x, tile_ids // tiles_x], -1).to(dtype) * TILE  # [T, 2]
            pixels = origin[:, None, :] + local[None]  # [T, 256, 2]
            offset = pixels[:, None, :, :] - means[ids][:, :, None, :]  # [T, K, 256, 2]
            alpha = gaussian_alpha(offset, conics[ids][:, :, None, :], opacities[ids][:, :, None])
            alpha = alpha * valid[:, :, None]
            colour, coverage = composite(alpha, features[ids] * valid[:, :, None])
            colours.append(colour)
            coverages.append(coverage)
            done.append(tile_ids)
            begin = end
        done_ids = torch.cat(done)
        colour_tiles = colour_tiles.index_copy(0, done_ids, torch.cat(colours))
        coverage_tiles = coverage_tiles.index_copy(0, done_ids, torch.cat(coverages))
    colour_tiles = _finish(colour_tiles, coverage_tiles, background)
    image = colour_tiles.view(tiles_y, tiles_x, TILE, TILE, channels).permute(4, 0, 2, 1, 3)
    image = image.reshape(channels, tiles_y * TILE, tiles_x * TILE)[:, :height, :width]
    coverage = coverage_tiles.view(tiles_y, tiles_x, TILE, TILE).permute(0, 2, 1, 3).reshape(tiles_y * TILE, tiles_x * TILE)
    return image, coverage[None, :height, :width]


def gsplat_available() -> tuple[bool, str]:
    """Whether the gsplat CUDA backend can run here, and if not, why."""
    if not torch.cuda.is_available():
        return False, "CUDA is not available (gsplat's rasterizer is CUDA-only)"
    try:
        from gsplat.cuda._wrapper import rasterize_to_pixels  # noqa: F401
    except Exception as err:  # pragma: no cover - depends on the GPU machine
        return False, f"gsplat CUDA extension unavailable: {err}"
    return True, ""


def rasterize_gsplat(means, conics, features, opacities, size, depths=None, radii=None, background=None):
    """gsplat's CUDA path: isect_tiles -> isect_offset_encode -> rasterize_to_pixels."""
    from gsplat.cuda._wrapper import isect_offset_encode, isect_tiles, rasterize_to_pixels

    height, width = size
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    if radii is None:
        radii = radii_from_covariance(_conic_covariance(conics).detach(), opacities.detach())
    depths = depths if depths is not None else torch.arange(means.shape[0], device=means.device, dtype=means.dtype)
    radii2 = radii.to(torch.int32)[None, :, None].expand(1, -1, 2).contiguous()
    _, isect_ids, flatten_ids = isect_tiles(means[None].contiguous(), radii2, depths[None].contiguous(), TILE, tiles_x, tiles_y)
    offsets = isect_offset_encode(isect_ids, 1, tiles_x, tiles_y)
    colours, alphas = rasterize_to_pixels(
        means[None].contiguous(), conics[None].contiguous(), features[None].contiguous(), opacities[None].contiguous(),
        width, height, TILE, offsets, flatten_ids, backgrounds=None if background is None else background[None],
    )
    return colours[0].permute(2, 0, 1), alphas[0].permute(2, 0, 1)


def rasterize(means, conics, features, opacities, size, depths=None, radii=None, background=None, backend="auto"):
    """Rasterize N image-space Gaussians.

    means [N, 2] output pixels; conics [N, 3]; features [N, C]; opacities [N] in [0, 1]; size (H, W);
    depths [N] (compositing order, ascending; None = index order); radii [N] 3-sigma pixels (None:
    from the conics and opacities); background [C] or None. Returns (image [C, H, W], alpha [1, H, W]).
    backend: "auto" (gsplat where CUDA is, else torch), "torch", "gsplat" or "dense".
    """
    if backend == "auto":
        backend = "gsplat" if means.is_cuda and gsplat_available()[0] else "torch"
    if backend == "gsplat":
        ok, why = gsplat_available()
        if not ok:
            raise RuntimeError(f"gsplat backend requested but {why}")
        return rasterize_gsplat(means, conics, features, opacities, size, depths, radii, background)
    if backend == "dense":
        return rasterize_dense(means, conics, features, opacities, size, depths, background)
    if backend != "torch":
        raise ValueError(f"unknown rasterizer backend {backend!r} (auto, torch, gsplat, dense)")
    return rasterize_torch(means, conics, features, opacities, size, depths, radii, background)
