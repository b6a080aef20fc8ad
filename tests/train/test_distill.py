"""Shipping path on the session's Ray instance: a (tiny) Pico teacher run, the Pico student distilled
from it with the smoke schedule, its ONNX export with manifest, and Net2Net initialisation."""

import sys
from pathlib import Path

import numpy as np
import pytest

from oss_cluster.checkpoints import CheckpointError, latest_checkpoint, load_model
from oss_cluster.config import load_config
from oss_cluster.export import INPUT_NAMES, PARITY_TOLERANCE, read_manifest, verified_bytes
from oss_cluster.models.accumulate import HISTORY_CHANNELS
from oss_cluster.serving.backends import load_backend
from oss_cluster.storage import open_storage
from oss_cluster.train.distributed import train_distributed

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_distilled_pico_student_beats_bicubic_on_heldout_frames(shipped):
    root, teacher, student, result = shipped
    assert student.startswith("student-v0.1-pico-")
    evaluation = result.metrics  # steady state of 32-frame held-out sequences
    assert evaluation["eval/model/psnr_rgb"] > evaluation["eval/bicubic/psnr_rgb"], evaluation
    assert evaluation["eval/model/all/psnr_rgb"] > evaluation["eval/bicubic/all/psnr_rgb"], evaluation
    record = open_storage(str(root)).read_json(f"runs/{student}/metrics.json")
    assert record["status"] == "finished" and record["artefacts"]["teacher_checkpoint"].startswith(f"runs/{teacher}/")
    assert record["artefacts"]["latest_strip"].endswith(".png")


def test_export_writes_onnx_with_manifest_and_passes_parity(shipped, exported):
    root, _, student, _ = shipped
    storage = open_storage(str(root))
    manifest, lines = exported
    assert manifest["tier"] == "pico" and manifest["ratio"] == 1.5 and manifest["input_size"] == [1280, 720]
    assert manifest["ratio_fraction"] == "3/2"
    assert manifest["source_checkpoint"] == latest_checkpoint(storage, student)
    assert manifest["parity"]["max_abs_error"] <= PARITY_TOLERANCE and manifest["parity"]["frames"] >= 4
    assert "skipped" in manifest["tensorrt"] and any("TensorRT export skipped" in line for line in lines)
    key = f"runs/{student}/exports/pico-x1.5/manifest.json"
    assert read_manifest(storage, key) == manifest
    onnx = verified_bytes(storage, manifest["files"]["onnx"])
    assert onnx[:2] != b"" and len(onnx) == manifest["files"]["onnx"]["bytes"]
    # The backend the Serve replicas use runs the export and matches the checkpoint's model.
    import torch

    backend = load_backend(manifest, storage)
    model, _, _ = load_model(storage, student)
    rng = np.random.default_rng(0)
    inputs = {"lr": rng.random((2, 3, 20, 28), dtype=np.float32), "depth": np.ones((2, 1, 20, 28), np.float32),
              "jitter": np.zeros((2, 2), np.float32), "motion": rng.normal(size=(2, 2, 20, 28)).astype(np.float32),
              "previous_depth": np.ones((2, 1, 20, 28), np.float32),
              "previous": rng.random((2, HISTORY_CHANNELS, 30, 42), dtype=np.float32)}
    with torch.no_grad():
        expected = [t.numpy() for t in model(*(torch.from_numpy(inputs[k]) for k in INPUT_NAMES))]
    output, history = backend.run(inputs)
    assert np.abs(output - expected[0]).max() <= PARITY_TOLERANCE
    assert np.abs(history[:, :3] - expected[1][:, :3]).max() <= PARITY_TOLERANCE
    # the accumulated sample weight (0..16) to the same tolerance of its range
    assert np.abs(history[:, 3] - expected[1][:, 3]).max() <= PARITY_TOLERANCE * model.accumulator.max_history
    # A changed file is refused (on a copy: the session's other tests use the export).
    copy = {**manifest, "files": {"onnx": {**manifest["files"]["onnx"], "key": "tampered/student.onnx"}}}
    storage.write_bytes("tampered/student.onnx", onnx[:-1] + bytes([onnx[-1] ^ 1]))
    with pytest.raises(Exception, match="sha256 mismatch"):
        load_backend(copy, storage)


