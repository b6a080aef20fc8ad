import numpy as np
import torch

from oss_cluster.data.schema import Window
from oss_cluster.data.synth import SynthScene
from oss_cluster.models import build_model
from oss_cluster.models.canvas import (
    CanvasState, cholesky_parameters, covariance, empty_canvas, render_canvas, spawn, warp_canvas,
)
from oss_cluster.models.temporal import run_window

SIZE = (32, 48)  # output (H, W); render is half of it


def some_canvas(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(1, n, 2, generator=g) * torch.tensor([SIZE[1] - 16.0, SIZE[0] - 16.0]) + 8
    cov = torch.diag_embed(torch.rand(1, n, 2, generator=g) * 3 + 1)
    return CanvasState(means, cholesky_parameters(cov), torch.rand(1, n, 4, generator=g), torch.zeros(1, n),
                       torch.rand(1, n, generator=g), torch.zeros(1, n, 2), torch.ones(1, n, dtype=torch.bool), SIZE)


def test_cholesky_round_trip():
    cov = torch.tensor([[[4.0, 1.0], [1.0, 2.0]]])
    assert torch.allclose(covariance(cholesky_parameters(cov)), cov, atol=1e-6)


def test_constant_flow_warp_translates_the_render():
    state = some_canvas()
    motion = torch.zeros(1, 2, SIZE[0] // 2, SIZE[1] // 2)
    motion[:, 0], motion[:, 1] = 1.5, -1.0  # render px: output shift (3, -2)
    before, _ = render_canvas(state)
    warped = warp_canvas(state, motion)
    after, _ = render_canvas(warped)
    assert torch.allclose(warped.means, state.means - torch.tensor([3.0, -2.0]), atol=1e-5)
    assert torch.allclose(warped.velocity, torch.tensor([-3.0, 2.0]).expand_as(warped.velocity), atol=1e-5)
    # after(x) == before(x + m): compare the interior, away from the frame edge
    assert (after[..., 4:-4, 4:-8] - before[..., 2:-6, 7:-5]).abs().max() < 1e-4


def test_scaling_flow_scales_covariances_by_s_squared():
    s = 1.25  # zoom in about the origin: current = s * previous
    state = some_canvas()
    state = CanvasState(state.means * 0.5 + 4, *[getattr(state, k) for k in ("chol", "features", "opacity", "depth",
                                                                               "velocity", "active")], SIZE)
    h, w = SIZE[0] // 2, SIZE[1] // 2
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    # motion (current -> previous) in render px at render centres: x_prev - x = x (1/s - 1)
    motion = torch.stack([xs, ys])[None] * (1 / s - 1)
    warped = warp_canvas(state, motion)
    assert torch.allclose(warped.means, state.means * s, atol=1e-3)
    assert torch.allclose(covariance(warped.chol), covariance(state.chol) * s * s, rtol=1e-3, atol=1e-4)


def test_gradients_reach_every_gaussian_parameter():
    state = some_canvas()
    leaves = {k: getattr(state, k).clone().requires_grad_(True) for k in ("means", "chol", "features", "opacity")}
    rendered, _ = render_canvas(CanvasState(**{**state.__dict__, **leaves}))
    (rendered * torch.linspace(0, 1, rendered.numel()).view_as(rendered)).sum().backward()
    for name, leaf in leaves.items():
        assert leaf.grad is not None and leaf.grad.abs().sum() > 0, name


def test_extrapolate_zero_equals_current_and_advances_with_velocity():
    state = some_canvas()
    state = CanvasState(**{**state.__dict__, "velocity": torch.full((1, 40, 2), 2.0)})
    now, _ = render_canvas(state)
    assert torch.equal(render_canvas(state, advance=0.0)[0], now)
    half, _ = render_canvas(state, advance=0.5)
    assert (half[..., 4:-4, 4:-4] - now[..., 3:-5, 3:-5]).abs().max() < 1e-4


def test_spawn_fills_only_free_slots():
    state = empty_canvas(1, 10, 4, SIZE, "cpu")
    where = torch.ones(1, 1, 16, 24)
    grown = spawn(state, where, torch.rand(1, 3, 16, 24), torch.ones(1, 1, 16, 24), torch.zeros(1, 2),
                  torch.rand(1, 1, 16, 24), limit=100)
    assert int(grown.count) == 10


def sequence(frames, seed=4):
    scene = SynthScene(SIZE, 2.0, seed=seed, objects=3)
    window = Window.from_frames([scene.render_frame(k) for k in range(frames)], "s", 0, "synth")
    return {k: torch.from_numpy(v.astype(np.float32))[None] for k, v in window.arrays().items()}


def test_count_cap_holds_over_60_frames_and_model_is_consistent():
    model = build_model("canvas", capacity=300, spawn_per_frame=200, widths=(8, 16, 32), hidden=32).eval()
    batch = sequence(60)
    state, counts = None, []
    with torch.no_grad():
        for k in range(60):
            frame = {key: batch[key][:, k] for key in ("lr", "depth", "jitter", "motion", "disocclusion")}
            output, state = model.step(frame, state, SIZE)
            counts.append(int(state[1].count))
            assert torch.allclose(model.extrapolate(state, 0.0), output, atol=1e-6)
    assert max(counts) <= 300 and min(counts) > 0
    assert model.contribution() > 0


def test_renders_at_any_output_ratio():
    state = some_canvas()
    base, base_cover = render_canvas(state)
    for factor in (4 / 3, 1.5, 2.0):
        size = (round(SIZE[0] * factor), round(SIZE[1] * factor))
        image, cover = render_canvas(state, size=size)
        assert image.shape == (1, 4, *size)
        # The same picture at a finer grid: mean colour and coverage agree with the base render.
        assert abs(float(image.mean()) - float(base.mean())) < 0.02
        assert abs(float(cover.mean()) - float(base_cover.mean())) < 0.02


def test_spawned_gaussians_take_the_local_motion_as_velocity():
    state = empty_canvas(1, 10, 4, SIZE, "cpu")
    where = torch.zeros(1, 1, 16, 24)
    where[0, 0, 5, 7] = 1
    motion = torch.zeros(1, 2, 16, 24)
    motion[0, :, 5, 7] = torch.tensor([1.5, -0.5])  # render px, current -> previous
    grown = spawn(state, where, torch.rand(1, 3, 16, 24), torch.ones(1, 1, 16, 24), torch.zeros(1, 2),
                  torch.rand(1, 1, 16, 24), limit=100, motion=motion)
    slot = int(torch.nonzero(grown.active[0])[0, 0])
    assert torch.allclose(grown.velocity[0, slot], torch.tensor([-3.0, 1.0]))  # output px moved previous -> current


def test_extrapolation_term_trains_the_velocity_and_covariance_of_the_gaussians():
    """A few steps with only the extrapolation loss: its gradient reaches each Gaussian's velocity
    and covariance, and the per-Gaussian update learns from it."""
    torch.manual_seed(0)
    model = build_model("canvas", capacity=300, spawn_per_frame=200, widths=(8, 16, 32), hidden=32, fx_weight=1.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = sequence(5)
    assert (batch["future_alpha"] > 0).all() and (batch["future_alpha"] <= 1).all()
    update = model.update.mlp[2]  # rows 3 + 2 + F + 1 onwards: the velocity corrections; rows 2..4: the Cholesky factor
    features = model.config["canvas_features"]
    for _ in range(3):
        optimizer.zero_grad()
        _, _ = run_window(model, batch)
        for record in model.last_window:  # keep the gradients of the canvas state each extrapolation starts from
            record["state"][1].velocity.retain_grad()
            record["state"][1].chol.retain_grad()
        loss = model.extrapolation_loss(batch)
        assert loss > 0
        loss.backward()
        last = model.last_window[-1]["state"][1]
        active = last.active
        assert last.velocity.grad[active].abs().sum() > 0
        assert last.chol.grad[active].abs().sum() > 0
        assert update.weight.grad[6 + features:].abs().sum() > 0  # velocity rows of the update
        assert update.weight.grad[2:5].abs().sum() > 0  # covariance rows
        optimizer.step()


def test_extrapolate_advances_the_network_colour_too():
    """With an empty canvas, OSS-FX is the network colour forward-warped with the depth test."""
    from oss_cluster.baselines import forward_warp

    model = build_model("canvas", capacity=300, spawn_per_frame=0, widths=(8, 16, 32), hidden=32).eval()
    batch = sequence(3)
    with torch.no_grad():
        _, state = run_window(model, batch)
        buffer, canvas, network, depth, motion = state
        assert int(canvas.count) == 0
        expected = forward_warp(network, motion, 0.5, depth)
        assert torch.allclose(model.extrapolate(state, 0.5), expected, atol=1e-6)
        assert not torch.allclose(expected, network)
