"""Mixed precision that keeps geometry exact: bf16 for the networks, fp32 for every coordinate.

Training and evaluation run the networks under `torch.autocast` (bf16 on GPU, and on CPU where asked):
convolutions, linear layers and attention run in bf16 while the weights stay fp32. Everything that
positions a sample (output grids, jitter, motion, warps, the canvas's means, covariances, their 2x2
inverses and the rasterizer) must not: bf16 has 8 bits of mantissa, so a normalised grid coordinate
is off by up to 2^-8 (a quarter of a pixel at 128 px, more than a pixel at 640 px), the size of the
jitter the models learn from. `full_precision` runs such a function with autocast off and its
floating-point tensors in fp32; the grid builders in temporal.py build fp32 grids directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

import torch


def map_tensors(value, function):
    """`function` applied to every tensor in `value`, also inside dataclasses, tuples, lists and dicts
    (the containers are rebuilt, everything else is returned as is)."""
    if isinstance(value, torch.Tensor):
        return function(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: map_tensors(getattr(value, f.name), function)
                                             for f in dataclasses.fields(value) if f.init})
    if isinstance(value, (tuple, list)):
        return type(value)(map_tensors(v, function) for v in value)
    if isinstance(value, dict):
        return {k: map_tensors(v, function) for k, v in value.items()}
    return value


def to_fp32(value):
    """Floating-point tensors (also inside containers, see map_tensors) as fp32; the rest as is."""
    return map_tensors(value, lambda t: t.float() if t.is_floating_point() and t.dtype != torch.float32 else t)


def no_autocast():
    """A context with autocast off on every device type it may be on."""
    stack = contextlib.ExitStack()
    for device in ("cpu", "cuda"):
        if device == "cuda" and not torch.cuda.is_available():
            continue
        stack.enter_context(torch.autocast(device, enabled=False))
    return stack


def full_precision(function):
    """Decorator: run `function` in fp32 (autocast off, floating tensor arguments cast to fp32)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if not (torch.is_autocast_enabled("cpu") or (torch.cuda.is_available() and torch.is_autocast_enabled("cuda"))):
            return function(*to_fp32(args), **to_fp32(kwargs))
        with no_autocast():
            return function(*to_fp32(args), **to_fp32(kwargs))

    return wrapper


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """torch.autocast on `device` in `dtype` (bf16), or a no-op context for fp32 (dtype None or fp32)."""
    device_type = torch.device(device).type
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)
