"""The sample schema every data source yields (DESIGN.md "Sample schema").

A `Frame` is one rendered frame; a `Window` is K consecutive frames of one sequence, stacked.
Shapes use (h, w) for the render (input) resolution and (H, W) for the output resolution.

| field        | Frame shape  | dtype   | meaning                                                              |
|--------------|--------------|---------|----------------------------------------------------------------------|
| lr           | [3, h, w]    | float16 | jittered render, sRGB-encoded in [0, 1], one sample per pixel        |
| gt           | [3, H, W]    | float16 | supersampled ground truth, sRGB-encoded in [0, 1]                    |
| motion       | [2, h, w]    | float32 | (dx, dy) in render pixels from each pixel centre to where its surface |
|              |              |         | was in the previous frame (current -> previous), unjittered          |
| depth        | [1, h, w]    | float32 | planar depth at the jittered sample, scene units (metres, TartanAir) |
| disocclusion | [1, h, w]    | uint8   | 1 where the surface was not visible in the previous frame            |
| jitter       | [2]          | float32 | (jx, jy) in render pixels: pixel (i, j) sampled at (j+0.5+jx, i+0.5+jy) |
| gt_future    | [3, H, W]    | float16 | ground truth at t + future_alpha (frame-extrapolation target)         |
| future_alpha | [1]          | float32 | that alpha in frames, in (0, 1]; 0 where the data has no future frame |

Schema version 2 added gt_future and future_alpha. Version-1 shards still read: their windows take
the next frame's ground truth as gt_future with alpha 1 (alpha 0 on a window's last frame), as
TartanAir-style data has no fractional times.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)

# name -> (dtype, channels, resolution) where resolution is "lr", "gt" or "vector".
FIELDS: dict[str, tuple[np.dtype, int, str]] = {
    "lr": (np.dtype(np.float16), 3, "lr"),
    "gt": (np.dtype(np.float16), 3, "gt"),
    "motion": (np.dtype(np.float32), 2, "lr"),
    "depth": (np.dtype(np.float32), 1, "lr"),
    "disocclusion": (np.dtype(np.uint8), 1, "lr"),
    "jitter": (np.dtype(np.float32), 2, "vector"),
    "gt_future": (np.dtype(np.float16), 3, "gt"),
    "future_alpha": (np.dtype(np.float32), 1, "vector"),
}
FUTURE_FIELDS = ("gt_future", "future_alpha")  # absent from version-1 shards


def fields_of_version(version: int) -> tuple[str, ...]:
    """The fields a shard of this schema version stores."""
    return tuple(name for name in FIELDS if version >= 2 or name not in FUTURE_FIELDS)


def future_from_next(gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gt_future, future_alpha) of a window [K, 3, H, W] without fractional times: the next frame's
    ground truth at alpha 1, and alpha 0 (no target) on the last frame."""
    gt_future = np.concatenate([gt[1:], gt[-1:]])
    future_alpha = np.ones((len(gt), 1), np.float32)
    future_alpha[-1] = 0.0
    return gt_future, future_alpha


class DataError(ValueError):
    """Input data that cannot be used; the message names the file (or source) and the problem."""


def field_shape(name: str, in_size: tuple[int, int], out_size: tuple[int, int]) -> tuple[int, ...]:
    """Per-frame shape of a field for render size (h, w) and output size (H, W)."""
    _, channels, resolution = FIELDS[name]
    if resolution == "vector":
        return (channels,)
    return (channels, *(in_size if resolution == "lr" else out_size))


