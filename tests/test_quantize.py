"""INT8 quantization's gate on a student whose network changes its output (the export-level tests in
tests/train/test_distill.py use the distilled smoke student, which stays close to plain accumulation)."""

import re

import pytest

CONFIGS = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs"
# The quantization-aware student's output is this fraction or less of the fp32 output's distance from the INT8
# model's (measured about 0.1, on a VNNI CPU and on an emulated AVX2 one alike).
SIMULATION_BOUND = 0.2


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


@pytest.fixture(scope="module")
def quantized_steering(steering_student):
    """(step inputs of the calibration windows, their feeds, the INT8 model of the steering student calibrated on
    them, its quantization-aware copy with ranges taken on the same steps, in eval mode)."""
    import copy

    import torch

    from oss_cluster.export import INPUT_NAMES, frame_steps
    from oss_cluster.quantize import calibration_feeds, quantization_aware, quantize_int8

    model, cfg, onnx, windows = steering_student
    steps = [step for window in windows for step in frame_steps(model, window, cfg.data.ratio)]
    feeds = calibration_feeds(steps)
    assert list(feeds[0]) == INPUT_NAMES
    aware = quantization_aware(copy.deepcopy(model)).train()
    with torch.no_grad():
        for step in steps:  # the ranges, as the export's MinMax calibration takes them
            aware(*step)
    return steps, feeds, quantize_int8(onnx, feeds), aware.eval()


def _assert_simulates(aware, steps, quantized, reference):
    """The quantization-aware student's output on each step is within SIMULATION_BOUND of the distance between
    the fp32 (`reference`) and INT8 (`quantized`) outputs from the INT8 one."""
    import numpy as np
    import torch

    for step, int8_output, fp32_output in zip(steps, quantized, reference):
        with torch.no_grad():
            simulated = aware(*step)[0].numpy()
        assert np.abs(simulated - int8_output).mean() < SIMULATION_BOUND * np.abs(fp32_output - int8_output).mean()


