import math

import numpy as np
import pytest

from oss_cluster.data.schema import DataError, jitter_offset
from oss_cluster.data.tartanair import (
    find_trajectories, flow_check, open_trajectory, tartanair_windows, trajectory_frames,
)

from .tartanair_layout import F, STEP_RIGHT_M, depth_map, rotation_flow, write_trajectory


@pytest.fixture(scope="module")
def env_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tartanair")
    write_trajectory(root / "abandonedfactory" / "Easy" / "P000")
    return root


@pytest.fixture(scope="module")
def frames(env_root):
    trajectory = open_trajectory(env_root / "abandonedfactory" / "Easy" / "P000", env_root)
    return list(trajectory_frames(trajectory, ratio=2.0))


def test_finds_trajectories_in_layout(env_root):
    found = find_trajectories(env_root)
    assert [p.relative_to(env_root).as_posix() for p in found] == ["abandonedfactory/Easy/P000"]
    trajectory = open_trajectory(found[0], env_root)
    assert trajectory.name == "abandonedfactory/Easy/P000" and len(trajectory) == 4 and len(trajectory.flows) == 3


def test_derived_motion_agrees_with_dataset_flow(env_root):
    trajectory = open_trajectory(find_trajectories(env_root)[0], env_root)
    check = flow_check(trajectory)
    assert check.pairs == 3
    assert check.pixels == 3 * (640 * 480 - 40 * 100)  # the invalid block is left out
    assert check.mean_epe < 1e-3 and check.over_1px == 0.0


def test_flow_check_reports_disagreement(tmp_path):
    folder = write_trajectory(tmp_path / "P001")
    flow = np.load(folder / "flow" / "000000_000001_flow.npy")
    flow[..., 0] += 2.0  # 2 px off in x for one of the three pairs
    np.save(folder / "flow" / "000000_000001_flow.npy", flow)
    check = flow_check(open_trajectory(folder))
    assert check.mean_epe == pytest.approx(2.0 / 3, abs=1e-3) and check.over_1px == pytest.approx(1 / 3, abs=1e-3)


def test_frames_follow_the_schema(frames):
    assert len(frames) == 4
    for k, frame in enumerate(frames):
        frame.validate(f"frame {k}")
        assert frame.lr.shape == (3, 240, 320) and frame.gt.shape == (3, 480, 640)
        assert np.array_equal(frame.jitter, jitter_offset(k, 2.0))
    assert np.all(frames[0].motion == 0) and np.all(frames[0].disocclusion == 1)


def test_render_samples_gt_once_at_the_jitter(frames):
    frame = frames[1]
    gt = frame.gt.astype(np.float32)
    jx, jy = frame.jitter
    for i, j in [(10, 20), (100, 200), (239, 319)]:
        x = min(max((j + 0.5 + jx) * 2 - 0.5, 0), 639)
        y = min(max((i + 0.5 + jy) * 2 - 0.5, 0), 479)
        x0, y0 = min(int(x), 638), min(int(y), 478)
        wx, wy = x - x0, y - y0
        expected = ((1 - wx) * (1 - wy) * gt[:, y0, x0] + wx * (1 - wy) * gt[:, y0, x0 + 1]
                    + (1 - wx) * wy * gt[:, y0 + 1, x0] + wx * wy * gt[:, y0 + 1, x0 + 1])
        assert np.allclose(frame.lr[:, i, j].astype(np.float32), expected, atol=2e-3)


def test_motion_vectors_in_game_convention(frames):
    # Frame 1 moved right: a wall pixel (5 m) was fx*0.1/5 GT px to the right in frame 0 -> +3.2 render px.
    motion = frames[1].motion
    assert motion[0, 200, 40] == pytest.approx(F * STEP_RIGHT_M / 5.0 / 2, abs=1e-4)
    assert motion[0, 120, 160] == pytest.approx(F * STEP_RIGHT_M / 2.5 / 2, abs=1e-4)  # box pixel, 2.5 m
    assert np.abs(motion[1]).max() < 1e-4
    # Frame 2 yawed 2 degrees right of frame 1: going back is a 2-degree left yaw, whatever the depth.
    rows, cols = np.mgrid[0:240, 0:320]
    u, v = (cols + 0.5) * 2 - 0.5, (rows + 0.5) * 2 - 0.5  # render-pixel centres in image coordinates
    du, dv = rotation_flow(math.radians(-2.0), u.astype(float), v.astype(float))
    assert np.allclose(frames[2].motion[0], du / 2, atol=1e-3) and np.allclose(frames[2].motion[1], dv / 2, atol=1e-3)


def test_disocclusion_beside_the_near_box(frames):
    mask = frames[1].disocclusion[0]
    # The box (2.5 m) moved 16 GT px left and the wall (5 m) 8: the wall at GT x in [374, 382) of
    # frame 1 was behind the box in frame 0. Render columns 187..190 cover it.
    assert mask[120, 187:191].tolist() == [1, 1, 1, 1]
    assert mask[120, 185] == 0 and mask[120, 192] == 0  # box itself; wall that was visible
    assert mask[200, 40] == 0 and mask[120, 160] == 0


def test_windows(env_root):
    windows = list(tartanair_windows(env_root, ratio=1.5, window=2))
    assert [(w.sequence, w.start) for w in windows] == [("abandonedfactory/Easy/P000", 0), ("abandonedfactory/Easy/P000", 2)]
    assert windows[0].lr.shape == (2, 3, 320, 427)


def test_missing_depth_named(tmp_path):
    folder = write_trajectory(tmp_path / "P002", frames=2)
    (folder / "depth_left" / "000001_left_depth.npy").unlink()
    with pytest.raises(DataError, match="000001_left_depth.npy: missing depth file"):
        open_trajectory(folder)


def test_corrupt_inputs_named(tmp_path):
    folder = write_trajectory(tmp_path / "P003", frames=2)
    image = folder / "image_left" / "000001_left.png"
    image.write_bytes(image.read_bytes()[:200])
    with pytest.raises(DataError, match="000001_left.png: unreadable or truncated image"):
        list(trajectory_frames(open_trajectory(folder), 2.0))

    folder = write_trajectory(tmp_path / "P004", frames=2)
    depth = depth_map()
    depth[5, 5] = np.nan
    np.save(folder / "depth_left" / "000000_left_depth.npy", depth)
    with pytest.raises(DataError, match="000000_left_depth.npy: depth holds 1 NaN/inf"):
        list(trajectory_frames(open_trajectory(folder), 2.0))

    np.save(folder / "depth_left" / "000000_left_depth.npy", depth_map()[:100])
    with pytest.raises(DataError, match="depth has shape"):
        list(trajectory_frames(open_trajectory(folder), 2.0))

    path = folder / "depth_left" / "000000_left_depth.npy"
    np.save(path, depth_map())
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="unreadable or truncated .npy"):
        list(trajectory_frames(open_trajectory(folder), 2.0))


def test_bad_pose_file(tmp_path):
    folder = write_trajectory(tmp_path / "P005", frames=2)
    (folder / "pose_left.txt").write_text("0 0 0 0 0 0 1\n")
    with pytest.raises(DataError, match="1 poses for 2 images"):
        open_trajectory(folder)
    (folder / "pose_left.txt").write_text("0 0 0 0 0 1\n0 0 0 0 0 1\n")
    with pytest.raises(DataError, match="expected 7 columns"):
        open_trajectory(folder)
    with pytest.raises(DataError, match="no TartanAir trajectory"):
        find_trajectories(tmp_path / "P005" / "image_left")
