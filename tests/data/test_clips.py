"""Training clips (a window with its warm-up frames) and whole sequences, from memory and from shards."""

import numpy as np
import pytest

from oss_cluster.data.clips import Clips, WindowList, whole_sequences
from oss_cluster.data.schema import DataError
from oss_cluster.data.shards import ShardDataset, ShardWriter
from oss_cluster.data.synth import synth_windows

SIZE, RATIO, K = (24, 32), 2.0, 2


@pytest.fixture(scope="module")
def windows():
    # Two scenes of 9 frames: 4 windows of 2 each (the ninth frame is not rendered).
    return list(synth_windows(frames=18, ratio=RATIO, out_size=SIZE, window=K, frames_per_sequence=9, objects=1))


def test_clips_prepend_the_frames_before_each_window(windows):
    clips = Clips(WindowList(windows), warmup=3)
    # Windows start at 0, 2, 4, 6 in each scene: only those at 4 and 6 have 3 frames before them.
    assert len(clips) == 4
    clip = clips.clip(0)
    assert clip.length == 3 + K and clip.start == 1 and clip.sequence == windows[2].sequence
    frames = np.concatenate([windows[0].gt, windows[1].gt, windows[2].gt])  # frames 0..5 of the scene
    assert np.array_equal(clip.gt, frames[1:6])
    assert np.array_equal(clip.jitter[-K:], windows[2].jitter)  # the trained frames are the window itself


def test_no_warmup_gives_every_window(windows):
    clips = Clips(WindowList(windows), warmup=0)
    assert len(clips) == len(windows) and np.array_equal(clips.clip(1).lr, windows[1].lr)


def test_clips_and_sequences_from_shards(tmp_path, windows):
    from oss_cluster.storage import open_storage

    storage = open_storage(str(tmp_path / "shards"))
    writer = ShardWriter(storage, window=K, in_size=(12, 16), out_size=SIZE, ratio=RATIO, source="synth",
                         windows_per_shard=3)  # a clip's frames span two shards
    for item in windows:
        writer.add(item)
    manifest = writer.close()
    assert manifest["shards"][0]["index"][1] == [windows[1].sequence, 2, K]
    dataset = ShardDataset(storage)
    from_shards, in_memory = Clips(dataset, warmup=4), Clips(WindowList(windows), warmup=4)
    assert len(from_shards) == len(in_memory) == 4
    for index in range(len(in_memory)):
        assert np.array_equal(from_shards.clip(index).lr, in_memory.clip(index).lr)
    sequences = whole_sequences(dataset)
    assert [(s.sequence, s.start, s.length) for s in sequences] == [(windows[0].sequence, 0, 8), (windows[4].sequence, 0, 8)]
    # A manifest written before the index existed: the sequence and start columns are read instead.
    for shard in manifest["shards"]:
        del shard["index"]
    storage.write_json("manifest.json", manifest)
    assert ShardDataset(storage).keys() == dataset.keys()


def test_no_long_enough_sequence_is_an_error(windows):
    with pytest.raises(DataError, match="at least 20 consecutive frames"):
        whole_sequences(WindowList(windows), min_frames=20)


def test_clip_stream_reads_each_shard_about_once_per_epoch_and_repeats_on_resume(storage, windows):
    from oss_cluster.data.clips import ClipStream

    writer = ShardWriter(storage, window=K, in_size=(12, 16), out_size=SIZE, ratio=RATIO, source="synth",
                         windows_per_shard=1)  # one window per shard: warm-up reaches into earlier shards
    for item in windows:
        writer.add(item)
    writer.close()
    dataset = ShardDataset(storage)
    clips = Clips(dataset, warmup=2)
    mine = list(range(len(clips)))
    stream = ClipStream(clips, mine, seed=3, rank=0)
    epoch = [stream.clip(i) for i in range(len(mine))]
    assert dataset.reads <= 2 * len(dataset.manifest["shards"])  # not once per step
    reference = Clips(ShardDataset(storage), warmup=2)
    every = sorted((reference.clip(i).sequence, reference.clip(i).start) for i in mine)
    assert sorted((c.sequence, c.start) for c in epoch) == every  # every clip once per epoch
    second = [stream.clip(len(mine) + i) for i in range(len(mine))]
    assert [(c.sequence, c.start) for c in second] != [(c.sequence, c.start) for c in epoch] or len(mine) < 3
    # A resumed run (a new stream, same seed and rank) continues the same sequence of clips, bit for bit.
    again = ClipStream(Clips(ShardDataset(storage), warmup=2), mine, seed=3, rank=0)
    for index in (len(mine) + 1, 2):
        assert again.clip(index).gt.tobytes() == (second[1] if index > len(mine) else epoch[2]).gt.tobytes()
    stream.close()
    again.close()
