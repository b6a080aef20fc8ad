"""Export a trained student to ONNX (and to a TensorRT engine where a GPU and `tensorrt` are present).

    manifest = export_student(storage, "student-v0.1-pico-004")

Artefacts go to the run's storage under runs/<name>/exports/<tier>-x<ratio>/:
    student.onnx          opset 17, dynamic batch / height / width; inputs (render resolution h x w,
                          output resolution H x W): lr [B,3,h,w], depth [B,1,h,w], jitter [B,2],
                          motion [B,2,h,w], previous_depth [B,1,h,w], previous [B,4,H,W] -> outputs
                          output [B,3,H,W] and history [B,4,H,W] (the stream's history: feed `history`
                          and this frame's depth back as `previous` and `previous_depth` with the next
                          frame; zeros start a stream)
    student.int8.onnx     with quantize=("int8",): the QDQ INT8 model (quantize.py), when its PSNR cost is in bounds;
                          the manifest's quantized.int8 records its format and the CPU its cost was measured on
    student.<p>.engine    TensorRT engine at precision p (fp16, int8), only on a GPU with tensorrt
    manifest.json         tier, ratio, input size, precision, source run and checkpoint, sha256 of each
                          file, the ONNX Runtime parity on real frames, why TensorRT was skipped

The ONNX file is checked against PyTorch with ONNX Runtime on real held-out frames run recurrently
(each step fed the previous output), to a maximum absolute error of PARITY_TOLERANCE.
"""

from __future__ import annotations

import hashlib
import io
from datetime import datetime, timezone

import numpy as np
import torch

from .checkpoints import load_model
from .models.accumulate import HISTORY_CHANNELS, empty_history
from .models.temporal import FRAME_KEYS
from .runs import RunRegistry
from .storage import Storage
from .tiers import TIERS, ratio_fraction, scaled_size

INPUT_NAMES = ["lr", "depth", "jitter", "motion", "previous_depth", "previous"]
OUTPUT_NAMES = ["output", "history"]
OPSET = 17
PARITY_TOLERANCE = 1e-3
QUANTIZATIONS = ("int8", "fp8")  # int8: QDQ ONNX for ONNX Runtime; fp8: E4M3 QDQ ONNX + TensorRT engine (GPU)
MAX_PSNR_DROP_DB = 0.2  # the most steady-state PSNR a quantized export may lose against fp32
# The least fidelity (PSNR of the quantized output against the fp32 output) a quantized export may have:
# 20 log10(255), an RMS difference of one 8-bit code value.
MIN_FIDELITY_DB = 48.13
MANIFEST = "manifest.json"


class ExportError(RuntimeError):
    """The export or its parity check failed."""


def export_prefix(run_key: str, tier: str, ratio: float) -> str:
    return f"{run_key}/exports/{tier}-x{ratio:g}"


def onnx_bytes(model: torch.nn.Module, sample: tuple[torch.Tensor, ...]) -> bytes:
    """ONNX of one recurrent step with dynamic batch and sizes (the TorchScript exporter: no onnxscript)."""
    render = {0: "batch", 2: "h", 3: "w"}
    dynamic = {name: render for name in INPUT_NAMES if name not in ("jitter", "previous")}
    output = {0: "batch", 2: "H", 3: "W"}
    dynamic.update(jitter={0: "batch"}, previous=output, output=output, history=output)
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model.eval(), sample, buffer, input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
    return buffer.getvalue()


def frame_steps(model: torch.nn.Module, window: dict, ratio: float) -> list[tuple[torch.Tensor, ...]]:
    """Step inputs for every frame of one window ({key: [K, ...]} tensors), each with the model's own
    history buffer and the previous depth (the first frame: zeros, no history), as a game would stream them."""
    frames = window["lr"].shape[0]
    h, w = window["lr"].shape[-2:]
    out_size = tuple(window["gt"].shape[-2:]) if "gt" in window else scaled_size(h, w, ratio)
    previous, previous_depth = empty_history(window["lr"][:1].float(), out_size)
    steps = []
    for k in range(frames):
        frame = {key: window[key][k : k + 1].float() for key in FRAME_KEYS}
        inputs = (frame["lr"], frame["depth"], frame["jitter"], frame["motion"], previous_depth, previous)
        steps.append(inputs)
        with torch.no_grad():
            _, previous = model(*inputs)
        previous_depth = frame["depth"]
    return steps


