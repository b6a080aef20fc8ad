"""Evaluation: the one place quality is measured, by training jobs, `python -m oss_cluster.evaluate` and benchmarks.

- heldout.py      held-out synthetic sequences (seeds no training build reaches)
- methods.py      bicubic, TAAU, a torch model, an ONNX export: recurrent steppers over game inputs
- scoring.py      per-frame gauges, steady state, motion buckets, warp error and flicker
- video.py        ColorVideoVDP, where installed
- extrapolation.py OSS-FX against true intermediate frames
- report.py       tables, flat metric keys, per-frame CSV
- strips.py, clips.py  comparison strips (PNG) and side-by-side video clips (MP4)
- __main__.py     the command line
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..data.schema import Window
from ..metrics import LPIPSGauge
from .extrapolation import FX_ALPHAS, evaluate_extrapolation, format_extrapolation, headline
from .heldout import HELDOUT_SEED_OFFSET, MIN_EVAL_FRAMES, heldout_futures, heldout_sequences
from .methods import ModelMethod, anchors
from .report import flatten_eval, format_eval
from .scoring import EVAL_BORDER, MOTION_BUCKETS, STEADY_FROM, score, window_tensors

__all__ = [
    "EVAL_BORDER", "HELDOUT_SEED_OFFSET", "MIN_EVAL_FRAMES", "MOTION_BUCKETS", "STEADY_FROM", "evaluate",
    "FX_ALPHAS", "evaluate_extrapolation", "headline", "flatten_eval", "format_eval", "format_extrapolation", "heldout_futures",
    "heldout_sequences", "score", "window_tensors",
]


def evaluate(model: torch.nn.Module | None, sequences: Sequence[Window], border: int = EVAL_BORDER,
             baselines: bool = True, lpips_gauge: LPIPSGauge | None = None) -> dict:
    """Quality of `model` (as "model") beside bicubic and TAAU on whole sequences (see scoring.score).

    Returns the summary: per method the steady-state gauges, motion buckets and temporal figures,
    with the all-frames figures under "all". The model is left in the mode it came in.
    """
    was_training = model.training if model is not None else False
    methods = dict(anchors()) if baselines else {}
    if model is not None:
        methods["model"] = ModelMethod(model)
    summary, _ = score(methods, sequences, border, lpips_gauge)
    if model is not None:
        model.train(was_training)
    return summary
