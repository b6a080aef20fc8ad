"""The training job as it runs on cluster.yaml's cluster: `ray job submit` to a head with no CPU, trainer
nodes launched by the autoscaler, S3 (the local endpoint) as the only shared storage.

All fake nodes share this machine's disk, so "S3 only" is shown by what the bucket holds, not by the
absence of errors. These tests are the slowest of the suite: few, tiny, and run one after another.
"""

from __future__ import annotations

import uuid

import boto3
import pytest

from oss_cluster.checkpoints import load_state_dict
from oss_cluster.runs import RunRegistry
from oss_cluster.storage import open_storage
from oss_cluster.train.distributed import weights_digest
from tests.cluster.conftest import alive_worker_nodes, kill_processes_under, node_folder, submit, wait_until


@pytest.fixture
def bucket(fake_cluster):
    name = f"oss-cluster-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=fake_cluster.endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def keys(cluster, bucket: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=cluster.endpoint, region_name="us-east-1")
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        found.extend(item["Key"] for item in page.get("Contents", []))
    return found


def heavy_job(cluster, bucket: str, *extra: str) -> list[str]:
    """jobs/train_heavy.py's smoke run shrunk further, on heavy_trainer nodes, storing in the bucket."""
    sets = [f"storage.root=s3://{bucket}/oss", f"storage.endpoint_url={cluster.endpoint}", "model.name=student_pico",
            "data.out_size=[48,64]", "train.crop=32", "train.worker_resources={trainer_heavy: 1}", *extra]
    return ["jobs/train_heavy.py", "--smoke", *[part for item in sets for part in ("--set", item)]]


def run_record(cluster, bucket: str) -> tuple[str, dict]:
    store = open_storage(f"s3://{bucket}/oss", endpoint_url=cluster.endpoint)
    (name,) = RunRegistry(store).names()
    return str(name), store.read_json(f"runs/{name}/metrics.json")


def checkpoint_digest(cluster, bucket: str, name: str, step: int) -> str:
    state, _, _ = load_state_dict(open_storage(f"s3://{bucket}/oss", endpoint_url=cluster.endpoint), name, step)
    return weights_digest(state)


def test_job_trains_on_autoscaled_nodes_then_resumes_on_fewer_workers(fake_cluster, bucket):
    done = submit(fake_cluster, *heavy_job(fake_cluster, bucket, "train.steps=2", "train.eval_every=2",
                                           "train.checkpoint_every=2"))
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    assert "Adding" in done.stdout and "heavy_trainer" in done.stdout  # the autoscaler launched the trainers
    name, record = run_record(fake_cluster, bucket)
    assert record["status"] == "finished"
    # The node types the workers ran on (two heavy_trainer nodes, one worker each), not the driver's head.
    assert record["node_types"] == {"heavy_trainer": 2}
    stored = keys(fake_cluster, bucket)
    prefix = f"oss/runs/{name}/"
    assert f"{prefix}metrics.json" in stored and any(k.startswith("oss/datasets/") and k.endswith("manifest.json")
                                                     for k in stored)
    assert any(k.startswith(f"{prefix}strips/") for k in stored)
    for rank in (0, 1):  # every rank's DeepSpeed shard is in the one checkpoint in S3
        assert any(k.startswith(f"{prefix}ray/checkpoint_") and f"zero_pp_rank_{rank}_mp_rank_00_optim" in k
                   for k in stored)

    # Resume the same run with 1 worker: its 2-rank ZeRO checkpoint goes through DeepSpeed's universal format.
    again = submit(fake_cluster, *heavy_job(fake_cluster, bucket, "train.steps=3", "train.eval_every=3",
                                            "train.checkpoint_every=3", "train.num_workers=1"), "--run-name", name)
    assert again.returncode == 0, again.stdout[-5000:] + again.stderr[-2000:]
    _, record = run_record(fake_cluster, bucket)
    group = record["worker_groups"][-1]
    assert group["world_size"] == 1 and group["universal_checkpoint"] and group["resumed_from_step"] == 2
    assert group["weights_sha256"] == checkpoint_digest(fake_cluster, bucket, name, 2)  # the saved tensors, loaded
    assert [m["step"] for m in record["step_metrics"]][-1] == 3 and record["status"] == "finished"


