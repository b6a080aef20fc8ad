import numpy as np
import torch
import torch.nn.functional as F

from oss_cluster.baselines import TAAU, _rgb, _ycocg, bicubic
from oss_cluster.data.schema import jitter_offset
from oss_cluster.metrics import psnr


def test_bicubic_sizes_and_antialias():
    x = torch.rand(1, 3, 10, 12)
    assert bicubic(x, (15, 18)).shape == (1, 3, 15, 18)
    small = bicubic(x, (5, 6))
    assert small.shape == (1, 3, 5, 6)
    assert torch.allclose(small, F.interpolate(x, size=(5, 6), mode="bicubic", antialias=True).clamp(0, 1))


def sample_sequence(frames=16, h=16, w=16, ratio=2, detail=2):
    """A static scene sampled once per render pixel at each frame's Halton jitter.

    Its detail is at 1/`detail` of the output resolution: 2 puts it at the render resolution's
    Nyquist limit, where a single frame cannot resolve it and accumulated jittered frames can.
    """
    torch.manual_seed(0)
    H, W = h * ratio, w * ratio
    truth = F.interpolate(torch.rand(1, 3, H // detail, W // detail), size=(H, W), mode="bilinear", align_corners=False)
    lrs, jitters = [], []
    for k in range(frames):
        jx, jy = jitter_offset(k, ratio)
        xs = (torch.arange(w) + 0.5 + float(jx)) * ratio / W * 2 - 1
        ys = (torch.arange(h) + 0.5 + float(jy)) * ratio / H * 2 - 1
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None]
        lrs.append(F.grid_sample(truth, grid, mode="bilinear", align_corners=False, padding_mode="border"))
        jitters.append(torch.tensor([[float(jx), float(jy)]]))
    batch = {"lr": torch.stack(lrs, 1), "jitter": torch.stack(jitters, 1), "depth": torch.ones(1, frames, 1, h, w),
             "motion": torch.zeros(1, frames, 2, h, w), "disocclusion": torch.zeros(1, frames, 1, h, w)}
    return batch, truth


def test_jitter_aware_bicubic_beats_plain():
    batch, truth = sample_sequence(frames=4, detail=4)
    k = 3
    aware = bicubic(batch["lr"][:, k], truth.shape[-2:], batch["jitter"][:, k])
    plain = bicubic(batch["lr"][:, k], truth.shape[-2:])
    assert psnr(aware, truth, border=4) > psnr(plain, truth, border=4)


def test_taau_accumulates_jittered_samples():
    batch, truth = sample_sequence(detail=4)
    outputs, state = TAAU().run(batch, truth.shape[-2:])
    assert psnr(outputs[:, -1], truth, 4) > psnr(outputs[:, 0], truth, 4) + 1.0
    assert float(state["count"].max()) <= 16.0


def test_taau_resolves_detail_a_single_frame_cannot():
    batch, truth = sample_sequence(detail=2)  # detail at the render resolution's Nyquist limit
    outputs, _ = TAAU().run(batch, truth.shape[-2:])
    single = bicubic(batch["lr"][:, -1], truth.shape[-2:], batch["jitter"][:, -1])
    assert psnr(outputs[:, -1], truth, 4) > psnr(single, truth, 4) + 1.0


def test_taau_drops_history_where_depth_says_disoccluded():
    batch, truth = sample_sequence(frames=2)
    taau = TAAU()
    frame = {k: v[:, 1] for k, v in batch.items()}
    stale = {"colour": torch.ones_like(truth), "count": torch.full_like(truth[:, :1], 16.0),
             "depth": torch.ones(1, 1, 16, 16)}
    stale["depth"][..., :8, :] = 0.2  # the previous frame saw something much nearer in the top half
    out, _ = taau.step(frame["lr"], frame["depth"], frame["jitter"], frame["motion"], stale, truth.shape[-2:])
    current, _, _, _ = taau.upsample_current(frame["lr"], frame["jitter"], truth.shape[-2:])
    assert torch.allclose(out[..., :16, :], current[..., :16, :].clamp(0, 1), atol=1e-6)  # history dropped
    assert not torch.allclose(out[..., 16:, :], current[..., 16:, :], atol=1e-3)  # history used (clamped)


def test_taau_clamps_stale_history_into_the_neighbourhood():
    batch, truth = sample_sequence(frames=2)
    frame = {k: v[:, 1] for k, v in batch.items()}
    stale = {"colour": torch.zeros_like(truth), "count": torch.full_like(truth[:, :1], 16.0), "depth": torch.ones(1, 1, 16, 16)}
    out, _ = TAAU().step(frame["lr"], frame["depth"], frame["jitter"], frame["motion"], stale, truth.shape[-2:])
    _, _, low, high = TAAU().upsample_current(frame["lr"], frame["jitter"], truth.shape[-2:])
    ycocg = _ycocg(out)
    assert (ycocg[:, 0] >= low[:, 0] - 1e-5).all()  # black history was pulled up to the local colour box
    assert torch.allclose(_rgb(_ycocg(truth)), truth, atol=1e-6)
