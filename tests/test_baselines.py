import pytest
import torch
import torch.nn.functional as F

from oss_cluster.baselines import TAAU, _rgb, _ycocg, bicubic
from oss_cluster.data.schema import jitter_offset
from oss_cluster.data.synth import synth_windows
from oss_cluster.metrics import psnr
from oss_cluster.models.accumulate import colour_box


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
    assert float(state["history"][:, 3].max()) <= 16.0  # accumulated sample weight, capped


def test_taau_resolves_detail_a_single_frame_cannot():
    batch, truth = sample_sequence(detail=2)  # detail at the render resolution's Nyquist limit
    outputs, _ = TAAU().run(batch, truth.shape[-2:])
    single = bicubic(batch["lr"][:, -1], truth.shape[-2:], batch["jitter"][:, -1])
    assert psnr(outputs[:, -1], truth, 4) > psnr(single, truth, 4) + 1.0


def _stale_state(truth, colour: float, depth: torch.Tensor):
    history = torch.cat([torch.full_like(truth, colour), torch.full_like(truth[:, :1], 16.0)], dim=1)
    return {"history": history, "depth": depth}


def test_taau_drops_history_where_depth_says_disoccluded():
    batch, truth = sample_sequence(frames=2)
    frame = {k: v[:, 1] for k, v in batch.items()}
    depth = torch.ones(1, 1, 16, 16)
    depth[..., :8, :] = 0.2  # the previous frame saw something much nearer in the top half
    taau = TAAU()
    out, _ = taau.step(frame["lr"], frame["depth"], frame["jitter"], frame["motion"], _stale_state(truth, 1.0, depth),
                       truth.shape[-2:])
    fresh, _ = taau.step(frame["lr"], frame["depth"], frame["jitter"], frame["motion"], None, truth.shape[-2:])
    assert torch.allclose(out[..., :16, :], fresh[..., :16, :], atol=1e-6)  # history dropped: as with no history
    assert not torch.allclose(out[..., 16:, :], fresh[..., 16:, :], atol=1e-3)  # history used (clipped)


def test_taau_clips_stale_history_into_the_neighbourhood():
    batch, truth = sample_sequence(frames=2)
    frame = {k: v[:, 1] for k, v in batch.items()}
    accumulator = TAAU().accumulator
    history, depth = _stale_state(truth, 0.0, torch.ones(1, 1, 16, 16)).values()
    reprojected = accumulator.reproject(frame["lr"], frame["depth"], frame["jitter"], frame["motion"], depth, history)
    mean, spread = colour_box(frame["lr"], frame["jitter"], truth.shape[-2:])
    low = mean - accumulator.gamma_still * spread
    assert (_ycocg(reprojected.history)[:, 0] >= low[:, 0] - 1e-5).all()  # black history pulled up to the local box
    assert (reprojected.count < 16.0).any()  # and the clip lowered its weight (instability)
    assert torch.allclose(_rgb(_ycocg(truth)), truth, atol=1e-6)


def game_sequences(ratio: float, count: int = 4, frames: int = 24):
    """Held-out-style synthetic sequences with the default game-like motion, small enough for a test."""
    return list(synth_windows(frames * count, ratio, (48, 64), frames, frames, seed=3, first_sequence=50_000))


def test_taau_current_frame_alone_is_at_least_jittered_bicubic():
    taau = TAAU()
    with_taau = plain = 0.0
    for window in game_sequences(1.5, count=2, frames=8):
        for k in range(window.length):
            lr, gt = torch.from_numpy(window.lr[k : k + 1].astype("float32")), torch.from_numpy(window.gt[k : k + 1].astype("float32"))
            depth, jitter = torch.from_numpy(window.depth[k : k + 1]), torch.from_numpy(window.jitter[k : k + 1])
            out, _ = taau.step(lr, depth, jitter, torch.from_numpy(window.motion[k : k + 1]), None, gt.shape[-2:])
            with_taau += psnr(out, gt, 4)
            plain += psnr(bicubic(lr, gt.shape[-2:], jitter), gt, 4)
    assert with_taau >= plain


@pytest.mark.parametrize("ratio", [1.5, 2.0])
def test_taau_beats_bicubic_under_game_motion_in_the_steady_state(ratio):
    from oss_cluster.evaluate import score
    from oss_cluster.evaluate.methods import anchors

    result, _ = score(anchors(), game_sequences(ratio))
    assert result["taau"]["psnr_rgb"] > result["bicubic"]["psnr_rgb"] + 0.3
    assert result["taau"]["flip"] < result["bicubic"]["flip"]


def test_taau_never_reads_the_renderer_mask():
    window = game_sequences(1.5, count=1, frames=6)[0]
    batch = {k: torch.from_numpy(v.astype("float32"))[None] for k, v in window.arrays().items()}
    out_size = tuple(batch["gt"].shape[-2:])
    reference, _ = TAAU().run(batch, out_size)
    flipped, _ = TAAU().run({**batch, "disocclusion": 1 - batch["disocclusion"]}, out_size)
    removed, _ = TAAU().run({k: v for k, v in batch.items() if k != "disocclusion"}, out_size)
    assert torch.equal(flipped, reference) and torch.equal(removed, reference)


def test_depth_aware_forward_warp_keeps_the_nearest_surface_and_fills_holes_from_the_background():
    """A near square moving right over a far, still background: the naive warp blends the two where
    the square lands and leaves the old square where it uncovers; the depth-aware warp shows the
    square whole at its new place and background where it was."""
    from oss_cluster.baselines import forward_warp

    size = 16
    image = torch.zeros(1, 3, size, size)
    image[:, 0] = 1.0  # red background
    image[:, :, 4:8, 4:8] = torch.tensor([0.0, 1.0, 0.0])[:, None, None]  # green square
    depth = torch.full((1, 1, size, size), 10.0)
    depth[..., 4:8, 4:8] = 1.0
    motion = torch.zeros(1, 2, size, size)
    motion[:, 0, 4:8, 4:8] = -4.0  # the square was 4 px to the left: it moves right
    warped = forward_warp(image, motion, 1.0, depth)
    assert torch.allclose(warped[0, :, 4:8, 8:12], image[0, :, 4:8, 4:8])  # the square, moved, unblended
    assert torch.allclose(warped[0, :, 4:8, 4:8], image[0, :, 0:4, 0:4])  # uncovered: background
    naive = forward_warp(image, motion, 1.0)
    assert not torch.allclose(naive[0, :, 4:8, 4:8], image[0, :, 0:4, 0:4])  # the naive warp leaves the old square