def test_a_killed_node_is_replaced_and_the_run_resumes_from_its_last_checkpoint(fake_cluster, bucket):
    job = submit(fake_cluster, *heavy_job(fake_cluster, bucket, "train.steps=60", "train.eval_every=60",
                                          "train.checkpoint_every=30", "train.log_every=5", "train.max_failures=3"),
                 wait=False)
    try:
        wait_until(lambda: any("checkpoint_" in k and "zero_pp_rank_1_mp_rank_00_optim" in k
                               for k in keys(fake_cluster, bucket)), 400, "the first checkpoint in S3", poll=0.5)
        victims = [n for n in alive_worker_nodes(fake_cluster) if "trainer_heavy" in n["Resources"]]
        assert victims, "no heavy_trainer node to kill"
        killed = kill_processes_under(node_folder(fake_cluster, victims[0]["NodeID"]))  # the whole node
        assert killed > 0
        output, _ = job.communicate(timeout=600)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, output[-6000:]
    name, record = run_record(fake_cluster, bucket)
    assert record["status"] == "finished" and record["step_metrics"][-1]["step"] == 60
    resumed = [g for g in record["worker_groups"] if g.get("resumed_from_step")]
    assert resumed, record["worker_groups"]
    step = resumed[-1]["resumed_from_step"]
    assert step == 30  # Ray Train keeps the last 2 checkpoints: 30 and 60 are both still there to compare
    assert resumed[-1]["weights_sha256"] == checkpoint_digest(fake_cluster, bucket, name, step)
    alive = {n["NodeID"] for n in alive_worker_nodes(fake_cluster)}
    assert victims[0]["NodeID"] not in alive


def test_a_sweep_runs_trials_at_once_on_autoscaled_nodes(fake_cluster, bucket):
    sets = [f"storage.root=s3://{bucket}/oss", f"storage.endpoint_url={fake_cluster.endpoint}", "tune.num_samples=2",
            "tune.ratios=[2.0]", "tune.fx_weights=[1.0]", "tune.max_steps=2", "tune.grace_period=2",
            "train.worker_resources={trainer_canvas: 1}"]
    done = submit(fake_cluster, "jobs/tune_sweep.py", "--config", "configs/tune_smoke.yaml",
                  *[part for item in sets for part in ("--set", item)])
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    store = open_storage(f"s3://{bucket}/oss", endpoint_url=fake_cluster.endpoint)
    records = [store.read_json(f"runs/{name}/metrics.json") for name in RunRegistry(store).names()]
    assert len(records) == 2 and all(r["node_types"] == {"canvas_trainer": 1} for r in records)
    (a, b) = [(r["worker_groups"][0]["started_at"], r["ended_at"]) for r in records]
    assert a[0] < b[1] and b[0] < a[1], f"the trials ran one after another: {a} {b}"


def test_local_storage_and_impossible_requests_are_refused_before_any_work(fake_cluster, bucket, tmp_path):
    local = submit(fake_cluster, *heavy_job(fake_cluster, bucket, f"storage.root={tmp_path / 'runs'}"))
    assert local.returncode != 0
    assert "storage.root=" in local.stdout and "s3://" in local.stdout and "several nodes" in local.stdout
    relative = submit(fake_cluster, *heavy_job(fake_cluster, bucket, "storage.root=./oss-runs"))
    assert relative.returncode != 0 and "is relative" in relative.stdout
    nowhere = submit(fake_cluster, *heavy_job(fake_cluster, bucket, "train.worker_resources={trainer_nowhere: 1}"))
    assert nowhere.returncode != 0 and "trainer_nowhere" in nowhere.stdout and "Change train.use_gpu" in nowhere.stdout
    # Refused at once, without waiting: the driver on the head reads the node types the autoscaler can launch.
    assert "no node type the autoscaler can launch has it" in nowhere.stdout
    assert not (tmp_path / "runs").exists() and keys(fake_cluster, bucket) == []  # nothing was written anywhere
