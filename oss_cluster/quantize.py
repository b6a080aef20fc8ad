"""INT8 static quantization of an exported student, with its measured quality cost, and quantization-aware training.

    int8 = quantize_int8(onnx, calibration_feeds(steps))   # a QDQ ONNX model (quantize_fp8: FP8, for TensorRT)
    cost = quality_cost(OnnxRuntimeBackend(onnx), OnnxRuntimeBackend(int8), sequences)  # PSNR / FLIP, the deltas
    quantization_aware(student)                             # train it seeing what the INT8 model will compute

The network's convolutions and matrix products are quantized (INT8_FORMAT: uint8 activations, int8 weights per
output channel in 7 bits, QDQ format, calibrated by MinMax on real frames run recurrently); the accumulation around
them (resampling, history blending, whose weights reach 16) stays fp32: 8 bits cannot hold a history weight and its
colour.

Why 7-bit weights: ONNX Runtime's x86 kernels for uint8 x int8 products on CPUs without VNNI (AVX2, AVX-512BW)
use VPMADDUBSW, which adds each pair of products in 16 bits and saturates: 2 x 255 x 127 = 64,770 overflows int16
(32,767), so the model's output depended on the CPU it ran on. Weights within +-64 keep every pair within 2 x 255 x
64 = 32,640, so those kernels, the VNNI and AMX ones (exact 32-bit sums) and ARM's dot products all compute the same
integers: the numbers the export gate measured are the numbers any CPU computes (ONNX Runtime's documented remedy,
reduce_range; its other one, U8U8, has no int8 weights for TensorRT; symmetric int8 activations are turned back
into uint8 on x86 and saturate the same way: benchmarks/bench_int8_formats.py measures all three).
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
ACTIVATION_LEVELS = (0, 255)  # uint8, asymmetric per tensor: the calibrated [min, max] (with 0) spread over 0..255
WEIGHT_LEVELS = (-64, 64)  # int8, symmetric per output channel, 7 bits (ONNX Runtime's reduce_range): see above
INT8_FORMAT = {
    "format": "QDQ", "activations": "uint8, asymmetric, per tensor, MinMax calibration",
    "weights": f"int8, symmetric, per output channel, {WEIGHT_LEVELS[0]}..{WEIGHT_LEVELS[1]} (7 bits, reduce_range)",
    "why": "every u8 x s8 pair sums within int16 (2 x 255 x 64 = 32640), so CPUs with and without VNNI compute "
           "the same integers",
}
# An x86 CPU emulated without VNNI or AVX-512 (qemu's Haswell model): where U8S8 products saturate.
EMULATED_AVX2_CPU = "Haswell-noTSX"


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
    q_min, q_max = ACTIVATION_LEVELS
    scale = max(high - low, 1e-8) / (q_max - q_min)
    zero_point = min(q_max, max(q_min, round(q_min - low / scale)))
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, q_min, q_max)


def _fake_quant_weight(weight: torch.Tensor) -> torch.Tensor:
    """[C_out, ...] weights rounded as the export rounds them: per output channel, symmetric, WEIGHT_LEVELS."""
    q_min, q_max = WEIGHT_LEVELS
    absmax = weight.detach().abs().amax(dim=tuple(range(1, weight.dim())))
    scales = (2 * absmax / (q_max - q_min)).clamp(min=1e-8)  # straight-through: no gradient into the scale
    return torch.fake_quantize_per_channel_affine(weight, scales, torch.zeros_like(scales, dtype=torch.int32), 0,
                                                  q_min, q_max)


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
        w_q = _fake_quant_weight(self.weight.float())
        out = self._conv_forward(_fake_quant_uint8(x32, self.input_range), w_q, None if self.bias is None
                                 else self.bias.float())
        if tracking:
            with torch.no_grad():
                self.output_range = _tracked_range(self.output_range, out)
        return _fake_quant_uint8(out, self.output_range).to(x.dtype)


def quantization_aware(model: nn.Module) -> nn.Module:
    """Make every nn.Conv2d of `model` compute as the INT8 QDQ export will (`quantize_int8`, INT8_FORMAT): its weights
    rounded per output channel (symmetric, 7 bits), its input and its output to uint8 per tensor over the ranges seen in
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


# name: quantize_static's arguments, types by QuantType name. The first is INT8_FORMAT, what export writes; the
# others are there to be compared with it (benchmarks/bench_int8_formats.py), not shipped.
_VARIANTS = {
    "u8s8-7bit": dict(activation_type="QUInt8", weight_type="QInt8", reduce_range=True),
    "u8s8-8bit": dict(activation_type="QUInt8", weight_type="QInt8"),  # the format before: saturates without VNNI
    "s8s8-symmetric": dict(activation_type="QInt8", weight_type="QInt8", extra_options={"ActivationSymmetric": True}),
    "u8u8": dict(activation_type="QUInt8", weight_type="QUInt8"),
}
INT8_VARIANTS = tuple(_VARIANTS)
INT8_VARIANT = INT8_VARIANTS[0]


