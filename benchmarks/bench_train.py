"""Distributed training figures: ZeRO-2 optimizer memory per rank, and Ray + DeepSpeed throughput.

    python benchmarks/bench_train.py [--model hat_heavy] [--steps 6]

1. Optimizer state per rank (Adam moments held by each of 2 ranks), ZeRO stage 0 vs stage 2, for
   the model; ZeRO-2 partitions the moments, so the target is <= 0.55 x stage 0.
2. Throughput: windows/s of the Ray Train + DeepSpeed job with 2 workers (1 CPU thread each) beside
   2 x the same loop in one plain process with 1 thread (target >= 0.75).
3. Data path: windows/s of the same distributed job (a fast student, so reading is not hidden behind
   compute) reading its shards from an S3 endpoint (moto's server on 127.0.0.1, started here) beside
   reading them from memory (/dev/shm); shards are read shard-grouped, prefetched on a background
   thread (target >= 0.9).
"""

from __future__ import annotations

import argparse
import time

import torch

from oss_cluster.config import load_config
from oss_cluster.train.local import training_loss

# No warm-up frames: both sides time the same two-frame step (a warm-up adds the same forward passes to both).
SMOKE = ["train.batch_size=1", "train.crop=48", "data.out_size=[96,128]", "data.window=2", "train.log_every=1000",
         "train.eval_every=100000", "train.checkpoint_every=100000", "train.warmup_steps=1", "train.warmup_frames=0"]


