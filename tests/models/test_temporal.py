import pytest
import torch

from oss_cluster.cost.flops import step_inputs
from oss_cluster.models import build_model
from oss_cluster.models.accumulate import HISTORY_CHANNELS
from oss_cluster.models.temporal import (
    TIE_EPS, _output_grid, derive_disocclusion, gather_subgrid, jitter_resample, nearest_taps, run_window, subpixel_offset,
    warp_previous,
)


def test_warp_by_constant_motion_is_a_shift():
    previous = torch.rand(1, 3, 16, 24)
    motion = torch.zeros(1, 2, 8, 12)
    motion[:, 0] = 1.0  # each pixel's surface was 1 render px = 2 output px to the right
    warped, valid = warp_previous(previous, motion)
    assert torch.allclose(warped[..., :, :-2], previous[..., :, 2:], atol=1e-6)
    assert valid[..., :, :-2].all() and not valid[..., :, -1:].any()


def test_warp_respects_disocclusion():
    previous = torch.rand(1, 3, 16, 24)
    disocclusion = torch.zeros(1, 1, 8, 12)
    disocclusion[..., 2, 3] = 1
    warped, valid = warp_previous(previous, torch.zeros(1, 2, 8, 12), disocclusion)
    assert valid[0, 0, 4:6, 6:8].sum() == 0 and valid.sum() == 16 * 24 - 4
    assert warped[..., 4:6, 6:8].abs().sum() == 0
    assert torch.allclose(warped[..., :4, :], previous[..., :4, :], atol=1e-6)


def grid_sample_reference(image, jitter, out_size, mode):
    """What jitter_resample computed before it was made separable: grid_sample at the jittered output centres."""
    batch, _, h, w = image.shape
    grid = _output_grid(batch, out_size, image.device)  # the warp's own output-centre grid
    jitter = jitter + TIE_EPS if mode == "nearest" else jitter
    shift = torch.stack([jitter[:, 0] * 2 / w, jitter[:, 1] * 2 / h], dim=-1)
    return torch.nn.functional.grid_sample(image, grid - shift[:, None, None, :], mode=mode, padding_mode="border",
                                           align_corners=False)


@pytest.mark.parametrize("size_in,size_out", [((6, 8), (9, 12)), ((9, 16), (12, 21)), ((7, 5), (14, 10)),
                                              ((6, 9), (18, 27)), ((12, 16), (6, 8))])
