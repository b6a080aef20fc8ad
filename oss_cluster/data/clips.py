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

import numpy as np

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


class ClipStream:
    """One training rank's clips as an endless stream: epoch after epoch, each a seeded shuffle of `mine`
    (indices into `clips`) grouped by the shard of each clip's window, so a rank downloads and decodes a
    shard about once per epoch (twice where warm-up frames reach into the shard before) instead of at
    almost every step; the shards of the next `ahead` groups are read by a background thread meanwhile.

    clip(i) is the i-th clip of the stream; it depends only on (seed, rank, i), so a resumed run
    continues the same stream. Sources without shards (in-memory windows) get a plain seeded shuffle.
    """

    def __init__(self, clips: Clips, mine: Sequence[int], seed: int, rank: int, ahead: int = 2):
        if not mine:
            raise ValueError("a clip stream needs at least one clip")
        self.clips, self.mine, self.seed, self.rank, self.ahead = clips, list(mine), seed, rank, ahead
        self._shard_of = getattr(clips.source, "shard_of", None)
        self._epoch: int | None = None
        self._order: list[int] = []
        self._group_at: list[int] = []
        self._group_shards: list[list[str]] = []

    def _plan(self, epoch: int) -> None:
        if self._epoch == epoch:
            return
        rng = np.random.default_rng([self.seed, self.rank, epoch])
        groups: dict[str, list[int]] = {}
        for index in self.mine:
            key = self._shard_of(self.clips.chains[index][-1]) if self._shard_of else ""
            groups.setdefault(key, []).append(index)
        keys = sorted(groups)
        keys = [keys[i] for i in rng.permutation(len(keys))]
        self._order, self._group_at, self._group_shards = [], [], []
        for number, key in enumerate(keys):
            members = groups[key]
            self._order.extend(members[i] for i in rng.permutation(len(members)))
            self._group_at.extend([number] * len(members))
            if self._shard_of:
                self._group_shards.append(sorted({self._shard_of(item) for index in members
                                                  for item in self.clips.chains[index]}))
        self._epoch = epoch

    def clip(self, index: int) -> Window:
        epoch, position = divmod(index, len(self.mine))
        self._plan(epoch)
        if self._shard_of:
            group = self._group_at[position]
            for shards in self._group_shards[group:group + 1 + self.ahead]:
                self.clips.source.prefetch(shards)
        return self.clips.clip(self._order[position])

    def close(self) -> None:
        close = getattr(self.clips.source, "close", None)
        if close:
            close()


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
