"""Distributed training figures: ZeRO-2 optimizer memory per rank, and Ray + DeepSpeed throughput.

    python benchmarks/bench_train.py [--model hat_heavy] [--steps 6]

1. Optimizer state per rank (Adam moments held by each of 2 ranks), ZeRO stage 0 vs stage 2, for
   the model; ZeRO-2 partitions the moments, so the target is <= 0.55 x stage 0.
2. Throughput: windows/s of the Ray Train + DeepSpeed job with 2 workers (1 CPU thread each) beside
   2 x the same loop in one plain process with 1 thread (target >= 0.75).
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
    ds = deepspeed_config(cfg, use_gpu=False)
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


def main() -> None:
    import ray

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="hat_heavy")
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    ray.init(num_cpus=2, log_to_driver=False)
    memory = zero_memory(args.model)
    print(f"optimizer state per rank ({args.model}, 2 ranks): stage 0 {memory[0] / 2**20:.1f} MiB, "
          f"ZeRO-2 {memory[2] / 2**20:.1f} MiB, ratio {memory[2] / memory[0]:.3f} (target <= 0.55)")
    plain = plain_rate(args.model, args.steps)
    distributed = ray_rate(args.model, args.steps)
    print(f"throughput ({args.model}): plain 1-thread loop {plain:.3f} windows/s, 2 x plain {2 * plain:.3f}, "
          f"Ray + DeepSpeed 2 workers {distributed:.3f} windows/s, ratio {distributed / (2 * plain):.3f} (target >= 0.75)")


if __name__ == "__main__":
    main()
