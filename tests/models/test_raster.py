import pytest
import torch

from oss_cluster.models.raster import (
    bin_to_tiles, covariance_to_conic, gsplat_available, radii_from_covariance, rasterize,
)


def random_scene(n=80, size=(40, 56), channels=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    height, width = size
    means = torch.rand(n, 2, generator=g) * torch.tensor([width + 10.0, height + 10.0]) - 5
    scales = torch.rand(n, 2, generator=g) * 4 + 0.5
    angle = torch.rand(n, generator=g) * 3.14
    rot = torch.stack([torch.stack([angle.cos(), -angle.sin()], -1), torch.stack([angle.sin(), angle.cos()], -1)], -2)
    cov = rot @ torch.diag_embed(scales**2) @ rot.transpose(-1, -2)
    return dict(means=means, conics=covariance_to_conic(cov), features=torch.rand(n, channels, generator=g),
                opacities=torch.rand(n, generator=g) * 0.9 + 0.05, depths=torch.rand(n, generator=g), size=size)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiled_torch_backend_matches_dense_evaluation(seed):
    scene = random_scene(seed=seed)
    image, alpha = rasterize(**scene, backend="torch")
    dense_image, dense_alpha = rasterize(**scene, backend="dense")
    assert image.shape == (4, 40, 56) and alpha.shape == (1, 40, 56)
    assert (image - dense_image).abs().max() < 1e-5 and (alpha - dense_alpha).abs().max() < 1e-5


def test_conventions_pixel_centre_and_alpha_cap():
    # One opaque, tiny Gaussian centred on pixel (2, 3)'s centre: alpha there is capped at 0.99.
    scene = dict(means=torch.tensor([[3.5, 2.5]]), conics=covariance_to_conic(torch.eye(2)[None] * 0.01),
                 features=torch.ones(1, 1), opacities=torch.ones(1), size=(8, 8))
    image, alpha = rasterize(**scene, backend="torch")
    assert abs(alpha[0, 2, 3].item() - 0.99) < 1e-6 and alpha[0, 2, 4] == 0  # next pixel: below 1/255, skipped


def test_front_to_back_order_by_depth():
    cov = torch.eye(2)[None].repeat(2, 1, 1) * 4.0
    scene = dict(means=torch.tensor([[8.0, 8.0], [8.0, 8.0]]), conics=covariance_to_conic(cov),
                 features=torch.tensor([[1.0, 0.0], [0.0, 1.0]]), opacities=torch.tensor([0.9, 0.9]), size=(16, 16))
    near_first, _ = rasterize(**scene, depths=torch.tensor([0.0, 1.0]), backend="torch")
    far_first, _ = rasterize(**scene, depths=torch.tensor([1.0, 0.0]), backend="torch")
    assert near_first[0, 7, 7] > near_first[1, 7, 7] and far_first[1, 7, 7] > far_first[0, 7, 7]


def test_background_fills_remaining_transmittance():
    scene = random_scene(n=5)
    image, alpha = rasterize(**scene, background=torch.ones(4), backend="torch")
    plain, _ = rasterize(**scene, backend="torch")
    assert torch.allclose(image, plain + (1 - alpha), atol=1e-6)


def test_gradients_reach_every_input():
    scene = random_scene(n=30)
    leaves = {k: scene[k].clone().requires_grad_(True) for k in ("means", "conics", "features", "opacities")}
    image, _ = rasterize(**{**scene, **leaves}, backend="torch")
    (image * torch.linspace(0, 1, image.numel()).view_as(image)).sum().backward()
    for name, leaf in leaves.items():
        assert leaf.grad is not None and leaf.grad.abs().sum() > 0, name


def test_binning_covers_exactly_the_touched_tiles():
    means = torch.tensor([[8.0, 8.0], [40.0, 8.0]])
    tiles, gaussians, tiles_x, tiles_y = bin_to_tiles(means, torch.tensor([4.0, 20.0]), (32, 64), torch.arange(2))
    assert (tiles_x, tiles_y) == (4, 2)
    pairs = sorted(zip(tiles.tolist(), gaussians.tolist()))
    assert (0, 0) in pairs and sum(1 for _, g in pairs if g == 0) == 1
    assert sorted(t for t, g in pairs if g == 1) == [1, 2, 3, 5, 6, 7]


def test_radii_are_opacity_aware():
    cov = torch.eye(2)[None] * 4.0
    assert radii_from_covariance(cov).item() == 6.0
    assert radii_from_covariance(cov, torch.tensor([1.0])).item() == 7.0  # sqrt(2 ln 255) * 2 = 6.66
    assert radii_from_covariance(cov, torch.tensor([0.003])).item() == 0.0  # never visible


@pytest.mark.skipif(not gsplat_available()[0], reason=gsplat_available()[1] or "gsplat available")
def test_parity_with_gsplat():  # pragma: no cover - needs CUDA
    scene = {k: (v.cuda() if torch.is_tensor(v) else v) for k, v in random_scene(n=500, size=(64, 96)).items()}
    ours, our_alpha = rasterize(**scene, backend="torch")
    theirs, their_alpha = rasterize(**scene, backend="gsplat")
    assert (ours - theirs).abs().max() < 1e-3 and (our_alpha - their_alpha).abs().max() < 1e-3


def test_requesting_gsplat_without_cuda_is_a_clear_error():
    if gsplat_available()[0]:
        pytest.skip("CUDA present")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        rasterize(**random_scene(n=3), backend="gsplat")
