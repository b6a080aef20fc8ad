"""Windows joined with the frames before them: training clips with warm-up, and whole sequences.

A dataset stores each sequence once, cut into consecutive windows (starts 0, K, 2K, ...). A model
that runs for thousands of frames must be trained and judged with an accumulated history, so:

- `Clips(source, warmup)` gives, for every window with at least `warmup` frames before it in its
  sequence, the window preceded by those frames (warm-up + K frames; the trainer runs the warm-up
  without gradient, truncated back-propagation through time);
- `whole_sequences(source)` joins every sequence's windows back into one Window per contiguous run.

A source is a `WindowList` (windows in memory) or a `ShardDataset`: anything with `len()`,
`window(i) -> Window` and `keys() -> [(sequence, start, frames)]`.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from .schema import DataError, Window


class WindowSource(Protocol):
    def __len__(self) -> int: ...

    def window(self, item: int) -> Window: ...

    def keys(self) -> list[tuple[str, int, int]]: ...


class WindowList:
    """Windows held in memory, as a source."""

    def __init__(self, windows: Sequence[Window]):
        self.windows = list(windows)

    def __len__(self) -> int:
        return len(self.windows)

    def window(self, item: int) -> Window:
        return self.windows[item]

    def keys(self) -> list[tuple[str, int, int]]:
        return [(w.sequence, int(w.start), w.length) for w in self.windows]


class Clips:
    """Windows of `source` preceded by `warmup` frames of their own sequence (only windows that have them).

    clip(i) is a Window of warmup + K frames; its first `warmup` frames are the warm-up.
    """

    def __init__(self, source: WindowSource, warmup: int):
        self.source, self.warmup = source, int(warmup)
        self.keys = source.keys()
        ending_at = {(sequence, start + length): item for item, (sequence, start, length) in enumerate(self.keys)}
        self.chains: list[list[int]] = []
        for item, (sequence, start, _) in enumerate(self.keys):
            chain, needed, cursor = [item], self.warmup, start
            while needed > 0 and (sequence, cursor) in ending_at:  # the window that ends where this one starts
                before = ending_at[(sequence, cursor)]
                chain.insert(0, before)
                needed -= self.keys[before][2]
                cursor = self.keys[before][1]
            if needed <= 0:
                self.chains.append(chain)

    def __len__(self) -> int:
        return len(self.chains)

    def clip(self, index: int) -> Window:
        windows = [self.source.window(item) for item in self.chains[index]]
        joined = Window.concat(windows) if len(windows) > 1 else windows[0]
        surplus = joined.length - windows[-1].length - self.warmup
        return joined.frames(surplus) if surplus else joined


def whole_sequences(source: WindowSource, min_frames: int = 1) -> list[Window]:
    """Every sequence of the source as one Window per contiguous run of windows (at least `min_frames` long)."""
    keys = source.keys()
    runs: list[list[int]] = []
    for item in sorted(range(len(keys)), key=lambda i: (keys[i][0], keys[i][1])):
        sequence, start, _ = keys[item]
        last = runs[-1][-1] if runs else None
        if last is not None and keys[last][0] == sequence and keys[last][1] + keys[last][2] == start:
            runs[-1].append(item)
        else:
            runs.append([item])
    sequences = []
    for run in runs:
        frames = sum(keys[item][2] for item in run)
        if frames >= min_frames:
            windows = [source.window(item) for item in run]
            sequences.append(Window.concat(windows) if len(windows) > 1 else windows[0])
    if not sequences:
        raise DataError(f"no sequence of at least {min_frames} consecutive frames in the dataset")
    return sequences