def test_separable_resampling_equals_grid_sample(size_in, size_out):
    """Rows-and-columns gathers give grid_sample's nearest, bilinear and bicubic (border padding) at ratios 1.5,
    4/3, 2, 3 and 1/2, per-image jitters up to half a pixel either way; the 3x3 nearest taps equal the nearest
    resampling of the replicate-padded shifted copies they replace."""
    torch.manual_seed(0)
    image = torch.rand(3, 2, *size_in)
    jitter = torch.tensor([[0.5, -0.5], [-0.5, 0.5], [0.17, -0.31]])
    for mode, tolerance in (("nearest", 0.0), ("bilinear", 2e-6), ("bicubic", 4e-6)):
        torch.testing.assert_close(jitter_resample(image, jitter, size_out, mode),
                                   grid_sample_reference(image, jitter, size_out, mode), rtol=0, atol=tolerance)
    h, w = size_in
    padded = torch.nn.functional.pad(image, (1, 1, 1, 1), mode="replicate")
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            shifted = padded[:, :, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
            assert torch.equal(nearest_taps(image, jitter, size_out)[:, :, dx + 1, dy + 1],
                               grid_sample_reference(shifted, jitter, size_out, "nearest"))


def test_jitter_resample_places_samples_where_they_were_taken():
    # A horizontal ramp sampled at jittered positions: the resampled image is the ramp at output centres.
    h, w, ratio = 6, 8, 2
    jitter = torch.tensor([[0.25, -0.125]])
    xs = torch.arange(w) + 0.5 + jitter[0, 0]
    lr = xs.view(1, 1, 1, w).expand(1, 1, h, w).clone()
    out = jitter_resample(lr, jitter, (h * ratio, w * ratio))
    centres = (torch.arange(w * ratio) + 0.5) / ratio
    inside = (centres > xs[0]) & (centres < xs[-1])
    assert torch.allclose(out[0, 0, 3][inside], centres[inside], atol=1e-5)


@pytest.mark.parametrize("ratio,size_in,size_out", [(2.0, (24, 32), (48, 64)), (1.5, (720, 1280), (1080, 1920)),
                                                    (1.333, (1080, 1920), (1440, 2560))])
def test_head_gives_exact_output_sizes(ratio, size_in, size_out):
    """Exact sizes for any ratio; the large cases run through the head alone (cheap) at full size."""
    h, w = size_in
    model = build_model("student_pico").eval()
    inputs = step_inputs((h, w), size_out)
    with torch.no_grad():
        if h > 100:
            reprojected = model.reproject(*inputs)
            out, buffer = model.head(torch.zeros(1, 8, h, w), inputs[0], inputs[2], reprojected, model.accumulator)
        else:
            out, buffer = model(*inputs)
    assert out.shape == (1, 3, *size_out) and buffer.shape == (1, HISTORY_CHANNELS, *size_out)


def test_head_uses_the_jitter():
    model = build_model("student_pico")
    torch.nn.init.normal_(model.head.to_subgrid.weight, std=0.1)
    args = list(step_inputs((8, 8), (12, 12)))
    first, _ = model(*args)
    args[2] = torch.tensor([[0.3, -0.2]])
    assert (model(*args)[0] - first).abs().max() > 1e-3


def test_untrained_model_is_the_taau_anchor():
    """A zero-initialised head is TAAU's accumulation: same outputs over a sequence with history."""
    from oss_cluster.baselines import TAAU
    from tests.models.test_registry import tiny_batch

    batch = tiny_batch(frames=4, motion_scale=0.5)
    out_size = tuple(batch["gt"].shape[-2:])
    with torch.no_grad():
        ours, _ = run_window(build_model("student_standard").eval(), batch)
        taau, _ = TAAU().run(batch, out_size)
    assert torch.allclose(ours.clamp(0, 1), taau, atol=1e-5)


def test_disocclusion_is_derived_from_depth_and_motion():
    h, w = 6, 8
    depth = torch.full((1, 1, h, w), 10.0)
    previous_depth = torch.full((1, 1, h, w), 10.0)
    previous_depth[..., 2:4, 2:4] = 2.0  # last frame something near stood there
    motion = torch.zeros(1, 2, h, w)
    motion[..., :, 0] = -1.0  # the first column came from outside the frame
    derived = derive_disocclusion(depth, motion, previous_depth)[0, 0]
    assert derived[2:4, 2:4].all() and derived[:, 0].all()
    assert derived.sum() == 4 + h  # nothing else: the far background stayed visible
    # A surface that is itself near (the occluder, now moved) is not disoccluded by its own depth.
    assert not derive_disocclusion(torch.full((1, 1, h, w), 2.0), torch.zeros(1, 2, h, w), previous_depth).any()
    # A previous depth of 0 means no previous frame: everything is new.
    assert derive_disocclusion(depth, torch.zeros(1, 2, h, w), torch.zeros(1, 1, h, w)).all()


def test_derived_disocclusion_matches_the_renderer_mask():
    """On synthetic game motion, the derived mask finds most of what the renderer knows, and little else."""
    from oss_cluster.data.synth import SynthScene

    scene = SynthScene((48, 64), 2.0, seed=4, objects=5)
    frames = [scene.render_frame(k) for k in range(6)]
    both = derived_only = oracle_only = 0
    for before, now in zip(frames, frames[1:]):
        derived = derive_disocclusion(torch.from_numpy(now.depth)[None], torch.from_numpy(now.motion)[None],
                                      torch.from_numpy(before.depth)[None])[0, 0].bool()
        oracle = torch.from_numpy(now.disocclusion[0]).bool()
        both += int((derived & oracle).sum())
        derived_only += int((derived & ~oracle).sum())
        oracle_only += int((~derived & oracle).sum())
    assert both > 0
    assert both / (both + derived_only) > 0.9 and both / (both + oracle_only) > 0.7


def test_subgrid_and_offsets():
    image = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(gather_subgrid(image, (2, 2), 2), torch.nn.functional.pixel_unshuffle(image, 2))
    offset = subpixel_offset(torch.zeros(1, 2), (2, 2), (4, 4))
    assert torch.allclose(offset[0, 0, 0], torch.tensor([-0.25, 0.25, -0.25, 0.25]))
