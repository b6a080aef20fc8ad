"""Inference backends for one exported student: TensorRT on GPU workers, ONNX Runtime elsewhere.

Both run one recurrent step on a batch: inputs {name: float32 array} as in oss_cluster/export.py
(lr [B,3,h,w], depth [B,1,h,w], jitter [B,2], motion [B,2,h,w], previous_depth [B,1,h,w],
previous [B,4,H,W]) -> (output float32 [B,3,H,W], history buffer float32 [B,4,H,W]).
"""

from __future__ import annotations

import numpy as np

from ..export import INPUT_NAMES, OUTPUT_NAMES, onnx_bytes, tensorrt_unavailable, verified_bytes
from ..storage import Storage
from ..tiers import scaled_size


class OnnxRuntimeBackend:
    name = "onnxruntime"
    precision = "fp32"  # load_backend sets int8 for the QDQ model
    timing_includes = "the run on the CPU (no device copies)"  # what a run's time covers

    def __init__(self, onnx: bytes, threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
        self.version = ort.__version__

    def run(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        output, history = self.session.run(OUTPUT_NAMES, {name: inputs[name] for name in INPUT_NAMES})
        return output, history


class TensorRTBackend:
    """A deserialized TensorRT engine run on the current CUDA device through torch tensors."""

    name = "tensorrt"
    precision = "fp16"  # load_backend sets the engine's
    timing_includes = "host-to-device copies of the inputs, the engine, and device-to-host copies of the outputs"

    def __init__(self, engine: bytes):
        import tensorrt as trt
        import torch

        self.torch = torch
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(engine)
        if self.engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine (built for another GPU or TensorRT version?)")
        self.context = self.engine.create_execution_context()
        self.version = trt.__version__

    def run(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        device = torch.device("cuda")
        tensors = {name: torch.from_numpy(inputs[name]).to(device).contiguous() for name in INPUT_NAMES}
        for name, tensor in tensors.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in OUTPUT_NAMES:
            outputs[name] = torch.empty(tuple(self.context.get_tensor_shape(name)), device=device, dtype=torch.float32)
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return tuple(outputs[name].cpu().numpy() for name in OUTPUT_NAMES)


def load_backend(manifest: dict, storage: Storage | None, prefer: str = "auto", threads: int = 1,
                 precision: str = "auto"):
    """The backend for an exported student, its files checked against their sha256.

    precision auto: the fp16 TensorRT engine (else the manifest's first) when the manifest has one and this worker
    can run it (prefer 'auto' or 'tensorrt'), else the fp32 ONNX model in ONNX Runtime. A named precision picks that
    engine (fp16, int8, fp8) or ONNX model (fp32, or int8: the QDQ model of `export --quantize int8`), and is an
    error naming what the manifest has when neither can run here. The backend's `precision` says which it is."""
    engines = {k: v for k, v in manifest.get("tensorrt", {}).items() if isinstance(v, dict)}
    tensorrt_reason = tensorrt_unavailable()
    if prefer in ("auto", "tensorrt") and engines and tensorrt_reason is None:
        chosen = ("fp16" if "fp16" in engines else next(iter(engines))) if precision == "auto" else precision
        if chosen in engines:
            backend = TensorRTBackend(verified_bytes(storage, engines[chosen]))
            backend.precision = chosen
            return backend
    if prefer == "tensorrt":
        why = tensorrt_reason or (f"the manifest has no {precision} engine (it has: {', '.join(engines) or 'none'})"
                                  if engines else "the manifest lists no TensorRT engine")
        raise RuntimeError(f"backend 'tensorrt' requested but unavailable: {why}")
    key = {"auto": "onnx", "fp32": "onnx", "int8": "onnx_int8"}.get(precision)
    if key is None or key not in manifest["files"]:
        onnx_models = [entry.get("precision", name) for name, entry in manifest["files"].items()]
        reason = ("the manifest has no INT8 ONNX model (export with --quantize int8)" if key else
                  f"{precision} runs only as a TensorRT engine"
                  f"{': ' + tensorrt_reason if tensorrt_reason else ' and the manifest has none for it'}")
        raise RuntimeError(f"precision {precision!r}: {reason}; ONNX models in the manifest: {', '.join(onnx_models)}, "
                           f"TensorRT engines: {', '.join(engines) or 'none'}")
    entry = manifest["files"][key]
    data = verified_bytes(storage, entry) if storage is not None else entry["data"]
    backend = OnnxRuntimeBackend(data, threads)
    backend.precision = "int8" if key == "onnx_int8" else "fp32"
    return backend


def untrained_manifest(model_name: str, ratio: float) -> dict:
    """An in-memory 'export' of an untrained student (development and latency tests: timing does not
    depend on the weights). Its version says so."""
    import torch

    from ..models import build_model
    from ..models.accumulate import HISTORY_CHANNELS
    from ..models.student import STUDENT_TIERS

    if model_name not in STUDENT_TIERS:
        raise ValueError(f"{model_name!r} is not a student ({', '.join(sorted(STUDENT_TIERS))})")
    torch.manual_seed(0)
    model = build_model(model_name).eval()
    h, w = 16, 24
    H, W = scaled_size(h, w, ratio)
    sample = (torch.rand(1, 3, h, w), torch.rand(1, 1, h, w), torch.zeros(1, 2), torch.zeros(1, 2, h, w),
              torch.zeros(1, 1, h, w), torch.zeros(1, HISTORY_CHANNELS, H, W))
    data = onnx_bytes(model, sample)
    return {"tier": STUDENT_TIERS[model_name], "model": model_name, "ratio": ratio, "source_run": "untrained",
            "files": {"onnx": {"data": data, "bytes": len(data), "sha256": None}}, "tensorrt": {}}
