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
def s3_endpoint(tmp_path_factory):
    """URL of a moto S3 server on 127.0.0.1, started for the session. Credentials are in a shared
    credentials file named by AWS_SHARED_CREDENTIALS_FILE, as a cluster node's profile would be: the
    standard chain finds them in this process and in Ray workers, and no secret is in any environment."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    folder = tmp_path_factory.mktemp("aws")
    (folder / "credentials").write_text("[default]\naws_access_key_id = testing\naws_secret_access_key = testing-secret\n")
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
             "AWS_SHARED_CREDENTIALS_FILE")
    saved = {k: os.environ.get(k) for k in names}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        os.environ.pop(key, None)
    os.environ.update(AWS_SHARED_CREDENTIALS_FILE=str(folder / "credentials"), AWS_DEFAULT_REGION="us-east-1")
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
def ray_local(s3_endpoint):
    """One Ray head node for the whole test session, started with `ray start --head` (so jobs can be
    submitted to its dashboard) and joined by the tests. Yields its addresses. It starts after the S3
    endpoint so that its worker processes find the endpoint's credentials file through the standard
    chain, as cluster nodes find theirs (no secret is passed to them)."""
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


CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# A HAT small enough to train for a few steps in seconds (the distillation tests' teacher).
TINY_HAT = ["model.options.embed_dim=24", "model.options.groups=1", "model.options.depth=2", "model.options.heads=2",
            "model.options.compress=6", "model.options.squeeze=6"]


@pytest.fixture(scope="session")
def shipped(tmp_path_factory, ray_local):
    """(storage root, teacher run, student run, student result): a tiny Pico teacher trained for 2 steps and the
    Pico student distilled from it with the smoke schedule (100 steps), both on the session's Ray instance.
    Shared by the distillation, export and evaluation tests."""
    from oss_cluster.config import load_config
    from oss_cluster.train.distributed import train_distributed

    root = tmp_path_factory.mktemp("ship")
    teacher_cfg = load_config(CONFIGS / "distill_smoke.yaml", [
        f"storage.root={root}", "family=hat", "model.name=hat_tiny", *TINY_HAT, "train.steps=2", "train.lr=1e-3",
        "train.eval_every=2", "train.checkpoint_every=2"])
    teacher, _ = train_distributed(teacher_cfg)
    student_cfg = load_config(CONFIGS / "distill_smoke.yaml", [f"storage.root={root}", f"distill.teacher_run={teacher}",
                                                               "train.steps=100", "train.eval_every=100",
                                                               "train.checkpoint_every=100"])
    student, result = train_distributed(student_cfg)
    return root, teacher, student, result


@pytest.fixture(scope="session")
def exported(shipped):
    """(manifest, log lines) of the distilled student's ONNX export, made once per session."""
    from oss_cluster.export import export_student
    from oss_cluster.storage import open_storage

    root, _, student, _ = shipped
    lines: list[str] = []
    return export_student(open_storage(str(root)), student, log=lines.append), lines


@pytest.fixture(scope="session")
def canvas_trained(tmp_path_factory):
    """(config, run, summary, log lines) of a 20-step canvas run with the single-process trainer (64x48
    output, game-like motion), in its own storage root. Shared by the canvas training and dashboard tests."""
    from oss_cluster.config import load_config
    from oss_cluster.runs import RunRegistry
    from oss_cluster.storage import open_storage
    from oss_cluster.train.local import train_local

    root = tmp_path_factory.mktemp("canvas")
    cfg = load_config(CONFIGS / "canvas.yaml", [
        f"storage.root={root}", "data.out_size=[48,64]", "data.frames=48", "data.frames_per_sequence=24",
        "data.window=3", "data.val_sequences=1", "data.objects=3", "train.warmup_frames=9", "train.steps=20",
        "train.batch_size=2",
        "train.crop=32", "train.eval_every=20", "train.log_every=5", "train.warmup_steps=2", "train.lr=1e-3",
        "model.options.capacity=1024", "model.options.spawn_per_frame=768", "model.options.widths=[8,16,32]",
        "model.options.hidden=32",
    ])
    run = RunRegistry(open_storage(cfg.storage.root)).allocate(cfg.family, cfg.version, cfg.tier)
    lines: list[str] = []
    _, summary = train_local(cfg, run=run, log=lines.append)
    return cfg, run, summary, lines


@pytest.fixture(scope="session")
def canvas_evaluated(tmp_path_factory, ray_local):
    """(storage root, run name): a 2-step canvas run trained with Ray Train + DeepSpeed, then scored by the
    evaluation command with one clip and its SR + OSS-FX stream. Shared by the distributed and dashboard tests."""
    from oss_cluster.config import load_config
    from oss_cluster.evaluate.__main__ import main as evaluate_main
    from oss_cluster.train.distributed import train_distributed

    root = tmp_path_factory.mktemp("canvas-ray")
    cfg = load_config(CONFIGS / "smoke.yaml", [
        "model.name=canvas", "family=canvas", f"storage.root={root}", "data.out_size=[48,64]", "train.crop=32",
        "train.batch_size=2", "train.steps=2", "train.eval_every=2", "train.checkpoint_every=2", "train.log_every=1",
        "data.val_sequences=1", "model.options.capacity=512", "model.options.spawn_per_frame=512"])
    name, _ = train_distributed(cfg)
    assert evaluate_main(["--run", name, "--storage", str(root), "--heldout", "1", "--frames", "32", "--clips", "1",
                          "--no-video-metric", "--quiet"]) == 0
    return root, name