def onnx_parity(model: torch.nn.Module, onnx: bytes, steps: list[tuple[torch.Tensor, ...]]) -> float:
    """Largest |ONNX Runtime - PyTorch| over both outputs of `steps`: the image and the history buffer's
    colour in [0, 1], its accumulated sample weight as a fraction of the most it can hold."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    count_scale = np.ones((1, HISTORY_CHANNELS, 1, 1), np.float32)
    count_scale[:, 3] = 1.0 / model.accumulator.max_history
    worst = 0.0
    for inputs in steps:
        with torch.no_grad():
            expected = [t.numpy() for t in model(*inputs)]
        got = session.run(OUTPUT_NAMES, {name: t.numpy() for name, t in zip(INPUT_NAMES, inputs)})
        for name, g, e in zip(OUTPUT_NAMES, got, expected):
            if g.shape != e.shape:
                raise ExportError(f"ONNX {name} shape {g.shape} != PyTorch {e.shape}")
            scale = count_scale if name == "history" else 1.0
            worst = max(worst, float((np.abs(g - e) * scale).max()))
    return worst


def tensorrt_unavailable() -> str | None:
    """None when a TensorRT engine can be built here, else why not."""
    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine (TensorRT engines are built on the GPU they run on)"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python package is not installed (pip install tensorrt)"
    return None


def build_tensorrt_engine(onnx: bytes, precision: str, input_size: tuple[int, int], ratio: float,
                          calibration: list[tuple[torch.Tensor, ...]] | None = None) -> bytes:
    """Serialize a TensorRT engine for `onnx` (GPU only). precision: fp16, int8 (calibrated on `calibration`) or
    fp8 (`onnx` must be an FP8 QDQ graph: quantize.quantize_fp8).

    The optimisation profile spans quarter to full `input_size` (W, H) render resolution at batch 1..4.
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse the ONNX file: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    config.set_flag(trt.BuilderFlag.FP16)
    width, height = input_size
    shapes = {}
    for fraction, batch in (("min", (0.25, 1)), ("opt", (1.0, 1)), ("max", (1.0, 4))):
        scale, count = batch
        h, w = max(8, int(height * scale)), max(8, int(width * scale))
        H, W = scaled_size(h, w, ratio)
        shapes[fraction] = {"lr": (count, 3, h, w), "depth": (count, 1, h, w), "jitter": (count, 2),
                            "motion": (count, 2, h, w), "previous_depth": (count, 1, h, w),
                            "previous": (count, HISTORY_CHANNELS, H, W)}
    profile = builder.create_optimization_profile()
    for name in INPUT_NAMES:
        profile.set_shape(name, shapes["min"][name], shapes["opt"][name], shapes["max"][name])
    config.add_optimization_profile(profile)
    if precision == "int8":
        if not builder.platform_has_fast_int8:
            raise ExportError("this GPU has no fast INT8: export fp16 instead")
        if not calibration:
            raise ExportError("INT8 needs calibration frames")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _Calibrator(trt, calibration)
        config.set_calibration_profile(profile)
    elif precision == "fp8":  # explicit quantization: the graph's FP8 Q/DQ nodes carry the scales
        config.set_flag(trt.BuilderFlag.FP8)
    elif precision != "fp16":
        raise ExportError(f"TensorRT precision {precision!r}: use fp16 or int8 (fp8 comes from --quantize fp8, which "
                          "writes the FP8 Q/DQ graph first)")
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ExportError(f"TensorRT failed to build the {precision} engine (see its log above)")
    return bytes(engine)


