import json

import numpy as np
import pyarrow as pa
import pytest

from oss_cluster.data.schema import FIELDS, DataError
from oss_cluster.data.shards import (
    MANIFEST, SCHEMA_KEY, ShardDataset, ShardWriter, arrow_schema, encode_windows, iter_windows, ray_dataset,
    read_manifest, read_shard,
)
from oss_cluster.data.synth import synth_windows

SIZE, RATIO, K = (24, 32), 2.0, 2


@pytest.fixture(scope="module")
def windows():
    return list(synth_windows(frames=10, ratio=RATIO, out_size=SIZE, window=K, frames_per_sequence=5, objects=2))


def write(storage, windows, per_shard=3):
    writer = ShardWriter(storage, window=K, in_size=(12, 16), out_size=SIZE, ratio=RATIO, source="synth",
                         windows_per_shard=per_shard)
    for item in windows:
        writer.add(item)
    return writer.close()


def assert_same(a, b):
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes(), name  # bit-exact, NaN-safe
    assert (a.sequence, a.start, a.source) == (b.sequence, b.start, b.source)


def test_round_trip_bit_exact(storage, windows):
    manifest = write(storage, windows)
    assert manifest["windows"] == len(windows) == 4 and len(manifest["shards"]) == 2
    assert manifest["frames"] == 8 and manifest["mean_motion_px"] > 0
    back = list(iter_windows(storage))
    assert len(back) == len(windows)
    for a, b in zip(windows, back):
        assert_same(a, b)


def test_torch_dataset(storage, windows):
    write(storage, windows)
    dataset = ShardDataset(storage)
    assert len(dataset) == 4
    sample = dataset[3]
    assert sample["lr"].shape == (K, 3, 12, 16) and sample["gt"].shape == (K, 3, *SIZE)
    assert sample["motion"].shape == (K, 2, 12, 16) and sample["jitter"].shape == (K, 2)
    assert np.array_equal(sample["gt"].numpy(), windows[3].gt.astype(np.float32))
    assert sample["sequence"] == windows[3].sequence


def test_ray_data_path(storage, windows, ray_local):
    write(storage, windows)
    rows = ray_dataset(storage).take_all()
    assert len(rows) == 4
    by_key = {(r["sequence"], r["start"]): r for r in rows}
    for item in windows:
        row = by_key[(item.sequence, item.start)]
        for name in FIELDS:
            assert row[name].dtype == getattr(item, name).dtype
            assert row[name].tobytes() == getattr(item, name).tobytes()


def test_refuses_to_overwrite(storage, windows):
    write(storage, windows)
    before = storage.read_bytes(MANIFEST)
    with pytest.raises(DataError, match="already holds a dataset"):
        write(storage, windows)
    assert storage.read_bytes(MANIFEST) == before


def test_unfinished_build_is_not_a_dataset(tmp_path, windows):
    from oss_cluster.storage import LocalStorage

    store = LocalStorage(tmp_path)
    writer = ShardWriter(store, window=K, in_size=(12, 16), out_size=SIZE, ratio=RATIO, source="synth", windows_per_shard=1)
    writer.add(windows[0])  # one shard flushed, no manifest
    with pytest.raises(DataError, match="no manifest.*unfinished build"):
        read_manifest(store)