def quantize_int8(onnx: bytes, calibration: list[dict[str, np.ndarray]], variant: str = INT8_VARIANT) -> bytes:
    """A QDQ INT8 model of `onnx`, its activation ranges taken from `calibration` (one input dict per step), in
    INT8_FORMAT (`variant` u8s8-7bit; the other INT8_VARIANTS are for comparing formats, not for shipping)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if variant not in _VARIANTS:
        raise ValueError(f"INT8 variant {variant!r}: one of {', '.join(INT8_VARIANTS)}")
    arguments = {key: QuantType[value] if key.endswith("_type") else value for key, value in _VARIANTS[variant].items()}

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
            quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            op_types_to_quantize=QUANTIZED_OPS, **arguments)
        finally:
            root.setLevel(level)
        quantized = target.read_bytes()
    if variant == INT8_VARIANT:
        widest = widest_int8_weight(quantized)
        if widest > WEIGHT_LEVELS[1]:  # the format's whole point: refuse rather than ship CPU-dependent numbers
            raise RuntimeError(f"the INT8 model has int8 weights up to {widest}, outside {WEIGHT_LEVELS}: this "
                               "onnxruntime's reduce_range no longer gives 7-bit weights")
    return quantized


def widest_int8_weight(model: bytes) -> int:
    """Largest |q| of the model's int8 initializers (quantized weights; 0 when it has none)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(model).graph
    weights = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    return max((int(np.abs(w.astype(np.int32)).max()) for w in weights if w.size), default=0)


CPU_INT8_FEATURES = ("AVX2", "AVX512F", "AVX512BW", "AVX512VNNI", "ASIMD", "ASIMDDP")


def cpu_int8_features() -> dict:
    """The CPU as ONNX Runtime's int8 kernels see it: {"machine", "cpu" (model name), "features" (those of
    CPU_INT8_FEATURES it has, read by CPUID as numpy's dispatcher reads it, so an emulated CPU reports itself),
    "int8_products" (how u8 x s8 products are summed there)}. AVX-VNNI and AMX are not among what numpy reads."""
    import platform

    try:
        from numpy._core._multiarray_umath import __cpu_features__ as detected
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_features__ as detected
    features = [name for name in CPU_INT8_FEATURES if detected.get(name)]
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    if "AVX512VNNI" in features:
        products = "VNNI: u8 x s8 products summed in 32 bits"
    elif "AVX2" in features or "AVX512BW" in features:
        products = "VPMADDUBSW: pairs of u8 x s8 products summed in 16 bits, saturating (exact for 7-bit weights)"
    elif "ASIMDDP" in features:
        products = "dot-product instructions: summed in 32 bits"
    else:
        products = "widened to 16 bits before multiplying"
    return {"machine": platform.machine(), "cpu": cpu, "features": features, "int8_products": products}


_EMULATED_RUN = """
import json, pathlib, sys
import numpy as np, onnxruntime as ort
from oss_cluster.quantize import cpu_int8_features
folder, feeds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
options = ort.SessionOptions()
options.intra_op_num_threads = 1
for model in sorted(folder.glob("model*.onnx")):
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    for i in range(feeds):
        with np.load(folder / f"feed{i}.npz") as feed:
            np.savez(folder / f"{model.stem}.out{i}.npz", *session.run(None, dict(feed)))
(folder / "cpu.json").write_text(json.dumps(cpu_int8_features()))
"""


def emulated_cpu_unavailable() -> str | None:
    """None when ONNX Runtime can run on an emulated x86 CPU here (run_on_emulated_cpu), else why not."""
    import platform
    import shutil

    if platform.machine() not in ("x86_64", "AMD64"):
        return f"this machine is {platform.machine()}, and the emulated CPU is x86-64"
    if shutil.which("qemu-x86_64") is None:
        return "qemu-x86_64 is not installed (Debian: apt-get install qemu-user)"
    return None


def run_on_emulated_cpu(models: dict[str, bytes], feeds: list[dict[str, np.ndarray]], cpu: str = EMULATED_AVX2_CPU,
                        timeout_s: float = 900) -> tuple[dict[str, list[list[np.ndarray]]], dict]:
    """Run each of `models` ({name: ONNX bytes}) with ONNX Runtime (CPU, one thread) on each of `feeds`, in one
    Python under qemu's user-mode emulation of the x86 CPU model `cpu` (default: an AVX2 CPU without VNNI or
    AVX-512, where U8S8 products saturate). qemu answers CPUID as that CPU would, so ONNX Runtime picks that
    CPU's kernels. Returns ({name: outputs per feed}, the emulated CPU's cpu_int8_features). Raises RuntimeError
    when it cannot (emulated_cpu_unavailable) or the run fails."""
    import json
    import subprocess
    import sys

    reason = emulated_cpu_unavailable()
    if reason:
        raise RuntimeError(f"cannot emulate an x86 CPU here: {reason}")
    with tempfile.TemporaryDirectory() as folder:
        files = {name: Path(folder, f"model{index}.onnx") for index, name in enumerate(models)}
        for name, path in files.items():
            path.write_bytes(models[name])
        for i, feed in enumerate(feeds):
            np.savez(Path(folder, f"feed{i}.npz"), **feed)
        done = subprocess.run(["qemu-x86_64", "-cpu", cpu, sys.executable, "-c", _EMULATED_RUN, folder,
                               str(len(feeds))], capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise RuntimeError(f"ONNX Runtime on the emulated {cpu} CPU failed (exit {done.returncode}): "
                               f"{done.stderr.strip()[-2000:]}")
        outputs = {}
        for name, path in files.items():
            outputs[name] = []
            for i in range(len(feeds)):
                with np.load(Path(folder, f"{path.stem}.out{i}.npz")) as saved:  # arr_0, arr_1, ...: in order
                    outputs[name].append([saved[f"arr_{j}"] for j in range(len(saved.files))])
        features = json.loads(Path(folder, "cpu.json").read_text())
    features["cpu"] = f"qemu's {cpu} model, emulated on {features['cpu']}"  # /proc/cpuinfo shows the host's
    return outputs, features


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
