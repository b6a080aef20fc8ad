import numpy as np
import pytest

from oss_cluster.data.schema import halton, input_size_for, jitter_offset, jitter_phase_count, srgb_encode
from oss_cluster.data.synth import SynthScene, synth_windows

SIZE = (48, 64)  # (H, W) output: small so the tests stay fast


@pytest.fixture(scope="module")
def scene():
    # Moderate motion (a few output px/frame): most pixels stay in view, so exactness is checked broadly.
    from oss_cluster.config import MotionConfig

    motion = MotionConfig(camera_speed=(1.0, 3.0), object_speed=(1.0, 3.0), static_fraction=0.0)
    return SynthScene(SIZE, 2.0, seed=7, objects=4, motion=motion)


def test_halton_jitter_sequence():
    assert [halton(i, 2) for i in (1, 2, 3, 4)] == [0.5, 0.25, 0.75, 0.125]
    assert halton(1, 3) == pytest.approx(1 / 3) and halton(2, 3) == pytest.approx(2 / 3)
    assert jitter_offset(0, 2.0) == pytest.approx([0.0, 1 / 3 - 0.5])
    assert jitter_phase_count(2.0) == 32 and jitter_phase_count(1.5) == 18
    assert np.array_equal(jitter_offset(32, 2.0), jitter_offset(0, 2.0))
    offsets = np.array([jitter_offset(k, 2.0) for k in range(32)])
    assert np.all(np.abs(offsets) <= 0.5) and len({tuple(o) for o in offsets}) == 32


@pytest.mark.parametrize("ratio,expected", [(2.0, (24, 32)), (1.5, (32, 43)), (1.333, (36, 48))])
def test_any_ratio(ratio, expected):
    assert input_size_for(SIZE, ratio) == expected
    frame = SynthScene(SIZE, ratio, seed=1, objects=2).render_frame(3)
    frame.validate(f"ratio {ratio}")
    assert frame.lr.shape == (3, *expected) and frame.gt.shape == (3, *SIZE)


