"""INT8 static quantization of an exported student, with its measured quality cost, and quantization-aware training.

    int8 = quantize_int8(onnx, calibration_feeds(steps))   # a QDQ ONNX model (quantize_fp8: FP8, for TensorRT)
    cost = quality_cost(OnnxRuntimeBackend(onnx), OnnxRuntimeBackend(int8), sequences)  # PSNR / FLIP, the deltas
    quantization_aware(student)                             # train it seeing what the INT8 model will compute

The network's convolutions and matrix products are quantized (per-channel int8 weights, uint8 activations,
QDQ format, calibrated by MinMax on real frames run recurrently); the accumulation around them (resampling,
history blending, whose weights reach 16) stays fp32: 8 bits cannot hold a history weight and its colour.
Both models are then scored by the evaluation's own code (evaluate.scoring.score with BackendMethod: whole held-out
sequences from the first frame, each fed its own history, steady state from frame 8, border crop 4). Export refuses
an INT8 model whose PSNR against the ground truth drops by more than a bound, or whose output strays from the fp32
model's (its fidelity: PSNR of the INT8 output against the fp32 output, steady state) below a floor: a short-trained
student can score *higher* once a bad calibration has flattened its network back towards plain accumulation, and
that is still not the model that was validated.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

QUANTIZED_OPS = ["Conv", "MatMul", "Gemm"]


def _tracked_range(previous: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """[min, max] of `x` and everything seen before (`previous`), min <= 0 <= max as uint8 ranges need zero: the
    export's MinMax calibration, kept up while training."""
    seen = torch.stack([x.min().clamp(max=0), x.max().clamp(min=0)])
    if previous is None:
        return seen
    previous = previous.to(seen.device)
    return torch.stack([torch.minimum(previous[0], seen[0]), torch.maximum(previous[1], seen[1])])


def _fake_quant_uint8(x: torch.Tensor, value_range: torch.Tensor) -> torch.Tensor:
    low, high = value_range.tolist()
    scale = max(high - low, 1e-8) / 255
    zero_point = min(255, max(0, round(-low / scale)))
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255)


class FakeQuantConv2d(nn.Conv2d):
    """nn.Conv2d computing as in the QDQ export (see `quantization_aware`)."""

    input_range: torch.Tensor | None = None  # [min, max] of the input, min <= 0 <= max
    output_range: torch.Tensor | None = None

    def forward(self, x):
        x32 = x.float()
        tracking = self.training or self.input_range is None
        if tracking:
            with torch.no_grad():
                self.input_range = _tracked_range(self.input_range, x32)
        weight = self.weight.float()
        scales = (weight.detach().abs().amax(dim=(1, 2, 3)) / 127).clamp(min=1e-8)  # straight-through: no gradient
        w_q = torch.fake_quantize_per_channel_affine(
            weight, scales, torch.zeros_like(scales, dtype=torch.int32), 0, -127, 127)
        out = self._conv_forward(_fake_quant_uint8(x32, self.input_range), w_q, None if self.bias is None
                                 else self.bias.float())
        if tracking:
            with torch.no_grad():
                self.output_range = _tracked_range(self.output_range, out)
        return _fake_quant_uint8(out, self.output_range).to(x.dtype)


def quantization_aware(model: nn.Module) -> nn.Module:
    """Make every nn.Conv2d of `model` compute as the INT8 QDQ export will (`quantize_int8`): its weights rounded to
    int8 per output channel (symmetric), its input and its output to uint8 per tensor over the ranges seen in
    training (running min/max, as the export calibrates), gradients passed straight through the rounding. Returns
    the model, changed in place; its parameters and state dict are unchanged (the ranges are not saved: export
    calibrates its own), so checkpoints load into a plain student. Matrix products: the students have none."""
    for module in model.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = FakeQuantConv2d
            module.input_range = None
    return model


def calibration_feeds(steps) -> list[dict[str, np.ndarray]]:
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


FP8_MIN_CAPABILITY = (8, 9)  # FP8 tensor cores: Ada (8.9) and Hopper (9.0) on


