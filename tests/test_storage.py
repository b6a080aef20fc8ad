import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow.parquet as pq
import pyarrow as pa
import pytest

from oss_cluster.storage import S3_PART_BYTES, LocalStorage, S3Storage, StorageError, open_storage


def test_round_trip_list_exists_delete(storage):
    storage.write_bytes("a/b.bin", b"hello")
    storage.write_json("a/c.json", {"x": 1})
    assert storage.read_bytes("a/b.bin") == b"hello"
    assert storage.read_json("a/c.json") == {"x": 1}
    assert storage.exists("a/b.bin") and not storage.exists("a/zzz")
    assert storage.list("a/") == ["a/b.bin", "a/c.json"]
    assert storage.size("a/b.bin") == 5
    storage.delete("a/b.bin")
    assert not storage.exists("a/b.bin")
    with pytest.raises(FileNotFoundError, match="zzz"):
        storage.read_bytes("a/zzz")


def test_create_exclusive_refuses_second_writer(storage):
    assert storage.create_exclusive("claim", b"first")
    assert not storage.create_exclusive("claim", b"second")
    assert storage.read_bytes("claim") == b"first"


def _failing_chunks(good: bytes, parts: int):
    for _ in range(parts):
        yield good
    raise RuntimeError("writer died mid-stream")


def test_interrupted_write_leaves_old_object(storage):
    storage.write_bytes("data.bin", b"old contents")
    chunk = b"x" * (S3_PART_BYTES + 1)  # forces a multipart upload on S3
    with pytest.raises(RuntimeError, match="mid-stream"):
        storage.write_chunks("data.bin", _failing_chunks(chunk, 2))
    assert storage.read_bytes("data.bin") == b"old contents"
    with pytest.raises(RuntimeError):
        storage.write_chunks("fresh.bin", _failing_chunks(chunk, 2))
    assert not storage.exists("fresh.bin")
    assert storage.list() == ["data.bin"]


def test_large_multipart_write_round_trips(storage):
    payload = os.urandom(2 * S3_PART_BYTES + 123)
    chunks = [payload[i:i + 1_000_000] for i in range(0, len(payload), 1_000_000)]
    assert storage.write_chunks("big.bin", chunks) == len(payload)
    assert storage.read_bytes("big.bin") == payload


def test_arrow_filesystem_reads_parquet(storage):
    table = pa.table({"x": [1, 2, 3]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    storage.write_bytes("t/table.parquet", sink.getvalue().to_pybytes())
    read = pq.read_table(storage.arrow_path("t/table.parquet"), filesystem=storage.arrow_filesystem())
    assert read.equals(table)


def test_child_storage(storage):
    child = storage.child("sub/dir")
    child.write_bytes("k", b"v")
    assert storage.read_bytes("sub/dir/k") == b"v"
    assert child.list() == ["k"]


def test_killed_local_writer_never_leaves_half_file(tmp_path):
    """A real process killed mid-write: the final name keeps its old content, complete."""
    store = LocalStorage(tmp_path)
    store.write_bytes("file.bin", b"complete old version")
    script = textwrap.dedent(f"""
        import sys, time
        from oss_cluster.storage import LocalStorage
        def chunks():
            for _ in range(1000):
                yield b"y" * 65536
                sys.stdout.write("w"); sys.stdout.flush()
                time.sleep(0.01)
        LocalStorage({str(tmp_path)!r}).write_chunks("file.bin", chunks())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout.read(3) == b"www"  # it is writing now
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert store.read_bytes("file.bin") == b"complete old version"
    assert store.list() == ["file.bin"]  # the temporary file is not listed as data


def test_s3_endpoint_from_environment(s3_endpoint, s3_uri, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    store = open_storage(s3_uri)
    assert isinstance(store, S3Storage) and store.endpoint_url == s3_endpoint
    store.write_bytes("k", b"v")
    assert store.read_bytes("k") == b"v"


def test_bad_uris():
    with pytest.raises(StorageError, match="unsupported storage scheme"):
        open_storage("gs://bucket/x")
    with pytest.raises(StorageError, match="expected s3://bucket/prefix"):
        S3Storage("s3://")
    with pytest.raises(StorageError, match="escapes the storage root"):
        LocalStorage("/tmp").read_bytes("../etc/passwd")


def test_no_secret_reaches_the_arrow_filesystem_or_the_workers_runtime_env(s3_uri, s3_endpoint, monkeypatch):
    """Credentials come from the standard chain wherever S3 is used (so expiring tokens refresh): the
    Arrow filesystem handed to Ray (pickled to every worker) and the workers' runtime_env (shown by the
    dashboard) carry no key, even when the driver has keys in its environment."""
    import pickle

    from oss_cluster.storage import open_storage
    from oss_cluster.storage import aws_settings

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "driver-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "driver-secret-value")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "driver-session-token")
    store = open_storage(s3_uri, endpoint_url=s3_endpoint)
    store.write_bytes("probe.txt", b"hello")
    filesystem = store.arrow_filesystem()
    with filesystem.open_input_stream(store.arrow_path("probe.txt")) as stream:  # it still reads, through the chain
        assert stream.read() == b"hello"
    shipped = pickle.dumps(filesystem)
    for secret in (b"driver-key-id", b"driver-secret-value", b"driver-session-token", b"testing-secret"):
        assert secret not in shipped
    settings = aws_settings()
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & set(settings)
    assert settings["AWS_SHARED_CREDENTIALS_FILE"]  # where workers find credentials, not the credentials