def test_deterministic_per_seed():
    a = SynthScene(SIZE, 2.0, seed=11).render_frame(5)
    b = SynthScene(SIZE, 2.0, seed=11).render_frame(5)
    c = SynthScene(SIZE, 2.0, seed=12).render_frame(5)
    for name in ("lr", "gt", "motion", "depth", "disocclusion", "jitter"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert not np.array_equal(a.gt, c.gt)


def test_render_is_one_sample_at_the_jitter(scene):
    k = 5
    frame = scene.render_frame(k)
    h, w = scene.in_size
    sx, sy = SIZE[1] / w, SIZE[0] / h
    jx, jy = jitter_offset(k, 2.0)
    rows, cols = np.mgrid[0:h, 0:w]
    color, depth, _ = scene.shade(k, (cols + 0.5 + jx) * sx, (rows + 0.5 + jy) * sy)
    assert np.array_equal(frame.lr, srgb_encode(color).reshape(3, h, w).astype(np.float16))
    assert np.array_equal(frame.depth[0], depth.reshape(h, w))


def test_ground_truth_averages_16_samples(scene):
    gt = scene.render_gt(4.0)
    rows, cols = np.mgrid[0:SIZE[0], 0:SIZE[1]]
    total = np.zeros((3, rows.size))
    offsets = (np.arange(4) + 0.5) / 4
    for oy in offsets:
        for ox in offsets:
            total += scene.shade(4.0, cols.ravel() + ox, rows.ravel() + oy)[0]
    expected = srgb_encode(total / 16).reshape(3, *SIZE)
    assert np.abs(gt.astype(np.float32) - expected).max() < 2e-3  # float16 storage
    # Supersampling is not point sampling: edges and fine texture differ from a single centre sample.
    centre = srgb_encode(scene.shade(4.0, cols.ravel() + 0.5, rows.ravel() + 0.5)[0]).reshape(3, *SIZE)
    assert np.abs(gt.astype(np.float32) - centre).mean() > 1e-3


def assert_motion_exact(scene, k: int) -> int:
    """The surface under each pixel centre shows the same texel at centre + motion in the previous frame
    (where the renderer says it was visible); returns how many pixels were checked."""
    frame = scene.render_frame(k)
    h, w = scene.in_size
    sx, sy = SIZE[1] / w, SIZE[0] / h
    rows, cols = np.mgrid[0:h, 0:w]
    x, y = (cols.ravel() + 0.5) * sx, (rows.ravel() + 0.5) * sy
    now, _, ids_now = scene.shade(k, x, y)
    before, _, ids_before = scene.shade(k - 1, x + frame.motion[0].ravel() * sx, y + frame.motion[1].ravel() * sy)
    visible = frame.disocclusion[0].ravel() == 0
    assert np.array_equal(ids_now[visible], ids_before[visible])
    assert np.abs(now[:, visible] - before[:, visible]).max() < 1e-4
    return int(visible.sum())


def test_motion_vectors_are_exact(scene):
    checked = sum(assert_motion_exact(scene, k) for k in (3, 9, 17))
    h, w = scene.in_size
    assert checked > 0.8 * 3 * h * w


def test_motion_and_disocclusion_are_present():
    moving = disoccluded = 0
    scene = SynthScene(SIZE, 2.0, seed=3, objects=6)
    for k in range(1, 30, 4):
        frame = scene.render_frame(k)
        moving += np.hypot(*frame.motion).mean()
        disoccluded += frame.disocclusion.mean()
    assert moving > 0.05 and 0 < disoccluded < 8 * 0.5


@pytest.mark.parametrize("size", [(48, 64), (240, 320)])
def test_scenes_move_like_game_cameras_at_every_size(size):
    """Speeds are drawn in output pixels per frame: the same distribution at any output size, from still
    cameras to ~30 px/frame, median several px/frame."""
    lengths, still = [], 0
    for seed in range(24):
        scene = SynthScene(size, 2.0, seed=seed, objects=3)
        still += scene.turn_x.rate == scene.turn_y.rate == 0
        frame = scene.render_frame(10)
        lengths.append(np.hypot(*frame.motion).ravel() * 2.0)  # render px -> output px at 2x
    lengths = np.concatenate(lengths)
    assert 2.0 <= np.median(lengths) <= 10.0
    assert np.percentile(lengths, 95) >= 15.0 and np.percentile(lengths, 5) < 0.5
    assert 0 < still < 24  # some scenes have a still camera, most do not


def test_motion_distribution_is_configurable():
    from oss_cluster.config import MotionConfig

    slow = MotionConfig(camera_speed=(0.1, 0.2), strafe_speed=(0.01, 0.02), object_speed=(0.1, 0.2), static_fraction=0)
    lengths = [np.hypot(*SynthScene((48, 64), 2.0, seed=s, objects=2, motion=slow).render_frame(5).motion).mean()
               for s in range(4)]
    assert max(lengths) < 0.5


def test_objects_leave_the_view_and_come_back_without_jumps():
    """Objects wrap around the view only while entirely off-screen, so motion vectors stay exact."""
    from oss_cluster.config import MotionConfig

    fast = MotionConfig(camera_speed=(0.1, 0.2), static_fraction=1.0, object_speed=(20.0, 30.0), still_objects=0.0)
    scene = SynthScene(SIZE, 2.0, seed=9, objects=4, motion=fast)
    for k in range(1, 40, 3):
        assert_motion_exact(scene, k)


def test_motion_scale_plays_the_scene_faster():
    slow = SynthScene(SIZE, 2.0, seed=3, objects=2)
    fast = SynthScene(SIZE, 2.0, seed=3, objects=2, motion_scale=4.0)
    assert np.array_equal(fast.render_gt(2.0), slow.render_gt(8.0))
    assert np.hypot(*fast.render_frame(3).motion).mean() > 2 * np.hypot(*slow.render_frame(12).motion).mean()


def test_fractional_time(scene):
    at_2, at_3 = scene.render_frame(2).gt, scene.render_frame(3).gt
    assert np.array_equal(scene.render_gt(2.0), at_2)
    half = scene.render_gt(2.5).astype(np.float32)
    assert np.abs(half - at_2).mean() > 0 and np.abs(half - at_3).mean() > 0


def test_windows_split_sequences():
    windows = list(synth_windows(frames=10, ratio=2.0, out_size=SIZE, window=2, frames_per_sequence=5, objects=1))
    # Two scenes of 5 frames: two whole windows of 2 each; the fifth frame of each is not rendered.
    assert [(w.sequence, w.start) for w in windows] == [
        ("synth-s0-00000", 0), ("synth-s0-00000", 2), ("synth-s0-00001", 0), ("synth-s0-00001", 2)]
    assert all(w.lr.shape == (2, 3, 24, 32) for w in windows)


def test_bad_sample_count():
    with pytest.raises(ValueError, match="square number >= 16"):
        SynthScene(SIZE, 2.0, seed=0, gt_samples=9)