def check_array(where: str, name: str, value: np.ndarray, shape: tuple[int, ...]) -> None:
    """Raise DataError naming `where` unless `value` has the schema dtype, `shape` and finite values."""
    dtype = FIELDS[name][0]
    if not isinstance(value, np.ndarray):
        raise DataError(f"{where}: field '{name}' is {type(value).__name__}, expected a numpy array")
    if value.dtype != dtype:
        raise DataError(f"{where}: field '{name}' has dtype {value.dtype}, expected {dtype}")
    if tuple(value.shape) != tuple(shape):
        raise DataError(f"{where}: field '{name}' has shape {tuple(value.shape)}, expected {tuple(shape)}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        bad = int((~np.isfinite(value)).sum())
        raise DataError(f"{where}: field '{name}' holds {bad} NaN/inf values")


@dataclass
class SampleArrays:
    """The schema fields; a Frame holds one frame of them, a Window K frames stacked."""

    lr: np.ndarray
    gt: np.ndarray
    motion: np.ndarray
    depth: np.ndarray
    disocclusion: np.ndarray
    jitter: np.ndarray
    gt_future: np.ndarray
    future_alpha: np.ndarray

    @property
    def in_size(self) -> tuple[int, int]:
        return tuple(self.lr.shape[-2:])

    @property
    def out_size(self) -> tuple[int, int]:
        return tuple(self.gt.shape[-2:])

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in FIELDS}


@dataclass
class Frame(SampleArrays):
    def validate(self, where: str) -> None:
        for name in FIELDS:
            check_array(where, name, getattr(self, name), field_shape(name, self.in_size, self.out_size))


@dataclass
class Window(SampleArrays):
    """K consecutive frames of one sequence; each field carries a leading K axis."""

    sequence: str = ""
    start: int = 0  # index of the first frame within its sequence
    source: str = ""
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_frames(cls, frames: list[Frame], sequence: str, start: int, source: str) -> "Window":
        stacked = {name: np.stack([getattr(f, name) for f in frames]) for name in FIELDS}
        return cls(**stacked, sequence=sequence, start=start, source=source)

    @classmethod
    def concat(cls, windows: list["Window"]) -> "Window":
        """Consecutive windows of one sequence joined into one (the caller checks they are consecutive)."""
        joined = {name: np.concatenate([getattr(w, name) for w in windows]) for name in FIELDS}
        first = windows[0]
        return cls(**joined, sequence=first.sequence, start=first.start, source=first.source)

    def frames(self, first: int, stop: int | None = None) -> "Window":
        """Frames [first, stop) of this window as a Window."""
        picked = {name: getattr(self, name)[first:stop] for name in FIELDS}
        return Window(**picked, sequence=self.sequence, start=self.start + first, source=self.source, meta=self.meta)

    @property
    def length(self) -> int:
        return int(self.lr.shape[0])

    def validate(self, where: str, length: int | None = None, in_size=None, out_size=None) -> None:
        """Check every field against the schema (and against expected K and sizes when given)."""
        length = self.length if length is None else length
        in_size = self.in_size if in_size is None else tuple(in_size)
        out_size = self.out_size if out_size is None else tuple(out_size)
        for name in FIELDS:
            check_array(where, name, getattr(self, name), (length, *field_shape(name, in_size, out_size)))


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """Linear RGB in [0, 1] to sRGB-encoded values (IEC 61966-2-1)."""
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)


def srgb_decode(encoded: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] to linear RGB."""
    encoded = np.clip(encoded, 0.0, 1.0)
    return np.where(encoded <= 0.04045, encoded / 12.92, np.power((encoded + 0.055) / 1.055, 2.4))


def input_size_for(out_size: tuple[int, int], ratio: float) -> tuple[int, int]:
    """Render (h, w) for an output (H, W) at an SR ratio: each side rounded to whole pixels."""
    h, w = (max(1, round(side / ratio)) for side in out_size)
    return h, w


def halton(index: int, base: int) -> float:
    """The `index`-th element (1-based) of the van der Corput sequence in `base`."""
    result, fraction = 0.0, 1.0
    while index > 0:
        fraction /= base
        result += fraction * (index % base)
        index //= base
    return result


def jitter_phase_count(ratio: float) -> int:
    """Length of the jitter cycle: FSR 2's 8 x ratio^2 phases, so every output pixel gets samples."""
    return int(np.ceil(8 * ratio * ratio))


def jitter_offset(frame_index: int, ratio: float) -> np.ndarray:
    """Per-frame Halton(2,3) sub-pixel jitter (jx, jy) in render pixels, each in [-0.5, 0.5)."""
    phase = frame_index % jitter_phase_count(ratio) + 1
    return np.array([halton(phase, 2) - 0.5, halton(phase, 3) - 0.5], dtype=np.float32)
