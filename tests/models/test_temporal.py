import pytest
import torch

from oss_cluster.models import build_model
from oss_cluster.models.temporal import gather_subgrid, jitter_resample, subpixel_offset, warp_previous


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
    if h > 100:
        model = build_model("student_pico").eval()
        features = torch.zeros(1, 8, h, w)
        previous = torch.zeros(1, 3, *size_out)
        out = model.head(features, torch.rand(1, 3, h, w), torch.zeros(1, 2), previous, previous[:, :1])
    else:
        model = build_model("student_pico").eval()
        out = model(torch.rand(1, 3, h, w), torch.rand(1, 1, h, w), torch.zeros(1, 2), torch.zeros(1, 2, h, w),
                    torch.ones(1, 1, h, w), torch.zeros(1, 3, *size_out))
    assert out.shape == (1, 3, *size_out)


def test_head_uses_the_jitter():
    model = build_model("student_pico")
    torch.nn.init.normal_(model.head.to_subgrid.weight, std=0.1)
    args = [torch.rand(1, 3, 8, 8), torch.rand(1, 1, 8, 8), torch.zeros(1, 2), torch.zeros(1, 2, 8, 8),
            torch.ones(1, 1, 8, 8), torch.zeros(1, 3, 12, 12)]
    first = model(*args)
    args[2] = torch.tensor([[0.3, -0.2]])
    assert (model(*args) - first).abs().max() > 1e-3


def test_subgrid_and_offsets():
    image = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(gather_subgrid(image, (2, 2), 2), torch.nn.functional.pixel_unshuffle(image, 2))
    offset = subpixel_offset(torch.zeros(1, 2), (2, 2), (4, 4))
    assert torch.allclose(offset[0, 0, 0], torch.tensor([-0.25, 0.25, -0.25, 0.25]))
