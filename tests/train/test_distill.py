"""Shipping path on the session's Ray instance: a (tiny) Pico teacher run, the Pico student distilled
from it with the smoke schedule, its ONNX export with manifest, and Net2Net initialisation."""

from pathlib import Path

import numpy as np
import pytest

from oss_cluster.checkpoints import CheckpointError, latest_checkpoint, load_model
from oss_cluster.config import load_config
from oss_cluster.export import PARITY_TOLERANCE, export_student, read_manifest, verified_bytes
from oss_cluster.serving.backends import load_backend
from oss_cluster.storage import open_storage
from oss_cluster.train.distributed import train_distributed

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY_HAT = ["model.options.embed_dim=24", "model.options.groups=1", "model.options.depth=2", "model.options.heads=2",
            "model.options.compress=6", "model.options.squeeze=6"]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, ray_local):
    """(storage root, teacher run, student run, student result) after teacher training and distillation."""
    root = tmp_path_factory.mktemp("ship")
    teacher_cfg = load_config(CONFIGS / "distill_smoke.yaml", [
        f"storage.root={root}", "family=hat", "model.name=hat_tiny", *TINY_HAT, "train.steps=2", "train.lr=1e-3",
        "train.eval_every=2", "train.checkpoint_every=2", "train.eval_frames=2"])
    teacher, _ = train_distributed(teacher_cfg)
    student_cfg = load_config(CONFIGS / "distill_smoke.yaml", [f"storage.root={root}", f"distill.teacher_run={teacher}",
                                                               "train.steps=100", "train.eval_every=100",
                                                               "train.checkpoint_every=100"])
    student, result = train_distributed(student_cfg)
    return root, teacher, student, result


def test_distilled_pico_student_beats_bicubic_on_heldout_frames(shipped):
    root, teacher, student, result = shipped
    assert student.startswith("student-v0.1-pico-")
    evaluation = result.metrics
    assert evaluation["eval/model/psnr_rgb"] > evaluation["eval/bicubic/psnr_rgb"], evaluation
    record = open_storage(str(root)).read_json(f"runs/{student}/metrics.json")
    assert record["status"] == "finished" and record["artefacts"]["teacher_checkpoint"].startswith(f"runs/{teacher}/")
    assert record["artefacts"]["latest_strip"].endswith(".png")


def test_export_writes_onnx_with_manifest_and_passes_parity(shipped):
    root, _, student, _ = shipped
    storage = open_storage(str(root))
    lines = []
    manifest = export_student(storage, student, log=lines.append)
    assert manifest["tier"] == "pico" and manifest["ratio"] == 1.5 and manifest["input_size"] == [1280, 720]
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
              "jitter": np.zeros((2, 2), np.float32), "motion": np.zeros((2, 2, 20, 28), np.float32),
              "disocclusion": np.ones((2, 1, 20, 28), np.float32), "previous": np.zeros((2, 3, 30, 42), np.float32)}
    with torch.no_grad():
        expected = model(*(torch.from_numpy(inputs[k]) for k in inputs)).numpy()
    assert np.abs(backend.run(inputs) - expected).max() <= PARITY_TOLERANCE
    # A changed file is refused.
    storage.write_bytes(manifest["files"]["onnx"]["key"], onnx[:-1] + bytes([onnx[-1] ^ 1]))
    with pytest.raises(Exception, match="sha256 mismatch"):
        load_backend(manifest, storage)


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
    inputs = (torch.rand(1, 3, 12, 16, generator=rng), torch.rand(1, 1, 12, 16, generator=rng), torch.zeros(1, 2),
              torch.zeros(1, 2, 12, 16), torch.ones(1, 1, 12, 16), torch.zeros(1, 3, 18, 24))
    with torch.no_grad():  # Net2Net keeps the function: the grown student starts where the small one ended
        assert torch.allclose(grown(*inputs), source(*inputs), atol=1e-5)
    with pytest.raises(ValueError, match="Net2Net"):  # widths differ: refused before any worker starts
        train_distributed(load_config(CONFIGS / "distill_smoke.yaml", [*base, "tier=standard",
                                                                           "model.name=student_standard"]))


def test_missing_teacher_is_refused_before_training(tmp_path, ray_local):
    cfg = load_config(CONFIGS / "distill_smoke.yaml", [f"storage.root={tmp_path}", "distill.teacher_run=hat-v0.1-pico-404"])
    with pytest.raises(FileNotFoundError, match="hat-v0.1-pico-404"):
        train_distributed(cfg)
    assert CheckpointError.__mro__[1] is FileNotFoundError