def fp8_unavailable() -> str | None:
    """None when an FP8 (E4M3) TensorRT engine can be built here, else why not."""
    from .export import tensorrt_unavailable

    reason = tensorrt_unavailable()
    if reason:
        return reason
    capability = torch.cuda.get_device_capability(0)
    if capability < FP8_MIN_CAPABILITY:
        return (f"{torch.cuda.get_device_name(0)} has compute capability {capability[0]}.{capability[1]}; FP8 tensor "
                f"cores need {FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]} or later (Ada, Hopper)")
    try:
        import modelopt.onnx.quantization  # noqa: F401
    except ImportError:
        return "NVIDIA ModelOpt is not installed (pip install 'nvidia-modelopt[onnx]'), which writes the FP8 QDQ graph"
    return None


def quantize_fp8(onnx: bytes, calibration: list[dict[str, np.ndarray]]) -> bytes:
    """An FP8 (E4M3) QDQ model of `onnx` for TensorRT (NVIDIA ModelOpt, max calibration on `calibration`, one input
    dict per step): the convolutions quantized, everything else kept fp32 as in the INT8 model. GPU only
    (`fp8_unavailable`)."""
    from modelopt.onnx.quantization import quantize

    from .export import INPUT_NAMES

    # Steps stacked along the batch: each row is one step with its own history.
    data = {name: np.concatenate([feed[name] for feed in calibration]) for name in INPUT_NAMES}
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder, "fp32.onnx"), Path(folder, "fp8.onnx")
        source.write_bytes(onnx)
        quantize(str(source), quantize_mode="fp8", calibration_data=data, calibration_method="max",
                 op_types_to_quantize=["Conv"], high_precision_dtype="fp32", output_path=str(target))
        return target.read_bytes()


def quality_cost(fp32, quantized, sequences, precision: str = "int8") -> dict:
    """Two serving backends (serving/backends.py: the fp32 export and its `precision` version) streamed through
    held-out sequences (Windows) by the evaluation's own scoring (`score` with `BackendMethod`, fed as the Serve
    endpoint feeds them): steady-state PSNR RGB and FLIP of each, the deltas (quantized - fp32), the fidelity (dB:
    mean steady-state PSNR of the quantized output against the fp32 output, each on its own history), and each
    one's backend and median ms per step (the speed-up only where both ran on the same backend)."""
    from .evaluate.methods import BackendMethod
    from .evaluate.scoring import EVAL_BORDER, STEADY_FROM, score
    from .metrics import psnr

    class Timed(BackendMethod):
        def __init__(self, backend):
            super().__init__(backend)
            self.ms: list[float] = []

        def step(self, frame, state, out_size):
            started = time.perf_counter()
            result = super().step(frame, state, out_size)
            self.ms.append((time.perf_counter() - started) * 1e3)
            return result

    fidelity: list[float] = []

    def compare(index, k, outputs, gt):
        if k >= STEADY_FROM:
            fidelity.append(psnr(outputs[precision], outputs["fp32"], EVAL_BORDER))

    methods = {"fp32": Timed(fp32), precision: Timed(quantized)}
    summary, _ = score(methods, sequences, on_frame=compare)
    if not summary["steady_frames"]:
        raise ValueError(f"no steady-state frames (sequences shorter than {summary['steady_from'] + 1} frames)")
    scores = {label: {"psnr_rgb": summary[label]["psnr_rgb"], "flip": summary[label]["flip"],
                      "frames": summary["steady_frames"]} for label in methods}
    speed = {label: statistics.median(method.ms) for label, method in methods.items()}
    backends = {label: method.backend.name for label, method in methods.items()}
    return {**scores, "psnr_delta_db": scores[precision]["psnr_rgb"] - scores["fp32"]["psnr_rgb"],
            "flip_delta": scores[precision]["flip"] - scores["fp32"]["flip"], "fidelity_db": statistics.mean(fidelity),
            "border_crop": summary["border_crop"], "ms_per_step": speed, "backends": backends,
            "speedup": speed["fp32"] / speed[precision] if backends["fp32"] == backends[precision] else None}