def test_student_grows_from_a_smaller_one_by_net2net(shipped):
    import torch

    from oss_cluster.train.distributed import initial_student

    root, teacher, student, _ = shipped
    storage = open_storage(str(root))
    base = [f"storage.root={root}", f"distill.teacher_run={teacher}", f"distill.init_from_run={student}"]
    cfg = load_config(CONFIGS / "distill_smoke.yaml", [*base, "model.options.hidden=48", "model.options.blocks=3"])
    grown = initial_student(storage, cfg).eval()  # what each worker starts from
    source, _, _ = load_model(storage, student)
    assert grown.config["hidden"] == 48 and len(grown.blocks) == 3
    rng = torch.Generator().manual_seed(0)
    inputs = (torch.rand(1, 3, 12, 16, generator=rng), 1 + torch.rand(1, 1, 12, 16, generator=rng), torch.zeros(1, 2),
              torch.randn(1, 2, 12, 16, generator=rng), torch.ones(1, 1, 12, 16), torch.rand(1, 4, 18, 24, generator=rng))
    with torch.no_grad():  # Net2Net keeps the function: the grown student starts where the small one ended
        for got, want in zip(grown(*inputs), source(*inputs)):
            assert torch.allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="Net2Net"):  # widths differ: refused before any worker starts
        train_distributed(load_config(CONFIGS / "distill_smoke.yaml", [*base, "tier=standard",
                                                                           "model.name=student_standard"]))


def test_quantization_aware_fine_tuning_continues_a_student_and_exports_int8(shipped, tmp_path):
    """jobs/distill_student.py --init-from <the student> --set distill.quantization_aware=true: Ray Train +
    DeepSpeed workers fine-tune the trained student with fake-quantized convolutions, starting from its weights
    (Net2Net with nothing to grow), and the result loads as a plain student and exports to INT8 within the bounds."""
    import shutil

    import torch

    from oss_cluster.export import export_student

    root, teacher, student, _ = shipped
    for run in (teacher, student):  # a storage of its own: the session's runs stay as the other tests expect
        shutil.copytree(Path(root) / "runs" / str(run), tmp_path / "runs" / str(run))
    cfg = load_config(CONFIGS / "distill_smoke.yaml", [
        f"storage.root={tmp_path}", f"distill.teacher_run={teacher}", f"distill.init_from_run={student}",
        "distill.quantization_aware=true", "train.steps=6", "train.eval_every=6", "train.checkpoint_every=6",
        "train.lr=3e-4", "train.warmup_steps=0"])
    tuned, result = train_distributed(cfg)
    storage = open_storage(str(tmp_path))
    record = storage.read_json(f"runs/{tuned}/metrics.json")
    assert record["status"] == "finished" and record["config"]["distill"]["quantization_aware"] is True
    assert result.metrics["eval/model/psnr_rgb"] > result.metrics["eval/bicubic/psnr_rgb"]  # it started trained
    after, _, _ = load_model(storage, tuned)  # a plain student: the fake quantization is not in the checkpoint
    before, _, _ = load_model(storage, student)
    assert not any(torch.equal(a, b) for a, b in zip(after.parameters(), before.parameters()) if a.requires_grad)
    manifest = export_student(storage, str(tuned), quantize=("int8",), log=lambda line: None)
    assert manifest["quantized"]["int8"]["fidelity_db"] >= manifest["quantized"]["int8"]["min_fidelity_db"]


def test_missing_teacher_is_refused_before_training(tmp_path, ray_local):
    cfg = load_config(CONFIGS / "distill_smoke.yaml", [f"storage.root={tmp_path}", "distill.teacher_run=hat-v0.1-pico-404"])
    with pytest.raises(FileNotFoundError, match="hat-v0.1-pico-404"):
        train_distributed(cfg)
    assert CheckpointError.__mro__[1] is FileNotFoundError


