"""Rasterizer speed: the tiled torch backend against a naive dense evaluation (and gsplat where CUDA is).

    python benchmarks/bench_raster.py [--counts 10000 100000] [--size 640x480]

Scene: N image-space Gaussians with random means over the frame, 0.5-3 px standard deviations and
random opacities (what a canvas holds). Reported per backend: forward and forward+backward time,
and Gaussian-pixel evaluations per second (tiled: Gaussian-tile pairs x 256 pixels; dense: N x
pixels). The dense evaluation of a whole 640x480 frame would need N x H x W memory, so it is timed
on a band of rows of the same scene and scaled to the frame (the band is printed).
"""

from __future__ import annotations

import argparse
import time

import torch

from oss_cluster.models.raster import (
    bin_to_tiles, covariance_to_conic, gsplat_available, radii_from_covariance, rasterize, rasterize_dense,
)


def scene(n: int, size: tuple[int, int], device: str, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    height, width = size
    means = torch.rand(n, 2, generator=g) * torch.tensor([float(width), float(height)])
    sigma = torch.rand(n, 2, generator=g) * 2.5 + 0.5
    angle = torch.rand(n, generator=g) * 3.14159
    rot = torch.stack([torch.stack([angle.cos(), -angle.sin()], -1), torch.stack([angle.sin(), angle.cos()], -1)], -2)
    cov = rot @ torch.diag_embed(sigma**2) @ rot.transpose(-1, -2)
    items = dict(means=means, conics=covariance_to_conic(cov), features=torch.rand(n, 3, generator=g),
                 opacities=torch.rand(n, generator=g) * 0.9 + 0.05, depths=torch.rand(n, generator=g))
    return {k: v.to(device) for k, v in items.items()}


def timed(fn, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def forward_backward(render, inputs: dict) -> float:
    leaves = {k: (v.clone().requires_grad_(True) if k != "depths" else v) for k, v in inputs.items()}

    def run():
        image, _ = render(leaves)
        image.sum().backward()

    return timed(run)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--size", default="640x480")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    size = (height, width)
    for n in args.counts:
        inputs = scene(n, size, "cpu")
        radii = radii_from_covariance(torch.linalg.inv(torch.stack(
            [inputs["conics"][:, 0], inputs["conics"][:, 1], inputs["conics"][:, 1], inputs["conics"][:, 2]], -1
        ).view(-1, 2, 2)), inputs["opacities"])
        tiles, _, _, _ = bin_to_tiles(inputs["means"], radii, size, torch.argsort(inputs["depths"]))
        tiled_evals = tiles.numel() * 256

        def tiled(x):
            return rasterize(**x, size=size, backend="torch")

        forward = timed(lambda: tiled(inputs))
        both = forward_backward(tiled, inputs)
        rows = max(1, min(height, int(2e8 // (n * width * 40))))  # keep the dense band within memory
        band = {**inputs, "means": inputs["means"] - torch.tensor([0.0, height / 2 - rows / 2])}

        def dense(x):
            return rasterize_dense(**x, size=(rows, width))

        dense_forward = timed(lambda: dense(band), repeats=1) * height / rows
        dense_both = forward_backward(dense, band) * height / rows
        dense_evals = n * width * height
        print(f"N={n:,} at {width}x{height} (CPU)")
        print(f"  torch tiled: forward {forward:.3f} s, fwd+bwd {both:.3f} s, {tiled_evals / forward:.3e} Gaussian-px evals/s "
              f"({tiled_evals:,} evaluated)")
        print(f"  naive dense: forward {dense_forward:.3f} s, fwd+bwd {dense_both:.3f} s, {dense_evals / dense_forward:.3e} "
              f"Gaussian-px evals/s ({dense_evals:,} needed; timed on {rows} of {height} rows, scaled)")
        print(f"  frame time ratio dense/tiled: forward {dense_forward / forward:.1f}x, fwd+bwd {dense_both / both:.1f}x")
        ok, why = gsplat_available()
        if ok:
            cuda_inputs = scene(n, size, "cuda")
            gs_forward = timed(lambda: rasterize(**cuda_inputs, size=size, backend="gsplat"), repeats=3)
            ours_cuda = timed(lambda: rasterize(**cuda_inputs, size=size, backend="torch"), repeats=3)
            print(f"  CUDA: gsplat forward {gs_forward * 1e3:.2f} ms, torch tiled on the same GPU {ours_cuda * 1e3:.2f} ms "
                  f"(ratio {ours_cuda / gs_forward:.1f}x)")
        else:
            print(f"  gsplat: skipped ({why})")


if __name__ == "__main__":
    main()