def optimizer_state_bytes(loop_config: dict) -> None:
    """Ray Train worker: DeepSpeed-wrap the model at a ZeRO stage, take two steps, report Adam-moment bytes."""
    import deepspeed
    import ray.train

    from oss_cluster.models import build_model
    from oss_cluster.train.distributed import deepspeed_config

    cfg = load_config(None, [f"model.name={loop_config['model']}", *SMOKE])
    model = build_model(cfg.model.name)
    ds = deepspeed_config(cfg)
    ds["zero_optimization"]["stage"] = loop_config["stage"]  # 0 (no ZeRO) is the baseline; configs allow 1-3
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds)
    batch = _batch(cfg)
    for _ in range(2):
        loss, _ = training_loss(engine.module, batch, cfg.train)
        engine.backward(loss)
        engine.step()
    inner = getattr(engine.optimizer, "optimizer", engine.optimizer)  # ZeRO wraps the torch optimizer
    moments = sum(t.numel() * t.element_size() for state in inner.state.values()
                  for name, t in state.items() if torch.is_tensor(t) and name in ("exp_avg", "exp_avg_sq"))
    import tempfile

    with tempfile.TemporaryDirectory() as folder:  # Train V2 keeps a result's metrics with its checkpoint
        ray.train.report({"optimizer_state_bytes": moments}, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _batch(cfg):
    from oss_cluster.data.synth import synth_windows
    from oss_cluster.evaluate import window_tensors
    from oss_cluster.train.local import random_crop
    import numpy as np

    window = next(synth_windows(2, cfg.data.ratio, tuple(cfg.data.out_size), 2, 2, objects=2))
    sample = random_crop(window_tensors(window), cfg.train.crop, np.random.default_rng(0))
    return {k: v[None] for k, v in sample.items()}


def zero_memory(model: str) -> dict:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    import tempfile

    figures = {}
    for stage in (0, 2):
        with tempfile.TemporaryDirectory() as folder:
            result = TorchTrainer(optimizer_state_bytes, train_loop_config={"model": model, "stage": stage},
                                  torch_config=TorchConfig(backend="gloo"), scaling_config=ScalingConfig(num_workers=2),
                                  run_config=RunConfig(storage_path=folder, name=f"zero{stage}")).fit()
        figures[stage] = result.metrics["optimizer_state_bytes"]
    return figures


def plain_rate(model: str, steps: int) -> float:
    """Windows/s of the same step in one process, one thread, plain torch AdamW."""
    from oss_cluster.models import build_model

    torch.set_num_threads(1)
    cfg = load_config(None, [f"model.name={model}", *SMOKE])
    net = build_model(model)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    batch = _batch(cfg)
    for index in range(steps + 1):
        if index == 1:
            start = time.perf_counter()  # the first step warms up
        loss, _ = training_loss(net, batch, cfg.train)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return steps / (time.perf_counter() - start)


def ray_rate(model: str, steps: int) -> float:
    import tempfile

    from oss_cluster.train.distributed import train_distributed

    with tempfile.TemporaryDirectory() as root:
        cfg = load_config(None, [f"model.name={model}", f"train.steps={steps}", "train.num_workers=2",
                                 f"storage.root={root}", "data.frames=8", "data.frames_per_sequence=8", *SMOKE])
        _, result = train_distributed(cfg, log=lambda line: None)
    return result.metrics["samples_per_s"]


def s3_endpoint() -> str:
    """A moto S3 server on 127.0.0.1 for this process and its Ray workers (test credentials in the environment)."""
    import logging
    import os
    import socket

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    return f"http://127.0.0.1:{port}"


def data_path_rates(endpoint: str, steps: int) -> tuple[float, float, dict]:
    """(windows/s reading shards from S3, from memory, the dataset's shape) of the same 2-worker job."""
    import tempfile

    import boto3

    from oss_cluster.data.build import build_dataset
    from oss_cluster.storage import open_storage
    from oss_cluster.train.distributed import train_distributed

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
    data = ["data.out_size=[240,320]", "data.ratio=2.0", "data.window=2", "data.frames=160",
            "data.frames_per_sequence=40", "data.windows_per_shard=4", "data.objects=3"]
    base = load_config(None, data)
    memory = tempfile.mkdtemp(dir="/dev/shm", prefix="oss-bench-")
    for uri in ("s3://bench/data", f"{memory}/data"):
        build_dataset(base.data, open_storage(uri, endpoint_url=endpoint), progress=False)
    rates = {}
    for label, uri in (("memory", f"{memory}/data"), ("s3", "s3://bench/data")):
        cfg = load_config(None, [*data, "model.name=student_pico", f"train.steps={steps}", "train.num_workers=2",
                                 "train.batch_size=1", "train.crop=96", "train.warmup_frames=0", "train.warmup_steps=1",
                                 "train.log_every=1000", "train.eval_every=100000", "train.checkpoint_every=100000",
                                 "data.source=shards", f"data.shards={uri}", f"storage.root=s3://bench/runs-{label}",
                                 f"storage.endpoint_url={endpoint}"])
        _, result = train_distributed(cfg, log=lambda line: None)
        rates[label] = result.metrics["samples_per_s"]
    shards = len(open_storage(f"{memory}/data").read_json("manifest.json")["shards"])
    return rates["s3"], rates["memory"], {"shards": shards, "windows": 80}


def main() -> None:
    import ray

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="hat_heavy")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--data-steps", type=int, default=40, help="steps of the data-path comparison")
    parser.add_argument("--only-data", action="store_true", help="run only the data-path comparison (3)")
    args = parser.parse_args()
    endpoint = s3_endpoint()  # before Ray starts, so its workers inherit the endpoint's credentials
    ray.init(num_cpus=2, log_to_driver=False)
    s3, memory, shape = data_path_rates(endpoint, args.data_steps)
    print(f"data path (student_pico, 2 workers, {shape['shards']} shards of 4 windows, 240x320): shards from S3 "
          f"{s3:.3f} windows/s, from memory {memory:.3f} windows/s, ratio {s3 / memory:.3f} (target >= 0.9)")
    if args.only_data:
        return
    memory = zero_memory(args.model)
    print(f"optimizer state per rank ({args.model}, 2 ranks): stage 0 {memory[0] / 2**20:.1f} MiB, "
          f"ZeRO-2 {memory[2] / 2**20:.1f} MiB, ratio {memory[2] / memory[0]:.3f} (target <= 0.55)")
    plain = plain_rate(args.model, args.steps)
    distributed = ray_rate(args.model, args.steps)
    print(f"throughput ({args.model}): plain 1-thread loop {plain:.3f} windows/s, 2 x plain {2 * plain:.3f}, "
          f"Ray + DeepSpeed 2 workers {distributed:.3f} windows/s, ratio {distributed / (2 * plain):.3f} (target >= 0.75)")


if __name__ == "__main__":
    main()