def test_export_errors_name_the_next_step(shipped, capsys):
    """Export of a teacher run says to distil a student from it (with the command); an unknown run lists the
    student runs that exist."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "jobs"))
    import export_student as job

    root, teacher, student, _ = shipped
    assert job.main([teacher, "--storage", str(root)]) == 2
    err = capsys.readouterr().err
    assert "export ships students" in err and f"python jobs/distill_student.py --tier pico --teacher-run {teacher}" in err
    assert job.main(["student-v0.1-pico-077", "--storage", str(root)]) == 2
    err = capsys.readouterr().err
    assert "no run student-v0.1-pico-077" in err and str(student) in err


def test_int8_export_records_its_measured_cost_and_a_failed_bound_writes_nothing(shipped, tmp_path):
    """--quantize int8: a QDQ INT8 ONNX model calibrated on training-distribution frames, its held-out steady-state
    PSNR/FLIP against fp32 and its speed in the manifest, the file sha256-checked and runnable; an export whose
    quantized model misses the PSNR bound is refused before anything is written."""
    import shutil

    import onnx
    import onnxruntime
    import torch

    from oss_cluster.export import ExportError, export_student
    from oss_cluster.quantize import INT8_FORMAT, INT8_VARIANT, WEIGHT_LEVELS, cpu_int8_features, widest_int8_weight

    root, _, student, _ = shipped
    shutil.copytree(Path(root) / "runs" / str(student), tmp_path / "runs" / str(student))
    storage = open_storage(str(tmp_path))
    manifest = export_student(storage, str(student), quantize=("int8",), log=lambda line: None)
    cost = manifest["quantized"]["int8"]
    assert cost["int8"]["frames"] == cost["fp32"]["frames"] > 0 and cost["calibration_frames"] > 0
    assert cost["psnr_delta_db"] == pytest.approx(cost["int8"]["psnr_rgb"] - cost["fp32"]["psnr_rgb"])
    assert -cost["psnr_delta_db"] <= 0.2 and cost["ms_per_step"]["int8"] > 0
    assert cost["fidelity_db"] >= cost["min_fidelity_db"] == 48.13
    # The format, and the CPU the cost was measured on as ONNX Runtime's kernels see it.
    assert cost["format"]["variant"] == INT8_VARIANT and cost["format"]["weights"] == INT8_FORMAT["weights"]
    assert cost["measured_on"] == {**cpu_int8_features(), "onnxruntime": onnxruntime.__version__}
    data = verified_bytes(storage, manifest["files"]["onnx_int8"])
    graph = onnx.load_from_string(data)
    assert any(node.op_type == "QuantizeLinear" for node in graph.graph.node)  # QDQ
    assert widest_int8_weight(data) <= WEIGHT_LEVELS[1]
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == INPUT_NAMES
    served = load_backend(manifest, storage, precision="int8")  # what a Serve tier with precision: int8 runs
    assert served.precision == "int8" and served.name == "onnxruntime"
    with pytest.raises(RuntimeError, match="precision 'fp8': fp8 runs only as a TensorRT engine"):
        load_backend(manifest, storage, precision="fp8")

    before = {key: storage.size(key) for key in storage.list("")}
    with pytest.raises(ExportError, match="refused, nothing was written"):
        # A bound no quantized model can meet (it must gain a decibel): the gate, and that it writes nothing.
        export_student(storage, str(student), quantize=("int8",), max_psnr_drop_db=-1.0, log=lambda line: None)
    assert {key: storage.size(key) for key in storage.list("")} == before
    if torch.cuda.is_available():
        return
    with pytest.raises(ExportError, match=r"FP8 needs a TensorRT engine on an FP8 GPU, and here: no CUDA GPU"):
        export_student(storage, str(student), quantize=("fp8",), log=lambda line: None)  # refused before writing
    assert {key: storage.size(key) for key in storage.list("")} == before
