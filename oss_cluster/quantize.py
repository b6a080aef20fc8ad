"""INT8 static quantization of an exported student, with its measured quality cost.

    int8 = quantize_int8(onnx, calibration_feeds)          # a QDQ ONNX model
    cost = quality_cost(onnx, int8, windows)                # PSNR / FLIP of each, streamed, and the deltas

The network's convolutions and matrix products are quantized (per-channel int8 weights, uint8 activations,
QDQ format, calibrated by MinMax on real frames run recurrently); the accumulation around them (resampling,
history blending, whose weights reach 16) stays fp32: 8 bits cannot hold a history weight and its colour.
Both models are then streamed through held-out sequences from the first frame, each fed its own history,
and scored against the ground truth; export refuses an INT8 model whose PSNR drops by more than a bound.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

QUANTIZED_OPS = ["Conv", "MatMul", "Gemm"]


def _feeds(steps) -> list[dict[str, np.ndarray]]:
    from .export import INPUT_NAMES

    return [{name: tensor.numpy() for name, tensor in zip(INPUT_NAMES, step)} for step in steps]


def quantize_int8(onnx: bytes, calibration: list[dict[str, np.ndarray]]) -> bytes:
    """A QDQ INT8 model of `onnx`, its activation ranges taken from `calibration` (one input dict per step)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(calibration)

        def get_next(self):
            return next(self.items, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to run shape pre-processing: the exported graph is already shaped
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder, "fp32.onnx"), Path(folder, "int8.onnx")
        source.write_bytes(onnx)
        try:
            quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                            op_types_to_quantize=QUANTIZED_OPS)
        finally:
            root.setLevel(level)
        return target.read_bytes()


def stream(onnx: bytes, windows: list[dict], ratio: float, threads: int = 1) -> tuple[list[np.ndarray], float]:
    """Run a model over whole windows from the first frame, each step fed its own previous history and depth;
    returns (outputs [3, H, W] per frame, median ms per step)."""
    from .export import INPUT_NAMES
    from .models.accumulate import HISTORY_CHANNELS
    from .serving.backends import OnnxRuntimeBackend
    from .tiers import scaled_size

    backend = OnnxRuntimeBackend(onnx, threads=threads)
    outputs, times = [], []
    for window in windows:
        lr = window["lr"].numpy()
        h, w = lr.shape[-2:]
        H, W = scaled_size(h, w, ratio)
        history = np.zeros((1, HISTORY_CHANNELS, H, W), np.float32)
        previous_depth = np.zeros((1, 1, h, w), np.float32)
        for k in range(lr.shape[0]):
            feed = {"lr": lr[k : k + 1], "depth": window["depth"][k : k + 1].numpy(),
                    "jitter": window["jitter"][k : k + 1].numpy(), "motion": window["motion"][k : k + 1].numpy(),
                    "previous_depth": previous_depth, "previous": history}
            started = time.perf_counter()
            output, history = backend.run({name: feed[name] for name in INPUT_NAMES})
            times.append((time.perf_counter() - started) * 1e3)
            previous_depth = feed["depth"]
            outputs.append(output[0])
    return outputs, statistics.median(times)


def quality_cost(fp32: bytes, quantized: bytes, windows: list[dict], ratio: float, steady_from: int = 8) -> dict:
    """PSNR RGB and FLIP of both models on the windows' steady-state frames (index >= steady_from), their
    deltas (quantized - fp32), and each one's median step time on one ONNX Runtime thread."""
    import torch

    from .metrics import flip, psnr

    scores, speed = {}, {}
    for label, model in (("fp32", fp32), ("int8", quantized)):
        outputs, speed[label] = stream(model, windows, ratio)
        frames, k = [], 0
        for window in windows:
            for index in range(window["gt"].shape[0]):
                if index >= steady_from:
                    frames.append((torch.from_numpy(outputs[k])[None], window["gt"][index : index + 1]))
                k += 1
        if not frames:
            raise ValueError(f"no steady-state frames (windows shorter than {steady_from + 1} frames)")
        scores[label] = {"psnr_rgb": float(np.mean([psnr(o, g) for o, g in frames])),
                         "flip": float(np.mean([flip(o, g) for o, g in frames])), "frames": len(frames)}
    return {**scores, "psnr_delta_db": scores["int8"]["psnr_rgb"] - scores["fp32"]["psnr_rgb"],
            "flip_delta": scores["int8"]["flip"] - scores["fp32"]["flip"],
            "ms_per_step": speed, "speedup": speed["fp32"] / speed["int8"]}