def test_truncated_and_corrupt_shards_are_named(tmp_path, windows):
    from oss_cluster.storage import LocalStorage

    store = LocalStorage(tmp_path)
    manifest = write(store, windows)
    key = manifest["shards"][0]["key"]
    raw = store.read_bytes(key)
    store.write_bytes(key, raw[: len(raw) // 2])
    with pytest.raises(DataError, match=rf"{key}: corrupt or truncated shard"):
        read_shard(store, key)
    corrupted = bytearray(raw)
    middle = len(raw) // 2
    corrupted[middle:middle + 64] = bytes(64)
    store.write_bytes(key, bytes(corrupted))
    with pytest.raises(DataError, match=rf"{key}"):
        read_shard(store, key)


def test_nan_rejected_on_write_and_on_read(tmp_path, windows):
    from oss_cluster.storage import LocalStorage

    bad = windows[0].__class__(**{**windows[0].__dict__, "motion": windows[0].motion.copy()})
    bad.motion[0, 0, 0, 0] = np.nan
    writer = ShardWriter(LocalStorage(tmp_path / "a"), window=K, in_size=(12, 16), out_size=SIZE, ratio=RATIO,
                         source="synth")
    with pytest.raises(DataError, match="field 'motion' holds 1 NaN/inf"):
        writer.add(bad)
    # A shard written by something that skipped the check is refused by the reader, naming the row.
    store = LocalStorage(tmp_path / "b")
    write(store, windows[:1])
    store.write_bytes("shard-00000.parquet", encode_windows([bad], arrow_schema(K, (12, 16), SIZE)))
    with pytest.raises(DataError, match="shard-00000.parquet row 0: field 'motion' holds 1 NaN/inf"):
        read_shard(store, "shard-00000.parquet")


def test_wrong_shapes_and_unknown_versions(tmp_path, windows):
    from oss_cluster.storage import LocalStorage

    store = LocalStorage(tmp_path)
    write(store, windows[:1])
    wrong = arrow_schema(K, (12, 16), (48, 64))
    with pytest.raises(Exception):
        encode_windows(windows[:1], wrong)  # Arrow itself refuses a tensor of the wrong shape
    manifest = json.loads(store.read_bytes(MANIFEST))
    manifest["out_size"] = [48, 64]
    store.write_json(MANIFEST, manifest)
    with pytest.raises(DataError, match="field 'gt' has shape"):
        read_shard(store, "shard-00000.parquet")
    manifest["schema_version"] = 99
    store.write_json(MANIFEST, manifest)
    with pytest.raises(DataError, match="schema version 99 is unknown"):
        read_manifest(store)
    # A shard whose own metadata carries an unknown version.
    manifest["schema_version"], manifest["out_size"] = 1, list(SIZE)
    store.write_json(MANIFEST, manifest)
    schema = arrow_schema(K, (12, 16), SIZE).with_metadata({SCHEMA_KEY: b"7"})
    store.write_bytes("shard-00000.parquet", encode_windows(windows[:1], schema))
    with pytest.raises(DataError, match="schema version 7 is unknown"):
        read_shard(store, "shard-00000.parquet")
    missing = LocalStorage(tmp_path)
    missing.delete("shard-00000.parquet")
    with pytest.raises(DataError, match="shard listed in the manifest is missing"):
        read_shard(missing, "shard-00000.parquet")


def test_version_1_shards_still_read_with_the_next_frame_as_the_future(tmp_path, windows):
    """Shards written before schema version 2 (no gt_future / future_alpha columns) still read: each
    frame's extrapolation target is the next frame at alpha 1, none (alpha 0) on a window's last."""
    from oss_cluster.storage import LocalStorage

    store = LocalStorage(tmp_path)
    write(store, windows[:1], per_shard=1)
    manifest = json.loads(store.read_bytes(MANIFEST))
    manifest["schema_version"] = 1
    store.write_json(MANIFEST, manifest)
    old = arrow_schema(K, (12, 16), SIZE, version=1)
    assert "gt_future" not in old.names
    store.write_bytes("shard-00000.parquet", encode_windows(windows[:1], old))
    (back,) = read_shard(store, "shard-00000.parquet")
    assert np.array_equal(back.gt_future[0], windows[0].gt[1])
    assert back.future_alpha[:, 0].tolist() == [1.0, 0.0]
    assert np.array_equal(back.gt, windows[0].gt)


def test_synthetic_frames_carry_ground_truth_at_a_fractional_future_time(windows):
    from oss_cluster.data.synth import SynthScene

    alphas = np.concatenate([w.future_alpha[:, 0] for w in windows])
    assert ((alphas > 0) & (alphas <= 1)).all() and len(set(alphas.round(3))) > 1
    scene = SynthScene(SIZE, RATIO, 0, objects=2)  # the scene of the first window (seed 0 x 100003 + 0)
    first = windows[0]
    assert first.future_alpha[0, 0] == np.float32(scene.future_alpha(0))
    assert np.array_equal(first.gt_future[0], scene.render_gt(scene.future_alpha(0)))
    assert not np.array_equal(first.gt_future[0], first.gt[0])
