"""Data pipeline speed: synthetic rendering, and shard reading beside raw .npy of the same bytes.

    python benchmarks/bench_data.py [--frames 60] [--size 640x480] [--ratio 2]

Rendering runs on one core (the renderer is single-threaded numba). The acceptance target is a
640x480-output, 320x240-input, 60-frame sequence with 16-sample ground truth in under 20 s.
Shard reading is compared with np.load of the same arrays saved as .npy files (one per field per
window): the ratio is the Parquet format's overhead (decode, checksum, schema validation).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from oss_cluster.data.schema import Window  # noqa: E402
from oss_cluster.data.shards import ShardWriter, iter_windows  # noqa: E402
from oss_cluster.data.synth import SynthScene  # noqa: E402
from oss_cluster.storage import LocalStorage  # noqa: E402

TARGET_SECONDS = 20.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", default="640x480", help="output WxH")
    parser.add_argument("--ratio", type=float, default=2.0)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="read passes (best is reported)")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))

    SynthScene((height, width), args.ratio, seed=999).render_frame(0)  # compile the kernels first
    scene = SynthScene((height, width), args.ratio, seed=0)
    start = time.perf_counter()
    frames = [scene.render_frame(k) for k in range(args.frames)]
    render_s = time.perf_counter() - start
    h, w = scene.in_size
    print(f"render  {args.frames} frames {w}x{h} -> {width}x{height}, {scene.gt_side ** 2} GT samples/px, one core: "
          f"{render_s:.2f} s = {args.frames / render_s:.2f} frames/s "
          f"(target < {TARGET_SECONDS:.0f} s: {'PASS' if render_s < TARGET_SECONDS else 'FAIL'})")

    windows = [Window.from_frames(frames[i:i + args.window], "bench", i, "synth")
               for i in range(0, args.frames - args.window + 1, args.window)]
    n_frames = len(windows) * args.window
    with tempfile.TemporaryDirectory() as folder:
        store = LocalStorage(Path(folder) / "shards")
        writer = ShardWriter(store, window=args.window, in_size=(h, w), out_size=(height, width),
                             ratio=args.ratio, source="synth", windows_per_shard=8)
        for item in windows:
            writer.add(item)
        manifest = writer.close()
        raw = Path(folder) / "npy"
        raw.mkdir()
        for index, item in enumerate(windows):
            for name, value in item.arrays().items():
                np.save(raw / f"{index:05d}_{name}.npy", value)
        raw_bytes = sum(p.stat().st_size for p in raw.iterdir())

        def read_shards():
            return sum(item.length for item in iter_windows(store))

        def read_npy():
            arrays = [np.load(p) for p in sorted(raw.iterdir())]
            return sum(a.nbytes for a in arrays)

        shard_s = min(_timed(read_shards) for _ in range(args.repeats))
        npy_s = min(_timed(read_npy) for _ in range(args.repeats))
    print(f"read    shards ({manifest['bytes'] / 2**20:.1f} MiB): {n_frames / shard_s:.1f} frames/s | "
          f"raw .npy ({raw_bytes / 2**20:.1f} MiB): {n_frames / npy_s:.1f} frames/s | "
          f"shard/npy time ratio {shard_s / npy_s:.2f}x")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
