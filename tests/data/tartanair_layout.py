"""Writes a small TartanAir trajectory in exactly the public layout, with flow computed independently.

Scene: a wall at 5 m, a nearer box at 2.5 m and sky at 1000 m. Camera poses (NED, camera in world):
frame 0 at the origin, frame 1 moved 0.125 m right, every later frame yawed right by 2 more degrees.
Flow for a sideways move is -fx * dy / z (any depth); for a pure rotation it is the homography
K R K^-1, computed here with an explicit rotation about the optical y axis, not with quaternions.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

W, H, F = 640, 480, 320.0
CX, CY = 320.0, 240.0
STEP_RIGHT_M = 0.125  # wall (5 m) shifts 8 px, box (2.5 m) 16 px: whole pixels
YAW_STEP_DEG = 2.0
BOX = (slice(180, 300), slice(250, 390))  # rows, cols of the near box
INVALID = (slice(400, 440), slice(20, 120))  # flow-mask block marked invalid, filled with garbage flow


def yaw_deg(frame: int) -> float:
    return YAW_STEP_DEG * max(0, frame - 1)


def depth_map(frame: int = 0) -> np.ndarray:
    """Depth seen from frame `frame`: after the sideways move the box sits 16 px further left."""
    depth = np.full((H, W), 5.0, np.float32)
    depth[:60] = 1000.0  # sky
    shift = 0 if frame == 0 else round(F * STEP_RIGHT_M / 2.5)
    depth[BOX[0], BOX[1].start - shift:BOX[1].stop - shift] = 2.5
    return depth


def pose(frame: int) -> list[float]:
    yaw = math.radians(yaw_deg(frame))
    y = 0.0 if frame == 0 else STEP_RIGHT_M
    return [0.0, y, 0.0, 0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)]


def rotation_flow(turn: float, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image motion (du, dv) of points (u, v) when the camera yaws right by `turn` radians."""
    # Camera yaws about its down (optical y) axis: coordinates in the new camera = R_y(-turn) @ old.
    rot = np.array([[math.cos(turn), 0, -math.sin(turn)], [0, 1, 0], [math.sin(turn), 0, math.cos(turn)]])
    rays = np.stack([(u - CX) / F, (v - CY) / F, np.ones_like(u)]).reshape(3, -1)
    moved = rot @ rays
    return (F * moved[0] / moved[2] + CX).reshape(u.shape) - u, (F * moved[1] / moved[2] + CY).reshape(u.shape) - v


def expected_flow(frame: int, depth: np.ndarray) -> np.ndarray:
    """Forward flow frame -> frame + 1, [H, W, 2]."""
    if frame == 0:  # camera moves right: points shift left by fx * dy / z
        return np.stack([-F * STEP_RIGHT_M / depth, np.zeros_like(depth)], axis=-1).astype(np.float32)
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float64)
    du, dv = rotation_flow(math.radians(yaw_deg(frame + 1) - yaw_deg(frame)), cols, rows)
    return np.stack([du, dv], axis=-1).astype(np.float32)


def write_trajectory(folder: Path, frames: int = 4) -> Path:
    for sub in ("image_left", "depth_left", "flow"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (H // 8, W // 8, 3), dtype=np.uint8)
    base = np.kron(texture, np.ones((8, 8, 1), np.uint8))
    lines = []
    for k in range(frames):
        Image.fromarray(np.roll(base, -3 * k, axis=1)).save(folder / "image_left" / f"{k:06d}_left.png")
        depth = depth_map(k)
        np.save(folder / "depth_left" / f"{k:06d}_left_depth.npy", depth)
        lines.append(" ".join(f"{x:.10f}" for x in pose(k)))
        if k + 1 < frames:
            flow = expected_flow(k, depth)
            mask = np.zeros((H, W), np.uint8)
            mask[INVALID] = 1
            flow[INVALID] = 50.0
            np.save(folder / "flow" / f"{k:06d}_{k + 1:06d}_flow.npy", flow)
            np.save(folder / "flow" / f"{k:06d}_{k + 1:06d}_mask.npy", mask)
    (folder / "pose_left.txt").write_text("\n".join(lines) + "\n")
    return folder