def _Calibrator(trt, steps):
    """An entropy calibrator that feeds the recorded step inputs, one frame per batch."""

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.steps, self.index, self.buffers = steps, 0, {}

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            if self.index >= len(self.steps):
                return None
            inputs = dict(zip(INPUT_NAMES, self.steps[self.index]))
            self.index += 1
            self.buffers = {name: inputs[name].contiguous().cuda() for name in names}
            return [int(self.buffers[name].data_ptr()) for name in names]

        def read_calibration_cache(self):
            return None

        def write_calibration_cache(self, cache):
            return None

    return Calibrator()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export_student(storage: Storage, run_name: str, precisions: tuple[str, ...] = ("fp16",), parity_frames: int = 4,
                   log=print, quantize: tuple[str, ...] = (), max_psnr_drop_db: float = MAX_PSNR_DROP_DB,
                   calibration: list[dict] | None = None, min_fidelity_db: float = MIN_FIDELITY_DB) -> dict:
    """Export the run's newest checkpoint; returns the manifest (also written next to the files).

    `quantize=("int8",)` adds a QDQ INT8 ONNX model calibrated on `calibration` windows (default: frames of the
    training distribution, 2 sequences) and scored against fp32 on held-out sequences; "fp8" adds an FP8 (E4M3) QDQ
    model and its TensorRT engine (an FP8 GPU with TensorRT and ModelOpt only), scored the same way; nothing is written when
    its steady-state PSNR drops by more than `max_psnr_drop_db` or its output's PSNR against the fp32 output is
    under `min_fidelity_db` (see `quantize_gated`)."""
    from .evaluate import heldout_sequences, window_tensors

    registry = RunRegistry(storage)
    names = registry.names()
    if str(run_name) not in {str(name) for name in names}:
        students = [str(n) for n in names if n.family == "student"]
        raise FileNotFoundError(f"no run {run_name} under {storage.url('runs')}; student runs there: "
                                f"{', '.join(students) or 'none'} (all runs: python -m oss_cluster.dashboard serve "
                                f"--runs {storage.uri})")
    model, cfg, checkpoint = load_model(storage, run_name)
    if cfg.model.name not in {f"student_{tier}" for tier in TIERS}:
        raise ExportError(f"run {run_name} trained {cfg.model.name!r}, and export ships students (student_<tier>). "
                          f"Distil a student from it first: python jobs/distill_student.py --tier {cfg.tier} "
                          f"--teacher-run {run_name} --set storage.root={storage.uri}, then export that student run")
    run = registry.open(run_name)
    ratio, tier = cfg.data.ratio, TIERS[cfg.tier]
    windows = [window_tensors(w) for w in heldout_sequences(cfg, frames=parity_frames)]
    steps = [step for window in windows for step in frame_steps(model, window, ratio)]
    onnx = onnx_bytes(model, steps[0])
    error = onnx_parity(model, onnx, steps)
    log(f"ONNX Runtime vs PyTorch on {len(steps)} real frames: max abs error {error:.2e} (tolerance {PARITY_TOLERANCE:g})")
    if not error <= PARITY_TOLERANCE:
        raise ExportError(f"ONNX parity failed: max abs error {error:.3e} > {PARITY_TOLERANCE:g}")
    prefix = export_prefix(run.prefix, cfg.tier, ratio)
    unknown = set(quantize) - set(QUANTIZATIONS)
    if unknown:
        raise ExportError(f"quantization {sorted(unknown)}: export quantizes to {' or '.join(QUANTIZATIONS)}")
    if "fp8" in quantize:
        from .quantize import fp8_unavailable

        reason = fp8_unavailable()
        if reason:
            raise ExportError(f"FP8 needs a TensorRT engine on an FP8 GPU, and here: {reason}. Nothing was written; "
                              "export with --quantize int8, or on such a GPU")
    quantized = {precision: quantize_gated(model, cfg, onnx, calibration, max_psnr_drop_db, min_fidelity_db, log,
                                           precision) for precision in quantize}  # before any write
    files = {"onnx": {"key": f"{prefix}/student.onnx", "sha256": _sha256(onnx), "bytes": len(onnx),
                      "precision": "fp32", "opset": OPSET}}
    storage.write_bytes(files["onnx"]["key"], onnx)
    engines = {}
    for precision, (artefacts, cost) in quantized.items():
        data = artefacts["onnx"]
        files[f"onnx_{precision}"] = {"key": f"{prefix}/student.{precision}.onnx", "sha256": _sha256(data),
                                      "bytes": len(data), "precision": precision, "format": "QDQ", "opset": OPSET}
        storage.write_bytes(files[f"onnx_{precision}"]["key"], data)
        if "engine" in artefacts:
            engines[precision] = artefacts["engine"]
    skipped = tensorrt_unavailable()
    tensorrt = {"skipped": skipped} if skipped else {}
    for precision, engine in engines.items():  # the FP8 engine, built and scored by quantize_gated
        key = f"{prefix}/student.{precision}.engine"
        storage.write_bytes(key, engine)
        tensorrt[precision] = {"key": key, "sha256": _sha256(engine), "bytes": len(engine),
                               "device": torch.cuda.get_device_name(0), "from": files[f"onnx_{precision}"]["key"]}
    if skipped:
        log(f"TensorRT export skipped: {skipped}")
    else:
        for precision in precisions:
            engine = build_tensorrt_engine(onnx, precision, tier.input_size, ratio, calibration=steps)
            key = f"{prefix}/student.{precision}.engine"
            storage.write_bytes(key, engine)
            tensorrt[precision] = {"key": key, "sha256": _sha256(engine), "bytes": len(engine),
                                   "device": torch.cuda.get_device_name(0)}
            log(f"TensorRT {precision} engine: {len(engine):,} bytes")
    manifest = {
        "tier": cfg.tier, "model": cfg.model.name, "options": cfg.model.options, "ratio": ratio,
        "ratio_fraction": str(ratio_fraction(ratio)),  # what sizes scale by, exactly (tiers.scaled_size)
        "input_size": list(tier.input_size), "output_size": list(tier.output_size),
        "precision": "fp32" if skipped else ["fp32", *precisions],
        "source_run": str(run.name), "source_checkpoint": checkpoint, "source_step": _last_step(run.record),
        "files": files, "tensorrt": tensorrt,
        "quantized": {precision: cost for precision, (_, cost) in quantized.items()},
        "parity": {"max_abs_error": error, "frames": len(steps), "tolerance": PARITY_TOLERANCE,
                   "frame_size": list(steps[0][0].shape[-2:])},
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    storage.write_json(f"{prefix}/{MANIFEST}", manifest)
    run.add_artefact(f"export_{cfg.tier}", f"{prefix}/{MANIFEST}")
    log(f"manifest: {storage.url(f'{prefix}/{MANIFEST}')}")
    return manifest


def calibration_windows(cfg, sequences: int = 2, frames: int = 16) -> list[dict]:
    """Window tensors of the training distribution (its scene seeds, never the held-out ones) to calibrate on."""
    from .data.synth import synth_windows
    from .evaluate import window_tensors

    data = cfg.data
    return [window_tensors(w) for w in synth_windows(
        sequences * frames, data.ratio, tuple(data.out_size), frames, frames, data.seed, data.objects,
        data.gt_samples, motion_scale=data.motion_scale, motion=data.motion)]


def quantize_gated(model, cfg, onnx: bytes, calibration: list[dict] | None = None,
                   max_psnr_drop_db: float = MAX_PSNR_DROP_DB, min_fidelity_db: float = MIN_FIDELITY_DB,
                   log=print, precision: str = "int8") -> tuple[dict, dict]:
    """({"onnx": QDQ model bytes[, "engine": TensorRT engine bytes]}, its measured cost: quantize.quality_cost) of
    the fp32 export `onnx` of `model` at `precision`: int8 (ONNX Runtime) or fp8 (E4M3 through TensorRT; GPU only),
    calibrated on `calibration` windows (default: frames of the training distribution, 2 sequences, never the
    held-out ones) and scored on held-out sequences against the fp32 export in ONNX Runtime. Raises ExportError
    when its steady-state PSNR drops by more than `max_psnr_drop_db` or its fidelity to the fp32 output is under
    `min_fidelity_db`."""
    from .evaluate import heldout_sequences
    from .quantize import (INT8_FORMAT, INT8_VARIANT, calibration_feeds, cpu_int8_features, quality_cost,
                           quantize_fp8, quantize_int8)
    from .serving.backends import OnnxRuntimeBackend, TensorRTBackend

    calibration = calibration_windows(cfg) if calibration is None else calibration
    feeds = calibration_feeds([step for window in calibration for step in frame_steps(model, window, cfg.data.ratio)])
    if precision == "int8":
        artefacts = {"onnx": quantize_int8(onnx, feeds)}
        backend, ops = OnnxRuntimeBackend(artefacts["onnx"], threads=1), "Conv, MatMul, Gemm"
        # The format, and the CPU the gate measured on (its figures hold on any CPU: see INT8_FORMAT's why).
        described = {"format": {"variant": INT8_VARIANT, **INT8_FORMAT},
                     "measured_on": {**cpu_int8_features(), "onnxruntime": backend.version}}
    elif precision == "fp8":
        quantized = quantize_fp8(onnx, feeds)
        engine = build_tensorrt_engine(quantized, "fp8", TIERS[cfg.tier].input_size, cfg.data.ratio)
        artefacts, backend, ops = {"onnx": quantized, "engine": engine}, TensorRTBackend(engine), "Conv"
        described = {"format": {"format": "QDQ", "type": "FP8 E4M3 (NVIDIA ModelOpt, max calibration)"},
                     "measured_on": {"gpu": torch.cuda.get_device_name(0), "tensorrt": backend.version}}
    else:
        raise ExportError(f"quantization {precision!r}: export quantizes to {' or '.join(QUANTIZATIONS)}")
    cost = quality_cost(OnnxRuntimeBackend(onnx, threads=1), backend,
                        heldout_sequences(cfg, frames=max(16, cfg.train.eval_frames)), precision)
    cost.update(calibration_frames=len(feeds), max_psnr_drop_db=max_psnr_drop_db, min_fidelity_db=min_fidelity_db,
                quantized_ops=ops, timing_includes={"fp32": OnnxRuntimeBackend.timing_includes,
                                                    precision: backend.timing_includes}, **described)
    name = precision.upper()
    speed = (f"one ONNX Runtime thread ({cost['speedup']:.2f}x)" if cost["speedup"] is not None else
             f"{cost['backends'][precision]} vs {cost['backends']['fp32']}")
    variant = described["format"].get("variant", "e4m3")
    log(f"{name} (QDQ {variant}, {len(feeds)} calibration frames): steady-state PSNR "
        f"{cost[precision]['psnr_rgb']:.3f} dB vs fp32 {cost['fp32']['psnr_rgb']:.3f} ({cost['psnr_delta_db']:+.3f} dB), "
        f"FLIP {cost['flip_delta']:+.4f}, "
        f"fidelity to fp32 {cost['fidelity_db']:.1f} dB, {cost['ms_per_step'][precision]:.2f} vs "
        f"{cost['ms_per_step']['fp32']:.2f} ms per step on {speed}; measured on {_machine(described['measured_on'])}")
    advice = f"Calibrate on frames like the ones it will see, or export without --quantize {precision}"
    if -cost["psnr_delta_db"] > max_psnr_drop_db:
        raise ExportError(f"the {name} model loses {-cost['psnr_delta_db']:.3f} dB of steady-state PSNR against fp32 "
                          f"(bound {max_psnr_drop_db:g} dB): refused, nothing was written. {advice}")
    if cost["fidelity_db"] < min_fidelity_db:
        raise ExportError(f"the {name} model's output strays from the fp32 model's: fidelity {cost['fidelity_db']:.1f} "
                          f"dB < {min_fidelity_db:g} dB (steady-state PSNR {cost['psnr_delta_db']:+.3f} dB against "
                          f"fp32's, so it is not the model that was validated): refused, nothing was written. {advice}")
    return artefacts, cost


def _machine(measured_on: dict) -> str:
    """A GPU's name, or a CPU's int8 features (AVX2/AVX512VNNI), or its name where it has none of them."""
    return measured_on.get("gpu") or "/".join(measured_on.get("features") or []) or measured_on.get("cpu", "?")


def _last_step(record: dict) -> int | None:
    steps = record.get("step_metrics") or []
    return steps[-1]["step"] if steps else None


def read_manifest(storage: Storage, key: str) -> dict:
    """A manifest written by export_student, with its files checked against their sha256."""
    if not storage.exists(key):
        raise FileNotFoundError(f"{storage.url(key)}: no export manifest")
    manifest = storage.read_json(key)
    for label in ("tier", "ratio", "files"):
        if label not in manifest:
            raise ExportError(f"{storage.url(key)}: manifest has no {label!r}")
    return manifest


def verified_bytes(storage: Storage, entry: dict) -> bytes:
    """A manifest file's bytes, refused when its sha256 does not match."""
    data = storage.read_bytes(entry["key"])
    if _sha256(data) != entry["sha256"]:
        raise ExportError(f"{storage.url(entry['key'])}: sha256 mismatch (file changed after export)")
    return data
