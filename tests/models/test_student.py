import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from oss_cluster.models import build_model
from oss_cluster.models.student import STUDENT_TIERS
from oss_cluster.models.temporal import RESAMPLE_FLOPS_PER_OUTPUT_PIXEL
from oss_cluster.tiers import TIERS


def step_inputs(h, w, H, W):
    torch.manual_seed(1)
    return (torch.rand(1, 3, h, w), torch.rand(1, 1, h, w) * 10, torch.tensor([[0.2, -0.3]]),
            torch.randn(1, 2, h, w), torch.zeros(1, 1, h, w), torch.rand(1, 3, H, W))


@pytest.mark.parametrize("name", sorted(STUDENT_TIERS))
def test_student_under_parameter_cap_and_flops_budget(name):
    tier = TIERS[STUDENT_TIERS[name]]
    model = build_model(name).eval()
    params = sum(p.numel() for p in model.parameters())
    assert params <= tier.student_param_cap, f"{name}: {params:,} params > cap {tier.student_param_cap:,}"
    # A frame at the tier's ratio (render 128x72 keeps the count cheap; FLOPs scale with pixels).
    w, h = 128, 72
    W, H = round(w * tier.ratio), round(h * tier.ratio)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*step_inputs(h, w, H, W))
    per_pixel = counter.get_total_flops() / (H * W) + RESAMPLE_FLOPS_PER_OUTPUT_PIXEL
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
    names = ["lr", "depth", "jitter", "motion", "disocclusion", "previous"]
    dynamic = {n: {2: "h", 3: "w"} for n in names if n != "jitter"}
    dynamic["previous"] = {2: "H", 3: "W"}
    torch.onnx.export(model, step_inputs(16, 24, 32, 48), str(path), input_names=names, output_names=["output"],
                      dynamic_axes={**dynamic, "output": {2: "H", 3: "W"}}, opset_version=17, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w, H, W in [(16, 24, 32, 48), (18, 30, 27, 45)]:  # 2x, then 1.5x at a size not a multiple of 4
        inputs = step_inputs(h, w, H, W)
        with torch.no_grad():
            expected = model(*inputs).numpy()
        got = session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-4
