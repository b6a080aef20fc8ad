"""TartanAir trajectories into the sample schema.

Layout of one trajectory (DESIGN.md), e.g. `oldtown/Easy/P000/`:
    image_left/000000_left.png            640x480 RGB
    depth_left/000000_left_depth.npy      float32 [480, 640], metres (sky is very far)
    flow/000000_000001_flow.npy           float32 [480, 640, 2], forward flow t -> t+1, pixels
    flow/000000_000001_mask.npy           uint8 [480, 640], nonzero = invalid
    pose_left.txt                         one line per frame: tx ty tz qx qy qz qw (camera in world, NED)

Camera: fx = fy = 320, cx = 320, cy = 240. Pixel (i, j) sits at image coordinates (u, v) = (j, i)
(OpenCV convention). NED body axes are x forward, y right, z down; the optical frame is x right,
y down, z forward.

The render input of frame k samples the ground-truth image once per render pixel at frame k's
Halton(2,3) jitter (bilinear between ground-truth pixel centres), like a game rendering at the lower
resolution. Motion vectors come from depth and the two camera poses (the scene is static); they are
checked against the dataset's own flow files where the mask says valid (`flow_check`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from .schema import DataError, Frame, Window, input_size_for, jitter_offset


@dataclass(frozen=True)
class Intrinsics:
    fx: float = 320.0
    fy: float = 320.0
    cx: float = 320.0
    cy: float = 240.0
    width: int = 640
    height: int = 480


TARTANAIR = Intrinsics()
# optical = NED_TO_OPTICAL @ ned: right, down, forward.
NED_TO_OPTICAL = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
# A surface is taken as hidden in the previous frame when it projects this much behind what that
# frame's depth shows there (relative), plus an absolute margin in metres.
OCCLUSION_TOLERANCE = 0.05
OCCLUSION_MARGIN_M = 0.05


def quaternion_to_matrix(qx: float, qy: float, qz: float, qw: float) -> np.ndarray:
    """Rotation matrix of a unit quaternion (x, y, z, w)."""
    norm = np.sqrt(qx * qx + qy * qy + qz * qz + qw * qw)
    qx, qy, qz, qw = qx / norm, qy / norm, qz / norm, qw / norm
    return np.array([
        [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw)],
        [2 * (qx * qy + qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * qw)],
        [2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx * qx + qy * qy)],
    ])


def reproject(u, v, depth, pose_from, pose_to, intrinsics: Intrinsics = TARTANAIR):
    """Where image points of camera `pose_from` land in camera `pose_to`.

    u, v: image coordinates (any shape); depth: planar depth in metres at those points (same shape);
    poses: [7] tx ty tz qx qy qz qw (camera in world, NED). Returns (u', v', z') with z' the planar
    depth in the target camera.
    """
    k = intrinsics
    optical = np.stack([(u - k.cx) / k.fx * depth, (v - k.cy) / k.fy * depth, depth]).reshape(3, -1)
    body = NED_TO_OPTICAL.T @ optical
    world = quaternion_to_matrix(*pose_from[3:]) @ body + np.asarray(pose_from[:3], float)[:, None]
    target = NED_TO_OPTICAL @ (quaternion_to_matrix(*pose_to[3:]).T @ (world - np.asarray(pose_to[:3], float)[:, None]))
    z = target[2]
    safe = np.where(np.abs(z) < 1e-9, 1e-9, z)
    shape = np.shape(u)
    return (
        (k.fx * target[0] / safe + k.cx).reshape(shape),
        (k.fy * target[1] / safe + k.cy).reshape(shape),
        z.reshape(shape),
    )


@dataclass
class Trajectory:
    folder: Path
    name: str  # e.g. "oldtown/Easy/P000"
    images: list[Path]
    depths: list[Path]
    poses: np.ndarray  # [N, 7]
    flows: list[tuple[int, Path, Path]] = field(default_factory=list)  # (frame a, flow a->a+1, mask)

    def __len__(self) -> int:
        return len(self.images)


def find_trajectories(root: str | Path) -> list[Path]:
    """The trajectory folder itself, or every trajectory (folder holding pose_left.txt) below root."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if (root / "pose_left.txt").is_file():
        return [root]
    found = sorted(path.parent for path in root.rglob("pose_left.txt"))
    if not found:
        raise DataError(f"{root}: no TartanAir trajectory below it (no pose_left.txt)")
    return found


def load_poses(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: missing pose file")
    try:
        poses = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise DataError(f"{path}: not a table of numbers: {err}") from None
    if poses.ndim != 2 or poses.shape[1] != 7:
        raise DataError(f"{path}: expected 7 columns (tx ty tz qx qy qz qw), got shape {poses.shape}")
    if not np.isfinite(poses).all():
        raise DataError(f"{path}: holds NaN/inf values")
    norms = np.linalg.norm(poses[:, 3:], axis=1)
    if np.any(np.abs(norms - 1) > 1e-3):
        bad = int(np.argmax(np.abs(norms - 1)))
        raise DataError(f"{path}: line {bad + 1} quaternion has norm {norms[bad]:.4f}, expected 1")
    return poses


def open_trajectory(folder: str | Path, root: str | Path | None = None) -> Trajectory:
    """Index one trajectory folder, checking that every frame has its image, depth and pose."""
    folder = Path(folder)
    image_dir, depth_dir = folder / "image_left", folder / "depth_left"
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: missing image folder")
    images = sorted(image_dir.glob("*_left.png"))
    if not images:
        raise DataError(f"{image_dir}: no *_left.png images")
    depths = []
    for image in images:
        stem = image.name.removesuffix("_left.png")
        depth = depth_dir / f"{stem}_left_depth.npy"
        if not depth.is_file():
            raise DataError(f"{depth}: missing depth file for {image.name}")
        depths.append(depth)
    poses = load_poses(folder / "pose_left.txt")
    if len(poses) != len(images):
        raise DataError(f"{folder / 'pose_left.txt'}: {len(poses)} poses for {len(images)} images")
    flows = []
    for index, image in enumerate(images[:-1]):
        a = image.name.removesuffix("_left.png")
        b = images[index + 1].name.removesuffix("_left.png")
        flow = folder / "flow" / f"{a}_{b}_flow.npy"
        mask = folder / "flow" / f"{a}_{b}_mask.npy"
        if flow.is_file():
            if not mask.is_file():
                raise DataError(f"{mask}: missing mask for {flow.name}")
            flows.append((index, flow, mask))
    name = folder.relative_to(root).as_posix() if root and folder != Path(root) else folder.name
    return Trajectory(folder, name, images, depths, poses, flows)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{path}: unreadable or truncated .npy: {err}") from None


def read_image(path: Path, intrinsics: Intrinsics = TARTANAIR) -> np.ndarray:
    """[H, W, 3] float32 sRGB-encoded in [0, 1]."""
    try:
        with Image.open(path) as image:
            image.load()
            rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(f"{path}: unreadable or truncated image: {err}") from None
    expected = (intrinsics.height, intrinsics.width)
    if rgb.shape[:2] != expected:
        raise DataError(f"{path}: image is {rgb.shape[1]}x{rgb.shape[0]}, expected {expected[1]}x{expected[0]}")
    return rgb


def read_depth(path: Path, intrinsics: Intrinsics = TARTANAIR) -> np.ndarray:
    """[H, W] float32 planar depth in metres (finite and positive)."""
    depth = _load_npy(path)
    if depth.dtype.kind != "f":
        raise DataError(f"{path}: depth has dtype {depth.dtype}, expected float32 metres")
    if depth.shape != (intrinsics.height, intrinsics.width):
        raise DataError(f"{path}: depth has shape {depth.shape}, expected {(intrinsics.height, intrinsics.width)}")
    if not np.isfinite(depth).all():
        raise DataError(f"{path}: depth holds {int((~np.isfinite(depth)).sum())} NaN/inf values")
    if (depth <= 0).any():
        raise DataError(f"{path}: depth holds {int((depth <= 0).sum())} non-positive values")
    return depth.astype(np.float32)


def read_flow(flow_path: Path, mask_path: Path, intrinsics: Intrinsics = TARTANAIR) -> tuple[np.ndarray, np.ndarray]:
    """Forward flow [H, W, 2] float32 (pixels) and a validity mask [H, W] bool (True = valid)."""
    flow, mask = _load_npy(flow_path), _load_npy(mask_path)
    shape = (intrinsics.height, intrinsics.width)
    if flow.shape != (*shape, 2) or flow.dtype.kind != "f":
        raise DataError(f"{flow_path}: flow has shape {flow.shape} dtype {flow.dtype}, expected {(*shape, 2)} float32")
    if mask.shape != shape:
        raise DataError(f"{mask_path}: mask has shape {mask.shape}, expected {shape}")
    valid = (mask == 0) & np.isfinite(flow).all(axis=2)
    return flow.astype(np.float32), valid


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample [H, W, C] at image coordinates (x, y) (pixel centres at integers), clamped to the edge."""
    height, width = image.shape[:2]
    x = np.clip(x, 0, width - 1)
    y = np.clip(y, 0, height - 1)
    x0 = np.minimum(np.floor(x).astype(int), width - 2)
    y0 = np.minimum(np.floor(y).astype(int), height - 2)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]
    return ((1 - wx) * (1 - wy) * image[y0, x0] + wx * (1 - wy) * image[y0, x0 + 1]
            + (1 - wx) * wy * image[y0 + 1, x0] + wx * wy * image[y0 + 1, x0 + 1])


def _nearest(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    return image[np.clip(np.rint(y).astype(int), 0, height - 1), np.clip(np.rint(x).astype(int), 0, width - 1)]


@dataclass
class FlowCheck:
    """Agreement between depth+pose motion and the dataset's flow, over valid pixels."""

    pairs: int = 0
    pixels: int = 0
    mean_epe: float = float("nan")  # mean end-point error, pixels
    median_epe: float = float("nan")
    over_1px: float = float("nan")  # fraction of pixels with error > 1 px

    def as_dict(self) -> dict:
        return dict(pairs=self.pairs, pixels=self.pixels, mean_epe_px=self.mean_epe,
                    median_epe_px=self.median_epe, fraction_over_1px=self.over_1px)


def flow_check(trajectory: Trajectory, intrinsics: Intrinsics = TARTANAIR, max_pairs: int | None = None) -> FlowCheck:
    """Compare flow derived from depth and pose with the dataset's flow files where they are valid."""
    errors = []
    rows, cols = np.mgrid[0:intrinsics.height, 0:intrinsics.width].astype(np.float64)
    for a, flow_path, mask_path in trajectory.flows[:max_pairs]:
        flow, valid = read_flow(flow_path, mask_path, intrinsics)
        depth = read_depth(trajectory.depths[a], intrinsics)
        u, v, _ = reproject(cols, rows, depth, trajectory.poses[a], trajectory.poses[a + 1], intrinsics)
        epe = np.hypot(u - cols - flow[..., 0], v - rows - flow[..., 1])
        errors.append(epe[valid])
    if not errors:
        return FlowCheck()
    every = np.concatenate(errors)
    if every.size == 0:
        return FlowCheck(pairs=len(errors))
    return FlowCheck(len(errors), int(every.size), float(every.mean()), float(np.median(every)), float((every > 1).mean()))


def trajectory_frames(trajectory: Trajectory, ratio: float, intrinsics: Intrinsics = TARTANAIR) -> Iterator[Frame]:
    """Frames of one trajectory in the sample schema (frame 0 has no history: zero motion, all
    disoccluded). The dataset has no fractional times: each frame's extrapolation target is the next
    frame at alpha 1, and the last frame has none (alpha 0)."""
    pending = None
    for fields in _trajectory_fields(trajectory, ratio, intrinsics):
        if pending is not None:
            yield Frame(**pending, gt_future=fields["gt"], future_alpha=np.ones(1, np.float32))
        pending = fields
    if pending is not None:
        yield Frame(**pending, gt_future=pending["gt"], future_alpha=np.zeros(1, np.float32))


def _trajectory_fields(trajectory: Trajectory, ratio: float, intrinsics: Intrinsics) -> Iterator[dict]:
    """Each frame's schema fields except the extrapolation target."""
    out_size = (intrinsics.height, intrinsics.width)
    h, w = input_size_for(out_size, ratio)
    sx, sy = intrinsics.width / w, intrinsics.height / h
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    centre_x, centre_y = cols * sx - 0.5, rows * sy - 0.5  # render-pixel centres in image coordinates
    previous_depth = None
    for k, (image_path, depth_path) in enumerate(zip(trajectory.images, trajectory.depths)):
        gt = read_image(image_path, intrinsics)
        depth = read_depth(depth_path, intrinsics)
        jitter = jitter_offset(k, ratio)
        sample_x, sample_y = centre_x + jitter[0] * sx, centre_y + jitter[1] * sy
        lr = _bilinear(gt, sample_x, sample_y)
        if previous_depth is None:
            motion = np.zeros((2, h, w), np.float32)
            disoccluded = np.ones((h, w), bool)
        else:
            centre_depth = _nearest(depth, centre_x, centre_y)
            u, v, z = reproject(centre_x, centre_y, centre_depth, trajectory.poses[k], trajectory.poses[k - 1], intrinsics)
            motion = np.stack([(u - centre_x) / sx, (v - centre_y) / sy]).astype(np.float32)
            off_screen = (u < -0.5) | (u > intrinsics.width - 0.5) | (v < -0.5) | (v > intrinsics.height - 0.5) | (z <= 0)
            seen_depth = _nearest(previous_depth, u, v)
            hidden = z > seen_depth * (1 + OCCLUSION_TOLERANCE) + OCCLUSION_MARGIN_M
            disoccluded = off_screen | hidden
        previous_depth = depth
        yield dict(
            lr=np.ascontiguousarray(lr.transpose(2, 0, 1)).astype(np.float16),
            gt=np.ascontiguousarray(gt.transpose(2, 0, 1)).astype(np.float16),
            motion=motion,
            depth=_nearest(depth, sample_x, sample_y)[None].astype(np.float32),
            disocclusion=disoccluded[None].astype(np.uint8),
            jitter=jitter,
        )


def tartanair_windows(root: str | Path, ratio: float, window: int) -> Iterator[Window]:
    """Non-overlapping windows of `window` frames from every trajectory under `root`."""
    for folder in find_trajectories(root):
        trajectory = open_trajectory(folder, root)
        buffer: list[Frame] = []
        for k, frame in enumerate(trajectory_frames(trajectory, ratio)):
            frame.validate(str(trajectory.images[k]))
            buffer.append(frame)
            if len(buffer) == window:
                yield Window.from_frames(buffer, sequence=trajectory.name, start=k - window + 1, source="tartanair")
                buffer = []
