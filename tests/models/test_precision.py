"""bf16 autocast leaves the sub-pixel path exact: grids, jitter, warps and the canvas stay fp32."""

import torch

from oss_cluster.models.canvas import empty_canvas, render_canvas, spawn, warp_canvas
from oss_cluster.models.precision import autocast
from oss_cluster.models.temporal import derive_disocclusion, gather_subgrid, jitter_resample, subpixel_offset, warp_previous

BF16 = torch.bfloat16


def frame(h=96, w=160, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"lr": torch.rand(1, 3, h, w, generator=g), "depth": 1 + torch.rand(1, 1, h, w, generator=g),
            "motion": (torch.rand(1, 2, h, w, generator=g) - 0.5) * 7.3, "jitter": torch.rand(1, 2, generator=g) - 0.5}


def both(function):
    """(fp32 result, result under CPU bf16 autocast) of function()."""
    reference = function()
    with autocast("cpu", BF16):
        mixed = function()
    return reference, mixed


def flat(value) -> list:
    return [t for v in value for t in flat(v)] if isinstance(value, tuple) else [value]


def assert_exact(reference, mixed):
    reference, mixed = flat(reference), flat(mixed)
    assert len(reference) == len(mixed)
    for a, b in zip(reference, mixed):
        assert b.dtype == torch.float32, "geometry left fp32 under autocast"
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)


def test_resampling_and_warps_are_fp32_exact_under_bf16_autocast():
    f = frame()
    out = (192, 320)
    assert_exact(*both(lambda: jitter_resample(f["lr"], f["jitter"], out)))
    assert_exact(*both(lambda: jitter_resample(f["lr"], f["jitter"], out, mode="nearest")))
    assert_exact(*both(lambda: subpixel_offset(f["jitter"], (96, 160), out)))
    previous = torch.rand(1, 3, *out)
    assert_exact(*both(lambda: warp_previous(previous, f["motion"])))
    assert_exact(*both(lambda: gather_subgrid(previous, (96, 160), 2)))
    assert_exact(*both(lambda: derive_disocclusion(f["depth"], f["motion"], f["depth"].roll(3, -1))))
    # Images that come out of a bf16 network (features, the history) are still sampled at fp32 positions.
    rounded = previous.to(BF16)
    with autocast("cpu", BF16):
        mixed = warp_previous(rounded, f["motion"]), jitter_resample(f["lr"].to(BF16), f["jitter"], out)
    assert_exact((warp_previous(rounded.float(), f["motion"]),
                  jitter_resample(f["lr"].to(BF16).float(), f["jitter"], out)), (mixed[0], mixed[1]))


def test_canvas_geometry_is_fp32_exact_under_bf16_autocast():
    f = frame(48, 64)
    size = (96, 128)
    seeds = torch.rand(1, 5, 48, 64)

    def canvas():
        state = empty_canvas(1, 512, 8, size, "cpu")
        state = spawn(state, torch.ones(1, 1, 48, 64), f["lr"], f["depth"], f["jitter"], seeds,
                      limit=512, motion=f["motion"])
        moved = warp_canvas(state, f["motion"])
        image, coverage = render_canvas(moved, advance=0.5)
        return moved.means, moved.chol, image, coverage

    assert_exact(*both(canvas))


def test_a_bf16_grid_would_misplace_samples_by_a_visible_fraction_of_a_pixel():
    # Why the above matters: the same output-pixel centres in bf16 are off by up to half a pixel at 640 px.
    width = 640
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width * 2 - 1
    error_px = (xs.to(BF16).float() - xs).abs().max() * width / 2
    assert error_px > 0.25
