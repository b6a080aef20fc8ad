"""FLOPs of registered models (the cost plan, the latency roofline and the students' budgets).

`OpCounter` counts every operation a forward runs, not only matrix products:
- matrix products and convolutions with torch's own formulas (torch.utils.flop_counter), plus the
  CPU flash-attention kernel torch's table lacks (scaled_dot_product_attention on CPU);
- resampling: grid_sample and upsampling count (multiply + add) per tap, channel and output element
  (bilinear 4 taps, bicubic 16, nearest 0: a copy);
- pooling: one operation per window element and output element;
- pointwise operations (add, mul, exp, sigmoid, where, clamp, ...): one per output element;
- reductions (sum, mean, max, var, softmax, ...) and normalisations: per input element (softmax 3,
  layer norm 5);
- data movement (views, slicing, cat, pad, copies): none.

It also counts bytes: what each operation reads and writes when it runs on its own (views move nothing),
the memory traffic of the graph as written; `step_costs` adds the step's compulsory traffic (its inputs
read and outputs written once), which no implementation can avoid: the memory side of the roofline.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
_RESAMPLE_TAPS = {0: 4, 1: 0, 2: 16}  # grid_sampler_2d interpolation_mode: bilinear, nearest, bicubic
_UPSAMPLE_TAPS = {aten.upsample_bilinear2d: 4, aten.upsample_bicubic2d: 16, aten._upsample_bilinear2d_aa: 4,
                  aten._upsample_bicubic2d_aa: 16}
_REDUCTIONS = {aten.sum: 1, aten.mean: 1, aten.amax: 1, aten.amin: 1, aten.max: 1, aten.min: 1, aten.var: 2,
               aten.std: 2, aten.var_mean: 2, aten.std_mean: 2, aten.prod: 1, aten.logsumexp: 3, aten._softmax: 3,
               aten._log_softmax: 3, aten.native_layer_norm: 5, aten.native_group_norm: 5,
               aten.native_batch_norm: 2, aten._native_batch_norm_legit_no_training: 2}
_POOLS = {aten.avg_pool2d, aten.max_pool2d_with_indices}
_COPIES = {aten.clone, aten.copy_, aten._to_copy, aten.copy, aten.lift_fresh_copy, aten.fill_, aten.zero_}


def _numel(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0].numel()
    return 0


def op_flops(func, args, kwargs, out) -> float:
    """FLOPs of one dispatched aten operation (see the module docstring for what counts)."""
    from torch.utils.flop_counter import flop_registry, sdpa_flop_count

    packet = func._overloadpacket
    if packet in flop_registry:
        return float(flop_registry[packet](*args, **kwargs, out_val=out))
    if packet is aten._scaled_dot_product_flash_attention_for_cpu:
        query, key, value = args[:3]
        return float(sdpa_flop_count(query.shape, key.shape, value.shape))
    if packet is aten.grid_sampler_2d:
        return 2.0 * _RESAMPLE_TAPS.get(int(args[2]), 4) * _numel(out)
    if packet in _UPSAMPLE_TAPS:
        return 2.0 * _UPSAMPLE_TAPS[packet] * _numel(out)
    if packet in _POOLS:
        kernel = args[1] if len(args) > 1 else kwargs.get("kernel_size")
        kernel = list(kernel) if isinstance(kernel, (list, tuple)) else [kernel]
        window = kernel[0] * (kernel[-1] if len(kernel) > 1 else kernel[0])
        return float(window * _numel(out))
    if packet in _REDUCTIONS:
        return float(_REDUCTIONS[packet] * _numel(args[0]))
    if packet in _COPIES:  # tagged pointwise, but data movement
        return 0.0
    if torch.Tag.pointwise in func.tags:
        return float(_numel(out))
    return 0.0


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    return []


def op_bytes(func, args, kwargs, out) -> float:
    """Bytes one dispatched operation moves when it runs on its own: every tensor it reads and every tensor it
    writes, once each. Views (reshape, slicing, permute, expand: an output aliasing an input without writing it)
    move nothing."""
    returns = func._schema.returns
    if returns and all(r.alias_info is not None and not r.alias_info.is_write for r in returns):
        return 0.0
    seen, total = set(), 0
    for tensor in _tensors(list(args) + list(kwargs.values())) + _tensors(out):
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return float(total)


class OpCounter(TorchDispatchMode):
    """Counts the FLOPs of everything run inside it, and the bytes each operation moves when run unfused:
    `with OpCounter() as counter: ...; counter.total, counter.bytes`."""

    def __init__(self):
        super().__init__()
        self.by_op: Counter = Counter()
        self.bytes_by_op: Counter = Counter()

    @property
    def total(self) -> float:
        return float(sum(self.by_op.values()))

    @property
    def bytes(self) -> float:
        return float(sum(self.bytes_by_op.values()))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        flops = op_flops(func, args, kwargs, out)
        if flops:
            self.by_op[str(func._overloadpacket)] += flops
        moved = op_bytes(func, args, kwargs, out)
        if moved:
            self.bytes_by_op[str(func._overloadpacket)] += moved
        return out


def step_inputs(render_hw: tuple[int, int], output_hw: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """One recurrent step's inputs (lr, depth, jitter, motion, previous depth, history buffer) with a history."""
    from ..models.accumulate import HISTORY_CHANNELS

    (h, w), (H, W) = render_hw, output_hw
    generator = torch.Generator().manual_seed(0)
    return (torch.rand(1, 3, h, w, generator=generator), 1 + torch.rand(1, 1, h, w, generator=generator),
            torch.tensor([[0.2, -0.3]]), torch.randn(1, 2, h, w, generator=generator),
            1 + torch.rand(1, 1, h, w, generator=generator), torch.rand(1, HISTORY_CHANNELS, H, W, generator=generator))


def step_costs(model_name: str, render_hw: tuple[int, int], output_hw: tuple[int, int]) -> dict[str, float]:
    """One recurrent step of an untrained model at these sizes: {"flops": everything counted (OpCounter),
    "io_bytes": the step's inputs read and outputs written once (what any implementation must move, fp32),
    "graph_bytes": what the graph as written moves, each operation reading its inputs and writing its outputs}."""
    from ..models import build_model

    model = build_model(model_name).eval()
    inputs = step_inputs(render_hw, output_hw)
    with OpCounter() as counter, torch.no_grad():
        outputs = model(*inputs)
    io_bytes = sum(t.numel() * t.element_size() for t in _tensors(list(inputs)) + _tensors(outputs))
    return {"flops": counter.total, "io_bytes": float(io_bytes), "graph_bytes": counter.bytes}


def step_flops(model_name: str, render_hw: tuple[int, int], output_hw: tuple[int, int]) -> float:
    """FLOPs of one recurrent step of an untrained model at these sizes, everything counted (OpCounter)."""
    return step_costs(model_name, render_hw, output_hw)["flops"]


def training_flops_per_window(model_name: str, crop: int, window: int, ratio: float, warmup: int = 0) -> float:
    """Training FLOPs of one window at a crop x crop output: the warm-up frames' forward passes (no
    gradient) plus the window's frames x 3 (forward + backward)."""
    side = max(1, round(crop / ratio))
    return step_flops(model_name, (side, side), (crop, crop)) * (warmup + 3.0 * window)
