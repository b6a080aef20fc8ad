"""Shared fixtures: a real S3 HTTP endpoint on 127.0.0.1 (moto server mode) and one local Ray instance."""

from __future__ import annotations

import os
import socket
import uuid

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """URL of a moto S3 server on 127.0.0.1, started for the session; credentials set in the environment."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    yield f"http://127.0.0.1:{port}"
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3_uri(s3_endpoint):
    """A fresh bucket on the endpoint; returns s3://bucket/prefix."""
    import boto3

    bucket = f"oss-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/root"


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    """The same tests against a local folder and against the S3 endpoint."""
    from oss_cluster.storage import open_storage

    if request.param == "local":
        return open_storage(str(tmp_path / "store"))
    endpoint = request.getfixturevalue("s3_endpoint")
    return open_storage(request.getfixturevalue("s3_uri"), endpoint_url=endpoint)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole test session."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
