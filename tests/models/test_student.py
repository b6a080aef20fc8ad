import numpy as np
import onnxruntime as ort
import pytest
import torch

from oss_cluster.cost.flops import OpCounter, step_inputs as flops_step_inputs
from oss_cluster.export import INPUT_NAMES, OUTPUT_NAMES
from oss_cluster.models import build_model
from oss_cluster.models.student import STUDENT_TIERS
from oss_cluster.tiers import TIERS


def step_inputs(h, w, H, W):
    return flops_step_inputs((h, w), (H, W))


@pytest.mark.parametrize("name", sorted(STUDENT_TIERS))
def test_student_under_parameter_cap_and_flops_budget(name):
    tier = TIERS[STUDENT_TIERS[name]]
    model = build_model(name).eval()
    params = sum(p.numel() for p in model.parameters())
    assert params <= tier.student_param_cap, f"{name}: {params:,} params > cap {tier.student_param_cap:,}"
    # A frame at the tier's ratio (render 128x72 keeps the count cheap; FLOPs scale with pixels).
    w, h = 128, 72
    W, H = round(w * tier.ratio), round(h * tier.ratio)
    with OpCounter() as counter, torch.no_grad():  # every operation: convolutions, resampling, the accumulation
        model(*step_inputs(h, w, H, W))
    per_pixel = counter.total / (H * W)
    assert per_pixel <= tier.flops_per_output_pixel, (
        f"{name}: {per_pixel:,.0f} FLOPs/output px > budget {tier.flops_per_output_pixel:,.0f}")


def test_most_student_work_is_below_render_resolution():
    model = build_model("student_standard").eval()
    full = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    coarse = {id(m) for block in model.blocks for m in block.modules() if isinstance(m, torch.nn.Conv2d)}
    coarse |= {id(model.down2), id(model.up2)}
    flops = lambda m: m.in_channels // m.groups * m.out_channels * m.kernel_size[0] * m.kernel_size[1]  # noqa: E731
    render_res = sum(flops(m) for m in full if m in (model.enter, model.head.to_subgrid))
    quarter_res = sum(flops(m) for m in full if id(m) in coarse) / 16
    assert quarter_res > render_res


@pytest.mark.parametrize("name", sorted(STUDENT_TIERS))
def test_onnx_export_with_dynamic_size_matches_torch(name, tmp_path):
    model = build_model(name).eval()
    path = tmp_path / f"{name}.onnx"
    dynamic = {n: {2: "h", 3: "w"} for n in INPUT_NAMES if n != "jitter"}
    dynamic.update(previous={2: "H", 3: "W"}, output={2: "H", 3: "W"}, history={2: "H", 3: "W"})
    torch.onnx.export(model, step_inputs(16, 24, 32, 48), str(path), input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                      dynamic_axes=dynamic, opset_version=17, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w, H, W in [(16, 24, 32, 48), (18, 30, 27, 45)]:  # 2x, then 1.5x at a size not a multiple of 4
        inputs = step_inputs(h, w, H, W)
        with torch.no_grad():
            expected = [t.numpy() for t in model(*inputs)]
        got = session.run(OUTPUT_NAMES, {n: t.numpy() for n, t in zip(INPUT_NAMES, inputs)})
        for g, e in zip(got, expected):
            assert g.shape == e.shape
            assert np.abs(g - e).max() < 1e-4
