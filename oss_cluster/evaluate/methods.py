"""What evaluation runs: every method is a recurrent stepper over the frames a game gives.

    output, state = method.step(frame, state, out_size)

frame: {"lr" [B,3,h,w], "depth" [B,1,h,w], "jitter" [B,2], "motion" [B,2,h,w]} (FRAME_KEYS; never the
renderer's disocclusion mask); state: None at a sequence's first frame. `sequence_metrics()` returns
method-specific figures over the sequence just run (e.g. the canvas contribution).
"""

from __future__ import annotations

import torch

from ..baselines import TAAU, bicubic
from ..models.accumulate import empty_history
from ..models.temporal import FRAME_KEYS


class Bicubic:
    """Jitter-aware bicubic of the current frame: the anchor every method must beat."""

    def step(self, frame: dict, state, out_size):
        return bicubic(frame["lr"], out_size, frame["jitter"]), None

    def sequence_metrics(self) -> dict:
        return {}


class TAAUMethod:
    """The FSR 2-style temporal upscaler (baselines.TAAU)."""

    def __init__(self, taau: TAAU | None = None):
        self.taau = taau or TAAU()

    def step(self, frame: dict, state, out_size):
        return self.taau.step(frame["lr"], frame["depth"], frame["jitter"], frame["motion"], state, out_size)

    def sequence_metrics(self) -> dict:
        return {}


class ModelMethod:
    """A torch model (teacher, student or canvas) run recurrently, without gradient, in eval mode."""

    KEEP_RECORDS = 8  # canvas models keep per-frame renders; only the last few are needed

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def step(self, frame: dict, state, out_size):
        if state is None:
            self.model.eval()
            if hasattr(self.model, "last_window"):
                self.model.last_window = []
        with torch.no_grad():
            output, state = self.model.step({key: frame[key] for key in FRAME_KEYS}, state, out_size)
        if hasattr(self.model, "last_window"):
            del self.model.last_window[:-self.KEEP_RECORDS]
        return output, state

    def sequence_metrics(self) -> dict:
        if hasattr(self.model, "contribution"):  # canvas: how much the canvas changes the output
            return {"canvas_contribution": self.model.contribution()}
        return {}


class BackendMethod:
    """An exported student through a serving backend (serving/backends.py: ONNX Runtime or a TensorRT engine), fed
    exactly what the Serve endpoint feeds it."""

    def __init__(self, backend):
        self.backend = backend

    def step(self, frame: dict, state, out_size):
        numpy = {key: frame[key].detach().float().cpu().numpy() for key in FRAME_KEYS}
        if state is None:  # zeros: no history buffer, a previous depth of 0 marks no history
            state = tuple(t.numpy() for t in empty_history(frame["lr"].float(), out_size))
        output, history = self.backend.run({**numpy, "previous_depth": state[1], "previous": state[0]})
        return torch.from_numpy(output), (history, numpy["depth"])

    def sequence_metrics(self) -> dict:
        return {}


class OnnxMethod(BackendMethod):
    """An exported student through ONNX Runtime."""

    def __init__(self, onnx: bytes, threads: int = 1):
        from ..serving.backends import OnnxRuntimeBackend

        super().__init__(OnnxRuntimeBackend(onnx, threads))


def anchors() -> dict:
    """The comparison anchors every evaluation reports: bicubic and TAAU."""
    return {"bicubic": Bicubic(), "taau": TAAUMethod()}
