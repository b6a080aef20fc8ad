"""One storage interface for a local folder and for s3://bucket/prefix.

Keys are '/'-separated paths relative to the storage root. Every write is atomic: a local write goes
to a temporary file that is renamed over the final name; an S3 write is a single PUT or a multipart
upload that is completed only after the last part (and aborted on error). A reader therefore sees
either the old object or the whole new one, never half a file.

    store = open_storage("s3://bucket/runs", endpoint_url="http://127.0.0.1:5000")
    store.write_bytes("a/b.json", b"{}")

Arrow readers (Parquet, Ray Data, Ray Train's `storage_filesystem`) use `arrow_filesystem()` with
`arrow_path(key)`.
"""

from __future__ import annotations

import json
import os
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import urlparse

import pyarrow.fs as pafs

# S3 multipart parts must be at least 5 MiB (except the last); below one part a single PUT is used.
S3_PART_BYTES = 8 * 1024 * 1024


class StorageError(OSError):
    """A storage operation failed; the message names the URI."""


class Storage(ABC):
    """Objects under a root URI, addressed by relative keys."""

    uri: str

    def url(self, key: str) -> str:
        """Full URI of a key (for messages and for users)."""
        return f"{self.uri.rstrip('/')}/{key}" if key else self.uri

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def write_chunks(self, key: str, chunks: Iterable[bytes]) -> int:
        """Atomically write the concatenated chunks under `key`; returns bytes written.

        If the iterable raises, nothing appears under `key` (an older object there is kept).
        """

    @abstractmethod
    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Write `data` under `key` only if nothing is there yet; False if it already exists.

        Atomic across processes and machines: of concurrent callers exactly one gets True.
        """

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys under `prefix` (recursive), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def arrow_filesystem(self) -> pafs.FileSystem: ...

    @abstractmethod
    def arrow_path(self, key: str = "") -> str: ...

    @abstractmethod
    def child(self, prefix: str) -> "Storage":
        """A storage rooted at `prefix` below this one."""

    def write_bytes(self, key: str, data: bytes) -> int:
        return self.write_chunks(key, [data])

    def read_json(self, key: str):
        raw = self.read_bytes(key)
        try:
            return json.loads(raw)
        except json.JSONDecodeError as err:
            raise StorageError(f"{self.url(key)}: not valid JSON: {err}") from None

    def write_json(self, key: str, value) -> int:
        return self.write_bytes(key, json.dumps(value, indent=2, sort_keys=False).encode())


class LocalStorage(Storage):
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if path != self.root and self.root not in path.parents:
            raise StorageError(f"{self.url(key)}: key escapes the storage root")
        return path

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such file") from None

    def _write_temp(self, final: Path, chunks: Iterable[bytes]) -> tuple[Path, int]:
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex}"
        written = 0
        try:
            with open(temp, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                    written += len(chunk)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return temp, written

    def write_chunks(self, key: str, chunks: Iterable[bytes]) -> int:
        final = self._path(key)
        temp, written = self._write_temp(final, chunks)
        os.replace(temp, final)
        return written

    def create_exclusive(self, key: str, data: bytes) -> bool:
        final = self._path(key)
        temp, _ = self._write_temp(final, [data])
        try:
            os.link(temp, final)  # fails if the name exists: atomic create-if-absent with full content
            return True
        except FileExistsError:
            return False
        finally:
            temp.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        keys = []
        for dirpath, _, files in os.walk(base):
            for name in files:
                if ".tmp-" in name and name.startswith("."):
                    continue  # an unfinished write of another process
                keys.append(Path(dirpath, name).relative_to(self.root).as_posix())
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def arrow_filesystem(self) -> pafs.FileSystem:
        return pafs.LocalFileSystem()

    def arrow_path(self, key: str = "") -> str:
        return str(self._path(key)) if key else str(self.root)

    def child(self, prefix: str) -> "LocalStorage":
        return LocalStorage(self._path(prefix))


class S3Storage(Storage):
    def __init__(self, uri: str, endpoint_url: str | None = None, region: str | None = None):
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StorageError(f"{uri}: expected s3://bucket/prefix")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        self.region = region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self._client = None

    @property
    def client(self):
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region)
        return self._client

    def __getstate__(self):  # boto3 clients do not pickle; Ray ships storages to workers
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error_code(self, err) -> str:
        return str(getattr(err, "response", {}).get("Error", {}).get("Code", ""))

    def read_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as err:
            if self._error_code(err) in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"{self.url(key)}: no such object") from None
            raise StorageError(f"{self.url(key)}: read failed: {err}") from None

    def _parts(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Regroup arbitrary chunks into parts of at least S3_PART_BYTES (the last may be smaller)."""
        pending = bytearray()
        for chunk in chunks:
            pending += chunk
            while len(pending) >= S3_PART_BYTES:
                yield bytes(pending[:S3_PART_BYTES])
                del pending[:S3_PART_BYTES]
        yield bytes(pending)

    def write_chunks(self, key: str, chunks: Iterable[bytes]) -> int:
        parts = self._parts(chunks)
        first = next(parts)
        try:
            second = next(parts)
        except StopIteration:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=first)
            return len(first)
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=self._key(key))
        upload_id, done, written = upload["UploadId"], [], 0
        try:
            for number, body in enumerate(_chain(first, second, parts), start=1):
                if not body and number > 1:
                    continue
                etag = self.client.upload_part(
                    Bucket=self.bucket, Key=self._key(key), UploadId=upload_id, PartNumber=number, Body=body
                )["ETag"]
                done.append({"ETag": etag, "PartNumber": number})
                written += len(body)
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=self._key(key), UploadId=upload_id, MultipartUpload={"Parts": done}
            )
        except BaseException:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._key(key), UploadId=upload_id)
            raise
        return written

    def create_exclusive(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
            return True
        except ClientError as err:
            if self._error_code(err) in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return False
            raise StorageError(f"{self.url(key)}: conditional write failed: {err}") from None

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as err:
            if self._error_code(err) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StorageError(f"{self.url(key)}: head failed: {err}") from None

    def list(self, prefix: str = "") -> list[str]:
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
        return sorted(keys)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def size(self, key: str) -> int:
        return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])

    def arrow_filesystem(self) -> pafs.FileSystem:
        options = {"region": self.region}
        if self.endpoint_url:
            endpoint = urlparse(self.endpoint_url)
            options["endpoint_override"] = endpoint.netloc or endpoint.path
            options["scheme"] = endpoint.scheme or "https"
        # No keys here: Arrow's S3 client then resolves credentials through the standard AWS chain
        # (environment, shared credentials/config files, web identity, instance role) wherever the
        # filesystem is used, and refreshes expiring ones (STS tokens, instance roles) on long runs.
        # Frozen keys would expire mid-run and travel, pickled, to every Ray worker.
        return pafs.S3FileSystem(**options)

    def arrow_path(self, key: str = "") -> str:
        return f"{self.bucket}/{self._key(key)}" if key else f"{self.bucket}/{self.prefix}".rstrip("/")

    def child(self, prefix: str) -> "S3Storage":
        child = S3Storage(f"{self.uri}/{prefix.strip('/')}", self.endpoint_url, self.region)
        child._client = self._client
        return child


def _chain(first: bytes, second: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield second
    yield from rest


# AWS settings a Ray worker needs to reach the same S3 endpoint: where to look, never a secret. Keys
# and session tokens stay out of runtime_envs (the Ray dashboard shows them); workers find
# credentials through the standard chain (their node's instance role, or the files these name).
AWS_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
                "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")


def aws_settings() -> dict[str, str]:
    """The non-secret AWS_* variables of this process, for Ray workers' runtime_env."""
    return {name: os.environ[name] for name in AWS_SETTINGS if os.environ.get(name)}


def open_storage(uri: str, endpoint_url: str | None = None, region: str | None = None) -> Storage:
    """A Storage for a local path or an s3://bucket/prefix URI."""
    if uri.startswith("s3://"):
        return S3Storage(uri, endpoint_url=endpoint_url, region=region)
    if "://" in uri and not uri.startswith("file://"):
        raise StorageError(f"{uri}: unsupported storage scheme (use a local path or s3://bucket/prefix)")
    return LocalStorage(uri.removeprefix("file://"))


def storage_from_config(cfg) -> Storage:
    """A Storage from a `StorageConfig` (oss_cluster.config)."""
    return open_storage(cfg.root, endpoint_url=cfg.endpoint_url, region=cfg.region)
