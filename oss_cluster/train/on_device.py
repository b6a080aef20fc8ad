"""Run a model on its training engine's device and precision for evaluation code written for CPU tensors.

Evaluation (`oss_cluster.evaluate`) and strips feed CPU fp32 frames to `model.step` and score the
outputs against CPU ground truth. `OnDevice(model, device, dtype)` moves each frame to the engine's
device, runs the model under the engine's autocast (bf16 networks, fp32 geometry), keeps the
recurrent state on the device and hands outputs back as CPU fp32, so evaluating a CUDA bf16 run
scores exactly what it trains, and on CPU in fp32 it adds nothing.
"""

from __future__ import annotations

import torch

from ..models.precision import autocast, map_tensors


def move(value, device: torch.device):
    """Tensors (also inside dataclasses, tuples, lists and dicts) on `device`."""
    return map_tensors(value, lambda t: t.to(device))


def to_host(value):
    """Tensors back on the CPU, floating ones as fp32, for scoring."""
    return map_tensors(value, lambda t: t.detach().cpu().float() if t.is_floating_point() else t.detach().cpu())


class OnDevice:
    """A model seen through its engine's device and autocast dtype.

    `step(frame, state, out_size)` returns (CPU fp32 output, state on the device); `extrapolate` and any
    other method return CPU fp32 tensors; attributes (`last_window`, `training`, ...) read and write
    through to the model.
    """

    _OWN = ("model", "device", "dtype")

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None):
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "device", torch.device(device))
        object.__setattr__(self, "dtype", dtype)

    def step(self, frame: dict, state, out_size):
        with torch.no_grad(), autocast(self.device, self.dtype):
            output, state = self.model.step(move(frame, self.device), state, out_size)
        return to_host(output), state

    def __call__(self, *args, **kwargs):
        return self._call(self.model, *args, **kwargs)

    def _call(self, function, *args, **kwargs):
        with torch.no_grad(), autocast(self.device, self.dtype):
            return to_host(function(*move(args, self.device), **move(kwargs, self.device)))

    def eval(self):
        self.model.eval()
        return self

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self

    def __getattr__(self, name):
        value = getattr(self.model, name)
        if callable(value) and not isinstance(value, torch.nn.Module):
            return lambda *args, **kwargs: self._call(value, *args, **kwargs)
        return value

    def __setattr__(self, name, value):
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.model, name, value)

    def __delattr__(self, name):
        delattr(self.model, name)


def on_engine(model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None):
    """The model as evaluation should call it: itself on CPU in fp32, else through OnDevice."""
    if torch.device(device).type == "cpu" and (dtype is None or dtype == torch.float32):
        return model
    return OnDevice(model, device, dtype)
