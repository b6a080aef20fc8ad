"""Scoring: steady state vs all frames, motion buckets recomputed by hand, temporal metrics on known methods."""

import math

import numpy as np
import pytest
import torch

from oss_cluster.data.synth import synth_windows
from oss_cluster.evaluate import evaluate, flatten_eval, format_eval
from oss_cluster.evaluate.methods import Bicubic, anchors
from oss_cluster.evaluate.scoring import MOTION_BUCKETS, STEADY_FROM, motion_buckets, score
from oss_cluster.models.temporal import FRAME_KEYS


@pytest.fixture(scope="module")
def sequences():
    # Two game-motion sequences of 12 frames: frames 8..11 are the steady state.
    return list(synth_windows(24, 1.5, (36, 48), 12, 12, seed=2, first_sequence=50_000))


class GroundTruth:
    """A perfect method: returns each frame's ground truth (plus fresh noise every frame, if asked)."""

    def __init__(self, sequences, noise: float = 0.0):
        self.frames = [torch.from_numpy(w.gt.astype(np.float32)) for w in sequences]
        self.noise, self.sequence, self.k = noise, -1, 0
        self.generator = torch.Generator().manual_seed(0)

    def step(self, frame, state, out_size):
        if state is None:
            self.sequence, self.k = self.sequence + 1, 0
        image = self.frames[self.sequence][self.k][None]
        if self.noise:  # fresh noise every frame: flicker
            image = image + self.noise * torch.randn(image.shape, generator=self.generator)
        self.k += 1
        return image.clamp(0, 1), True

    def sequence_metrics(self):
        return {}


def test_motion_buckets_follow_the_render_pixel_motion():
    motion = torch.zeros(1, 2, 2, 2)
    motion[0, 0] = torch.tensor([[0.0, 0.5], [2.0, 10.0]])
    assert motion_buckets(motion, (2, 2)).tolist() == [[[0, 1], [2, 3]]]
    assert motion_buckets(motion, (4, 4))[0, 3, 3] == 3  # nearest: each render pixel covers its output pixels


def test_summary_layout_and_steady_state(sequences):
    summary, rows = score(anchors(), sequences)
    assert summary["headline"] == "steady" and summary["steady_frames"] == 2 * (12 - STEADY_FROM)
    assert len(rows) == 2 * 12 * 2 and sum(row["steady"] for row in rows) == 2 * 2 * (12 - STEADY_FROM)
    for method in ("bicubic", "taau"):
        steady = [r["psnr_rgb"] for r in rows if r["method"] == method and r["steady"]]
        everything = [r["psnr_rgb"] for r in rows if r["method"] == method]
        assert summary[method]["psnr_rgb"] == pytest.approx(np.mean(steady))
        assert summary[method]["all"]["psnr_rgb"] == pytest.approx(np.mean(everything))
        shares = [summary[method]["buckets"][b]["share"] for b in MOTION_BUCKETS]
        assert sum(shares) == pytest.approx(1.0)
    flat = flatten_eval(summary)
    assert "taau/buckets/gt4/psnr_rgb" in flat and "taau/all/flicker" in flat
    text = format_eval(summary)
    assert "steady state (frames >= 8)" in text and "1-4" in text and "all frames" in text


def test_bucket_psnr_is_the_pooled_error_of_its_pixels(sequences):
    """Recompute the steady-state PSNR of bicubic's 1-4 px bucket by hand."""
    summary, _ = score({"bicubic": Bicubic()}, sequences)
    squared, pixels = 0.0, 0
    border = summary["border_crop"]
    for window in sequences:
        for k in range(STEADY_FROM, window.length):
            frame = {key: torch.from_numpy(getattr(window, key)[k : k + 1].astype(np.float32)) for key in FRAME_KEYS}
            gt = torch.from_numpy(window.gt[k : k + 1].astype(np.float32))
            out, _ = Bicubic().step(frame, None, tuple(gt.shape[-2:]))
            buckets = motion_buckets(frame["motion"], tuple(gt.shape[-2:]))[0, border:-border, border:-border]
            error = ((out - gt) ** 2).mean(1)[0, border:-border, border:-border]
            inside = buckets == list(MOTION_BUCKETS).index("1to4")
            squared += float(error[inside].sum())
            pixels += int(inside.sum())
    assert pixels > 0
    assert summary["bicubic"]["buckets"]["1to4"]["psnr_rgb"] == pytest.approx(10 * math.log10(pixels / squared), abs=1e-6)


def test_temporal_metrics_see_flicker(sequences):
    summary, _ = score({"perfect": GroundTruth(sequences), "noisy": GroundTruth(sequences, noise=0.05)}, sequences)
    perfect, noisy = summary["perfect"], summary["noisy"]
    assert perfect["flicker"] < 1e-6 and perfect["psnr_rgb"] > 60 and perfect["flip"] < 1e-3
    assert perfect["warp_error"] == pytest.approx(summary["ground_truth"]["warp_error"], abs=1e-6)
    assert noisy["flicker"] > 0.02 and noisy["warp_error"] > perfect["warp_error"] + 0.02


def test_model_evaluation_reports_the_anchors_and_restores_training_mode(sequences):
    from oss_cluster.models import build_model

    model = build_model("student_pico").train()
    result = evaluate(model, sequences)
    assert set(result) >= {"model", "bicubic", "taau", "ground_truth", "disocclusion"} and model.training
    # An untrained model is TAAU's accumulation (its head starts there).
    assert result["model"]["psnr_rgb"] == pytest.approx(result["taau"]["psnr_rgb"], abs=0.05)
    assert 0 < result["disocclusion"]["iou"] <= 1
