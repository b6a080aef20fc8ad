"""INT8 quantization's gate on a student whose network changes its output (the export-level tests in
tests/train/test_distill.py use the distilled smoke student, which stays close to plain accumulation)."""

import re

import pytest

CONFIGS = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def steering_student(tmp_path_factory):
    """(model, config, fp32 ONNX, good calibration windows): a Pico-sized student with a colour residual, trained
    200 steps on its own (no teacher) so that its network moves the output away from plain accumulation."""
    from oss_cluster.config import load_config
    from oss_cluster.export import calibration_windows, frame_steps, onnx_bytes
    from oss_cluster.train.local import train_local

    root = tmp_path_factory.mktemp("quantize")
    cfg = load_config(CONFIGS / "distill_smoke.yaml", [
        f"storage.root={root}", "distill.teacher_run=null", "distill.weight=0", "model.options.residual=true",
        "train.steps=200", "train.eval_every=200", "train.checkpoint_every=200"])
    model, _ = train_local(cfg, final_eval=False, log=lambda line: None)
    model.eval()
    windows = calibration_windows(cfg)
    onnx = onnx_bytes(model, frame_steps(model, windows[0], cfg.data.ratio)[0])
    return model, cfg, onnx, windows


def test_a_bad_calibration_is_refused_and_a_good_one_passes(steering_student):
    """Calibration frames in 8-bit code values (0-255, a common slip) where the model sees colours in [0, 1]: the
    activation ranges come out 255 times too wide, the INT8 output strays from the fp32 output, and the gate refuses
    it even though such a model can score higher against the ground truth (its network flattened back towards
    plain accumulation). The same model calibrated on its real frames passes both bounds."""
    from oss_cluster.export import MIN_FIDELITY_DB, ExportError, quantize_gated

    model, cfg, onnx, windows = steering_student
    lines: list[str] = []
    artefacts, cost = quantize_gated(model, cfg, onnx, windows, log=lines.append)
    assert cost["fidelity_db"] >= MIN_FIDELITY_DB and -cost["psnr_delta_db"] <= cost["max_psnr_drop_db"]
    assert artefacts["onnx"] != onnx and "fidelity to fp32" in lines[-1]
    assert cost["backends"] == {"fp32": "onnxruntime", "int8": "onnxruntime"} and cost["speedup"] > 0

    in_code_values = [{**w, "lr": w["lr"] * 255, "gt": w["gt"] * 255} for w in windows]
    with pytest.raises(ExportError, match="strays from the fp32 model's: fidelity") as refused:
        quantize_gated(model, cfg, onnx, in_code_values, log=lines.append)
    print(*lines, sep="\n")  # the measured figures, shown with pytest -s
    message = str(refused.value)
    assert "refused, nothing was written" in message
    # The PSNR bound alone would have let it through (it scores no worse against the ground truth): the point of
    # the fidelity bound.
    delta = float(re.search(r"steady-state PSNR ([-+][0-9.]+) dB against", message).group(1))
    assert -delta <= cost["max_psnr_drop_db"]


def test_a_quantization_aware_student_computes_what_the_int8_export_computes(steering_student):
    """quantization_aware: the same parameters and state dict, gradients through the rounding, and, with its ranges
    taken on the calibration frames, outputs far closer to the INT8 ONNX model's than the fp32 model's are."""
    import copy

    import numpy as np
    import torch

    from oss_cluster.export import INPUT_NAMES, frame_steps
    from oss_cluster.quantize import FakeQuantConv2d, calibration_feeds, quantization_aware, quantize_int8
    from oss_cluster.serving.backends import OnnxRuntimeBackend

    model, cfg, onnx, windows = steering_student
    steps = [step for window in windows for step in frame_steps(model, window, cfg.data.ratio)]
    int8 = OnnxRuntimeBackend(quantize_int8(onnx, calibration_feeds(steps)))
    fp32 = OnnxRuntimeBackend(onnx)
    aware = quantization_aware(copy.deepcopy(model)).train()
    convs = [m for m in aware.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(type(m) is FakeQuantConv2d for m in convs)
    assert {k: v.tolist() for k, v in aware.state_dict().items()} == {k: v.tolist() for k, v in model.state_dict().items()}
    output, _ = aware(*steps[5])
    output.mean().backward()
    assert aware.enter.weight.grad.abs().sum() > 0  # straight through the rounding
    with torch.no_grad():
        for step in steps:  # the ranges, as the export's MinMax calibration takes them
            aware(*step)
    aware.eval()
    for step in steps[5:8]:
        feed = {name: tensor.numpy() for name, tensor in zip(INPUT_NAMES, step)}
        quantized, reference = int8.run(feed)[0], fp32.run(feed)[0]
        with torch.no_grad():
            simulated = aware(*step)[0].numpy()
        assert np.abs(simulated - quantized).mean() < 0.25 * np.abs(reference - quantized).mean()