def test_a_quantization_aware_student_computes_what_the_int8_export_computes(steering_student, quantized_steering):
    """quantization_aware: the same parameters and state dict, gradients through the rounding, and, with its ranges
    taken on the calibration frames, outputs far closer to the INT8 ONNX model's than the fp32 model's are
    (SIMULATION_BOUND: a fifth of the distance or less)."""
    import copy

    import torch

    from oss_cluster.quantize import FakeQuantConv2d, quantization_aware
    from oss_cluster.serving.backends import OnnxRuntimeBackend

    model, _, onnx, _ = steering_student
    steps, feeds, int8, calibrated = quantized_steering
    fresh = quantization_aware(copy.deepcopy(model)).train()
    convs = [m for m in fresh.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(type(m) is FakeQuantConv2d for m in convs)
    assert {k: v.tolist() for k, v in fresh.state_dict().items()} == {k: v.tolist() for k, v in model.state_dict().items()}
    output, _ = fresh(*steps[5])
    output.mean().backward()
    assert fresh.enter.weight.grad.abs().sum() > 0  # straight through the rounding
    quantized, reference = OnnxRuntimeBackend(int8), OnnxRuntimeBackend(onnx)
    _assert_simulates(calibrated, steps[5:8], [quantized.run(feed)[0] for feed in feeds[5:8]],
                      [reference.run(feed)[0] for feed in feeds[5:8]])


def test_the_int8_export_computes_the_same_numbers_on_a_cpu_without_vnni(steering_student, quantized_steering):
    """The same INT8 model run by ONNX Runtime here and on an emulated AVX2 CPU without VNNI or AVX-512 (qemu's
    Haswell: U8S8 products summed in saturating 16-bit pairs) gives the same output, and the quantization-aware
    student is as close to the emulated CPU's output as the test above asks of this CPU's."""
    import numpy as np

    from oss_cluster.quantize import WEIGHT_LEVELS, emulated_cpu_unavailable, run_on_emulated_cpu, widest_int8_weight
    from oss_cluster.serving.backends import OnnxRuntimeBackend

    if emulated_cpu_unavailable():
        pytest.skip(emulated_cpu_unavailable())
    _, _, onnx, _ = steering_student
    steps, feeds, int8, calibrated = quantized_steering
    assert widest_int8_weight(int8) == WEIGHT_LEVELS[1]  # 7 bits, and all of them used
    emulated, cpu = run_on_emulated_cpu({"int8": int8, "fp32": onnx}, feeds[5:8])
    assert cpu["features"] == ["AVX2"] and "VPMADDUBSW" in cpu["int8_products"]
    here = OnnxRuntimeBackend(int8)
    for feed, outputs in zip(feeds[5:8], emulated["int8"]):  # equal here; 1e-5 leaves fp32 rounding its way
        assert all(np.abs(a - b).max() <= 1e-5 for a, b in zip(outputs, here.run(feed)))
    _assert_simulates(calibrated, steps[5:8], [outputs[0] for outputs in emulated["int8"]],
                      [outputs[0] for outputs in emulated["fp32"]])


def _adversarial_conv(variant: str):
    """(INT8 ONNX in `variant`, the input [1, 8, 12, 12] on uint8's grid): one 3x3 convolution whose weights are all
    positive and large and whose inputs sit near the top of their range, so that with 8-bit weights most pairs of
    u8 x s8 products overflow int16 (about 2 x 200 x 95 > 32767)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from oss_cluster.quantize import quantize_int8

    rng = np.random.default_rng(0)
    weight = (rng.uniform(0.5, 1.0, (4, 8, 3, 3)) * np.array([1, 0.5, 2, 1])[:, None, None, None]).astype(np.float32)
    bias = rng.uniform(-1, 1, 4).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 12, 12])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    fp32 = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fp32.ir_version = 8
    x = (rng.integers(150, 256, (1, 8, 12, 12)) / 255).astype(np.float32)
    extremes = np.zeros_like(x)
    extremes[..., ::2] = 1.0  # the calibrated input range is exactly [0, 1]: scale 1/255, zero point 0
    return quantize_int8(fp32.SerializeToString(), [{"x": x}, {"x": extremes}], variant), x


def _qdq_conv(int8: bytes) -> dict:
    """The quantization parameters of the single QDQ convolution `_adversarial_conv` writes: x_scale, x_zero, w_q
    (int64 [4, 8, 3, 3]), w_scale ([4]), b_q (int64 [4], in units of x_scale x w_scale), y_scale, y_zero."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(int8).graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    quantize = {node.input[0]: node.input[1:] for node in graph.node if node.op_type == "QuantizeLinear"}
    weight_dq = next(node for node in graph.node if node.op_type == "DequantizeLinear"
                     and constants.get(node.input[0], np.empty(0)).dtype == np.int8)
    (y_name,) = [name for name in quantize if name != "x"]
    x_scale, x_zero = (constants[name] for name in quantize["x"])
    y_scale, y_zero = (constants[name] for name in quantize[y_name])
    bias = next(v for v in constants.values() if v.dtype == np.int32 and v.ndim == 1)
    return {"x_scale": x_scale, "x_zero": int(x_zero), "w_q": constants[weight_dq.input[0]].astype(np.int64),
            "w_scale": constants[weight_dq.input[1]], "b_q": bias.astype(np.int64), "y_scale": float(y_scale),
            "y_zero": int(y_zero)}


def _input_codes(q: dict, x):
    """x as QuantizeLinear codes: rounded half to even, saturated to uint8, int64."""
    import numpy as np

    return np.clip(np.rint(x / q["x_scale"]) + q["x_zero"], 0, 255).astype(np.int64)


def _integer_reference(q: dict, x):
    """The QDQ convolution `q` (_qdq_conv) computed exactly in integers (numpy, int64): output codes [1, 4, H, W].
    Only the final requantization, one float multiply per output, is not integer arithmetic."""
    import numpy as np

    x_q = _input_codes(q, x) - q["x_zero"]
    padded = np.pad(x_q, ((0, 0), (0, 0), (1, 1), (1, 1)))  # padding is the zero point: 0 after subtracting it
    h, w = x.shape[-2:]
    acc = np.zeros((1, q["w_q"].shape[0], h, w), np.int64)
    for dy in range(3):
        for dx in range(3):
            acc += np.einsum("nchw,oc->nohw", padded[:, :, dy:dy + h, dx:dx + w], q["w_q"][:, :, dy, dx])
    acc += q["b_q"][None, :, None, None]
    multiplier = (np.float64(q["x_scale"]) * q["w_scale"].astype(np.float64) / q["y_scale"])[None, :, None, None]
    return np.clip(np.rint(acc * multiplier) + q["y_zero"], 0, 255).astype(np.int64)


def _code_error(q: dict, output, x):
    """|ONNX Runtime's output codes - the exact integer reference's|, [1, 4, H, W]."""
    import numpy as np

    return np.abs(np.rint(output / q["y_scale"] + q["y_zero"]).astype(np.int64) - _integer_reference(q, x))


# The stated bound against the exact integer reference: every output code within 1 (the requantization's float
# multiply may round the other way at a tie), and 99 % of them exact.
MAX_CODE_ERROR, MIN_EXACT = 1, 0.99


def test_the_int8_convolution_is_the_exact_integer_convolution_on_this_cpu():
    """ONNX Runtime's INT8 convolution here equals the exact integer one (numpy) within the stated bound, on inputs
    built to overflow 16-bit pair sums with 8-bit weights; the format keeps every pair within int16 whatever the
    inputs (2 x 255 x 64 <= 32767), which 8-bit weights do not."""
    import numpy as np
    import onnxruntime as ort

    from oss_cluster.quantize import WEIGHT_LEVELS

    int8, x = _adversarial_conv("u8s8-7bit")
    q = _qdq_conv(int8)
    assert np.abs(q["w_q"]).max() == WEIGHT_LEVELS[1] and 2 * 255 * WEIGHT_LEVELS[1] <= np.iinfo(np.int16).max
    session = ort.InferenceSession(int8, providers=["CPUExecutionProvider"])
    error = _code_error(q, session.run(None, {"x": x})[0], x)
    assert error.max() <= MAX_CODE_ERROR and (error == 0).mean() >= MIN_EXACT
    # The inputs have teeth: with 8-bit weights, most sums of two adjacent channels' products (the centre tap's,
    # [out, in / 2, H, W]) overflow int16, which is what VPMADDUBSW saturates.
    x_q, w_8bit = _input_codes(q, x), _qdq_conv(_adversarial_conv("u8s8-8bit")[0])["w_q"][:, :, 1, 1]
    pairs = (x_q[:, 0::2] * w_8bit[:, 0::2, None, None] + x_q[:, 1::2] * w_8bit[:, 1::2, None, None])
    assert (pairs > np.iinfo(np.int16).max).mean() > 0.5


def test_on_an_emulated_avx2_cpu_only_the_7bit_format_is_the_exact_integer_convolution():
    """The same on an emulated AVX2 CPU without VNNI (qemu's Haswell), where ONNX Runtime sums u8 x s8 products in
    saturating 16-bit pairs: the shipped 7-bit format stays within the bound of the exact integers, and 8-bit
    weights (the format before) do not: the saturation is real there and the format avoids it."""
    from oss_cluster.quantize import emulated_cpu_unavailable, run_on_emulated_cpu

    if emulated_cpu_unavailable():
        pytest.skip(emulated_cpu_unavailable())
    (int8, x), (int8_8bit, _) = _adversarial_conv("u8s8-7bit"), _adversarial_conv("u8s8-8bit")
    outputs, cpu = run_on_emulated_cpu({"7bit": int8, "8bit": int8_8bit}, [{"x": x}])
    assert cpu["features"] == ["AVX2"]
    error = _code_error(_qdq_conv(int8), outputs["7bit"][0][0], x)
    assert error.max() <= MAX_CODE_ERROR and (error == 0).mean() >= MIN_EXACT
    error = _code_error(_qdq_conv(int8_8bit), outputs["8bit"][0][0], x)
    assert error.max() > 10 * MAX_CODE_ERROR and (error == 0).mean() < MIN_EXACT
