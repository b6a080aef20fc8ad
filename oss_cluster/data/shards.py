"""Parquet shards of temporal windows, on any Storage (local folder or S3).

A dataset is a storage prefix holding
    shard-00000.parquet, shard-00001.parquet, ...   one row per window of K frames
    manifest.json                                    written last: a build without it is unfinished

Each row stores every schema field as an Arrow fixed-shape tensor (shape [K, ...]) plus `sequence`,
`start` and `source`. Files carry the schema version in their key-value metadata and Parquet page
checksums, so a truncated or corrupt shard is an error naming the file, not garbage.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..storage import Storage, aws_settings
from .schema import (FIELDS, READABLE_SCHEMA_VERSIONS, SCHEMA_VERSION, DataError, Window, check_array, field_shape,
                     fields_of_version, future_from_next)

MANIFEST = "manifest.json"
SCHEMA_KEY = b"oss.schema_version"
# Motion histogram bins for the build summary (render px/frame): the first bin is "still"; fine
# steps where most pixels are, coarser up to 256 px.
MOTION_BINS = np.concatenate([[0.0, 0.01], np.arange(0.05, 4.0, 0.05), np.arange(4.0, 32.0, 0.25), np.arange(32.0, 257.0, 1.0)])
MOTION_PERCENTILES = (10, 25, 50, 75, 90, 99)


def shard_key(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def arrow_schema(window: int, in_size, out_size, version: int = SCHEMA_VERSION) -> pa.Schema:
    """The Arrow schema of a shard (`version` < SCHEMA_VERSION writes an older layout, for compatibility tests)."""
    columns = [
        pa.field(name, pa.fixed_shape_tensor(pa.from_numpy_dtype(FIELDS[name][0]), [window, *field_shape(name, in_size, out_size)]))
        for name in fields_of_version(version)
    ]
    columns += [pa.field("sequence", pa.string()), pa.field("start", pa.int32()), pa.field("source", pa.string())]
    return pa.schema(columns, metadata={SCHEMA_KEY: str(version).encode()})


def encode_windows(windows: list[Window], schema: pa.Schema) -> bytes:
    """Parquet bytes of one shard."""
    columns = {
        name: pa.ExtensionArray.from_storage(
            schema.field(name).type,
            pa.FixedShapeTensorArray.from_numpy_ndarray(np.stack([getattr(w, name) for w in windows])).storage,
        )
        for name in FIELDS if name in schema.names
    }
    columns["sequence"] = pa.array([w.sequence for w in windows], pa.string())
    columns["start"] = pa.array([w.start for w in windows], pa.int32())
    columns["source"] = pa.array([w.source for w in windows], pa.string())
    table = pa.table(columns, schema=schema)
    sink = pa.BufferOutputStream()
    # No dictionary encoding (it never pays off on pixels and makes float16 decoding ~5x slower);
    # byte-stream-split + zstd shrinks float pixels by about a third.
    pq.write_table(table, sink, compression="zstd", compression_level=1, use_dictionary=["sequence", "source"],
                   use_byte_stream_split=[f"{name}.list.element" for name, (dtype, _, _) in FIELDS.items()
                                          if dtype.kind == "f" and name in schema.names],
                   write_page_checksum=True)
    return sink.getvalue().to_pybytes()


def decode_table(table: pa.Table, where: str, window: int, in_size, out_size) -> list[Window]:
    """Windows of a shard table, each checked against the schema (dtype, shape, finite values)."""
    version = (table.schema.metadata or {}).get(SCHEMA_KEY)
    if version is None:
        raise DataError(f"{where}: not an OSS shard (no schema version in its metadata)")
    version = check_version(version.decode(), where)
    stored = fields_of_version(version)
    missing = [name for name in (*stored, "sequence", "start", "source") if name not in table.column_names]
    if missing:
        raise DataError(f"{where}: missing columns {missing}")
    arrays = {}
    for name in stored:
        column = table.column(name).combine_chunks()
        if not isinstance(column, pa.FixedShapeTensorArray):
            raise DataError(f"{where}: column '{name}' has type {column.type}, expected a fixed-shape tensor")
        arrays[name] = column.to_numpy_ndarray()
    windows = []
    for row in range(table.num_rows):
        fields = {name: arrays[name][row] for name in stored}
        if "gt_future" not in fields:  # a version-1 shard: the next frame is the future, at alpha 1
            fields["gt_future"], fields["future_alpha"] = future_from_next(fields["gt"])
        item = Window(
            **fields,
            sequence=table.column("sequence")[row].as_py(),
            start=table.column("start")[row].as_py(),
            source=table.column("source")[row].as_py(),
        )
        item.validate(f"{where} row {row}", window, in_size, out_size)
        windows.append(item)
    return windows


def check_version(version, where: str) -> int:
    """The schema version as an int, or a DataError naming `where` when this code cannot read it."""
    try:
        number = int(version)
    except (TypeError, ValueError):
        number = None
    if number not in READABLE_SCHEMA_VERSIONS:
        raise DataError(f"{where}: schema version {version} is unknown (this code reads {list(READABLE_SCHEMA_VERSIONS)})")
    return number


def read_manifest(storage: Storage) -> dict:
    if not storage.exists(MANIFEST):
        hint = " (shards present: an unfinished build)" if storage.list() else ""
        raise DataError(f"{storage.url(MANIFEST)}: no manifest, not a finished dataset{hint}")
    manifest = storage.read_json(MANIFEST)
    check_version(manifest.get("schema_version"), storage.url(MANIFEST))
    return manifest


def read_shard(storage: Storage, key: str, manifest: dict | None = None) -> list[Window]:
    manifest = manifest or read_manifest(storage)
    where = storage.url(key)
    try:
        raw = storage.read_bytes(key)
    except FileNotFoundError:
        raise DataError(f"{where}: shard listed in the manifest is missing") from None
    try:
        table = pq.read_table(pa.BufferReader(raw), page_checksum_verification=True)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{where}: corrupt or truncated shard: {err}") from None
    return decode_table(table, where, manifest["window"], manifest["in_size"], manifest["out_size"])


def iter_windows(storage: Storage) -> Iterable[Window]:
    manifest = read_manifest(storage)
    for shard in manifest["shards"]:
        yield from read_shard(storage, shard["key"], manifest)


class ShardWriter:
    """Writes windows into new shards under an empty storage prefix, then the manifest.

    Refuses a prefix that already holds anything: nothing already written is overwritten.
    """

    def __init__(self, storage: Storage, *, window: int, in_size, out_size, ratio: float, source: str,
                 windows_per_shard: int = 16, config: dict | None = None):
        existing = storage.list()
        if existing:
            what = "a dataset" if MANIFEST in existing else f"{len(existing)} files (e.g. {existing[0]})"
            raise DataError(f"{storage.uri}: already holds {what}; choose a new output location (nothing was overwritten)")
        self.storage = storage
        self.window, self.in_size, self.out_size = window, tuple(in_size), tuple(out_size)
        self.ratio, self.source, self.config = ratio, source, config or {}
        self.windows_per_shard = windows_per_shard
        self.schema = arrow_schema(window, self.in_size, self.out_size)
        self.pending: list[Window] = []
        self.shards: list[dict] = []
        self.frames = 0
        self.motion_sum = 0.0
        self.motion_count = 0
        self.motion_histogram = np.zeros(len(MOTION_BINS) - 1, np.int64)

    def add(self, item: Window) -> None:
        item.validate(f"{self.source} sequence {item.sequence} frame {item.start}", self.window, self.in_size, self.out_size)
        self.pending.append(item)
        self.frames += item.length
        magnitude = np.hypot(item.motion[:, 0], item.motion[:, 1])
        self.motion_sum += float(magnitude.sum())
        self.motion_count += magnitude.size
        self.motion_histogram += np.histogram(np.clip(magnitude, 0, MOTION_BINS[-1] - 1e-6), MOTION_BINS)[0]
        if len(self.pending) >= self.windows_per_shard:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        key = shard_key(len(self.shards))
        size = self.storage.write_bytes(key, encode_windows(self.pending, self.schema))
        # (sequence, start, frames) of every row: lets readers join a window with the frames before it
        # (training warm-up, whole-sequence evaluation) without reading the shards first.
        index = [[w.sequence, int(w.start), w.length] for w in self.pending]
        self.shards.append({"key": key, "windows": len(self.pending), "bytes": size, "index": index})
        self.pending = []

    @property
    def mean_motion(self) -> float:
        """Mean motion-vector length over all render pixels written, in render pixels."""
        return self.motion_sum / self.motion_count if self.motion_count else 0.0

    def motion_percentiles(self) -> dict[str, float]:
        """Percentiles of the motion-vector length over all render pixels (render px/frame, from a
        histogram of MOTION_BINS), and the share of still pixels."""
        total = self.motion_histogram.sum()
        if not total:
            return {}
        cumulative = np.cumsum(self.motion_histogram) / total
        result = {f"p{q}": float(np.interp(q / 100, np.concatenate([[0.0], cumulative]), MOTION_BINS))
                  for q in MOTION_PERCENTILES}
        result["still_fraction"] = float(self.motion_histogram[0] / total)
        return result

    def close(self, extra: dict | None = None) -> dict:
        self.flush()
        if not self.shards:
            raise DataError(f"{self.storage.uri}: no windows were produced (too few frames for window {self.window}?)")
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": self.source,
            "ratio": self.ratio,
            "window": self.window,
            "in_size": list(self.in_size),
            "out_size": list(self.out_size),
            "frames": self.frames,
            "windows": sum(s["windows"] for s in self.shards),
            "bytes": sum(s["bytes"] for s in self.shards),
            "mean_motion_px": self.mean_motion,
            "motion_percentiles_px": self.motion_percentiles(),
            "shards": self.shards,
            "config": self.config,
            **(extra or {}),
        }
        self.storage.write_bytes(MANIFEST, json.dumps(manifest, indent=2).encode())
        return manifest


class ShardDataset:
    """A map-style torch Dataset over a built dataset: item i is one window as float32 tensors.

    Returns {"lr": [K,3,h,w], "gt": [K,3,H,W], "motion": [K,2,h,w], "depth": [K,1,h,w],
    "disocclusion": [K,1,h,w], "jitter": [K,2], "gt_future": [K,3,H,W], "future_alpha": [K,1],
    "sequence": str, "start": int}.
    """

    def __init__(self, storage: Storage, shards: list[str] | None = None, cache_shards: int = 4):
        self.storage = storage
        self.manifest = read_manifest(storage)
        chosen = [s for s in self.manifest["shards"] if shards is None or s["key"] in shards]
        self.index = [(s["key"], row) for s in chosen for row in range(s["windows"])]
        self._chosen = chosen
        self._keys: list[tuple[str, int, int]] | None = None
        # Decoded shards most recently used (a clip's windows and their warm-up span a few), and shards
        # being downloaded and decoded ahead by a background thread (prefetch).
        self._cached: OrderedDict[str, list[Window]] = OrderedDict()
        self._cache_shards = max(2, cache_shards)
        self._ahead: dict[str, Future] = {}
        self._pool: ThreadPoolExecutor | None = None
        self.reads = 0  # shards downloaded and decoded so far (a data-path figure for benchmarks and tests)

    def __len__(self) -> int:
        return len(self.index)

    def shard_of(self, item: int) -> str:
        """Storage key of the shard holding window `item`."""
        return self.index[item][0]

    def _read(self, key: str) -> list[Window]:
        self.reads += 1
        return read_shard(self.storage, key, self.manifest)

    def prefetch(self, keys: Iterable[str]) -> None:
        """Start downloading and decoding these shards on a background thread (those not held already)."""
        for key in keys:
            if key in self._cached or key in self._ahead:
                continue
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-prefetch")
            self._ahead[key] = self._pool.submit(self._read, key)

    def window(self, item: int) -> Window:
        key, row = self.index[item]
        if key not in self._cached:
            future = self._ahead.pop(key, None)
            self._cached[key] = future.result() if future is not None else self._read(key)
            while len(self._cached) > self._cache_shards:
                self._cached.popitem(last=False)
        self._cached.move_to_end(key)
        return self._cached[key][row]

    def close(self) -> None:
        """Stop the prefetch thread (shards in flight are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._ahead.clear()

    def keys(self) -> list[tuple[str, int, int]]:
        """(sequence, start, frames) of every item: from the manifest, or (datasets built before it
        recorded them) from each shard's sequence and start columns."""
        if self._keys is None:
            keys = []
            for shard in self._chosen:
                if "index" in shard:
                    keys.extend((str(seq), int(start), int(length)) for seq, start, length in shard["index"])
                    continue
                where = self.storage.url(shard["key"])
                try:
                    table = pq.read_table(pa.BufferReader(self.storage.read_bytes(shard["key"])), columns=["sequence", "start"])
                except (pa.ArrowException, OSError, FileNotFoundError) as err:
                    raise DataError(f"{where}: cannot read its sequence and start columns: {err}") from None
                keys.extend((seq, int(start), int(self.manifest["window"]))
                            for seq, start in zip(table.column("sequence").to_pylist(), table.column("start").to_pylist()))
            self._keys = keys
        return self._keys

    def __getitem__(self, item: int) -> dict:
        import torch

        found = self.window(item)
        sample = {name: torch.from_numpy(value.astype(np.float32)) for name, value in found.arrays().items()}
        sample.update(sequence=found.sequence, start=found.start)
        return sample


def check_batch(batch: dict[str, np.ndarray], window: int, in_size, out_size, version: int = SCHEMA_VERSION) -> dict[str, np.ndarray]:
    """Ray Data map_batches step: check every field the shards' schema version stores, in every row."""
    for name in fields_of_version(version):
        shape = (window, *field_shape(name, in_size, out_size))
        for row, value in enumerate(batch[name]):
            where = f"ray dataset window {batch['sequence'][row]}@{batch['start'][row]}"
            check_array(where, name, np.asarray(value), shape)
    return batch


def ray_dataset(storage: Storage):
    """A Ray Data dataset of windows (one row per window; numpy fields as in the shards)."""
    import ray.data

    manifest = read_manifest(storage)
    paths = [storage.arrow_path(shard["key"]) for shard in manifest["shards"]]
    # Read tasks find S3 credentials on their own node (standard chain); they get only where to look.
    remote_args = {"runtime_env": {"env_vars": aws_settings()}}
    dataset = ray.data.read_parquet(paths, filesystem=storage.arrow_filesystem(), ray_remote_args=remote_args)
    shapes = dict(window=manifest["window"], in_size=manifest["in_size"], out_size=manifest["out_size"],
                  version=check_version(manifest["schema_version"], storage.url(MANIFEST)))
    return dataset.map_batches(check_batch, batch_format="numpy", fn_kwargs=shapes, runtime_env=remote_args["runtime_env"])
