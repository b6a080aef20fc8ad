"""Shared fixtures: a real S3 HTTP endpoint on 127.0.0.1 (moto server mode) and one local Ray instance."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

# Ray's token authentication, as a real cluster runs it: the test head node, drivers and job clients
# share the token in ~/.ray/auth_token. Set before anything imports ray (it reads the mode at import).
os.environ["RAY_AUTH_MODE"] = "token"


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
    """One Ray head node for the whole test session, started with `ray start --head` (so jobs can be
    submitted to its dashboard) and joined by the tests. Yields its addresses."""
    import ray

    ray_bin = str(Path(sys.executable).parent / "ray")
    port, dashboard, metrics = _free_port(), _free_port(), _free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    subprocess.run([ray_bin, "get-auth-token", "--generate"], check=True, env=env, capture_output=True)
    subprocess.run([ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                    # The target-hardware resources cluster.yaml's tier node types carry (Serve pins to them).
                    '--resources={"tier_pico": 4, "tier_standard": 4, "tier_heavy": 4}',
                    "--include-dashboard=true",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--metrics-export-port={metrics}",
                    "--disable-usage-stats"],
                   check=True, env=env, capture_output=True)
    ray.init(address=f"127.0.0.1:{port}", log_to_driver=False, configure_logging=False)
    yield SimpleNamespace(address=f"127.0.0.1:{port}", dashboard=f"http://127.0.0.1:{dashboard}", ray_bin=ray_bin,
                          metrics_url=f"http://127.0.0.1:{metrics}/metrics")
    ray.shutdown()
    subprocess.run([ray_bin, "stop", "--force"], capture_output=True)
