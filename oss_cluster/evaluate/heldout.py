"""Held-out synthetic sequences: scene seeds no training build reaches, rendered whole."""

from __future__ import annotations

import numpy as np
import torch

from ..config import ExperimentConfig, MotionConfig
from ..data.schema import Window
from ..data.synth import SynthScene, scene_seed, synth_windows

HELDOUT_SEED_OFFSET = 50_000  # held-out scenes use seeds no training build reaches
MIN_EVAL_FRAMES = 32  # long enough for a steady state (frames >= STEADY_FROM) to dominate


def heldout_motion(cfg: ExperimentConfig, index: int) -> MotionConfig:
    """Motion of held-out sequence `index`: the second of every four has a still camera (objects still
    move), so the static motion bucket is always measured; the others follow data.motion."""
    if index % 4 == 1:
        return cfg.data.motion.model_copy(update={"static_fraction": 1.0})
    return cfg.data.motion


def heldout_sequences(cfg: ExperimentConfig, frames: int | None = None, count: int | None = None) -> list[Window]:
    """`count` (default data.val_sequences) whole synthetic sequences of `frames` (default
    train.eval_frames) frames, at the config's ratio, size and motion distribution, one Window each."""
    data = cfg.data
    count = data.val_sequences if count is None else count
    frames = frames or cfg.train.eval_frames
    sequences = []
    for index in range(count):
        sequences.extend(synth_windows(frames, data.ratio, tuple(data.out_size), frames, frames, data.seed, data.objects,
                                       data.gt_samples, first_sequence=HELDOUT_SEED_OFFSET + index,
                                       motion_scale=data.motion_scale, motion=heldout_motion(cfg, index)))
    return sequences


def heldout_futures(cfg: ExperimentConfig, frames: int, alphas=(0.25, 0.5, 0.75), count: int | None = None) -> list[dict]:
    """For every sequence of `heldout_sequences` (same scenes): {alpha: (ground truth at t + alpha
    [K, 3, H, W], output pixels disoccluded between t and t + alpha [K, 1, H, W] bool)}, for every
    frame t. The mask is the renderer's exact answer, for scoring only."""
    data = cfg.data
    count = data.val_sequences if count is None else count
    futures = []
    for index in range(count):
        scene = SynthScene(tuple(data.out_size), data.ratio, scene_seed(data.seed, HELDOUT_SEED_OFFSET + index),
                           objects=data.objects, gt_samples=data.gt_samples, motion_scale=data.motion_scale,
                           motion=heldout_motion(cfg, index))
        futures.append({alpha: (torch.stack([torch.from_numpy(scene.render_gt(k + alpha).astype(np.float32))
                                             for k in range(frames)]),
                                torch.stack([torch.from_numpy(scene.disoccluded_between(k, k + alpha))[None]
                                             for k in range(frames)]))
                        for alpha in alphas})
    return futures
