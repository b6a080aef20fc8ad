"""Ray Train + DeepSpeed: the cluster's training job, for the Heavy teacher and the canvas model.

Driver (`train_distributed`): starts or joins Ray, makes sure the dataset shards exist (synthetic data
is rendered into shards under the storage root once per data config), allocates or reopens the run
in the registry, and runs a Ray Train `TorchTrainer` whose storage is the run's folder (local or S3
through `storage_filesystem`). Rerunning with the same run name resumes from its latest checkpoint.

What the cluster must provide is requested, not counted: the config's `train.use_gpu` and
`train.worker_resources` become each worker's resources (oss_cluster.cluster refuses only a request
no node type can ever satisfy), and a local storage root is refused where several nodes would write it.

Worker (`train_loop_per_worker`): builds the model, wraps it with `deepspeed.initialize` (ZeRO stage
from config, fp32 weights and optimizer, torch's AdamW, gradient accumulation and clipping), runs the
networks under bf16 autocast where the precision asks for it (geometry stays fp32:
models/precision.py), reads its own slice of the windows through a prefetching shard reader, and
steps with the single-process trainer's `training_loss` and `lr_at`. The workers record the node
types they run on (spend counts those nodes only). Every `checkpoint_every` steps each rank saves its
DeepSpeed shard and reports it to Ray Train (which gathers all ranks' files into one checkpoint);
rank 0 logs metrics, evaluates on the engine's device and precision (with ZeRO-3, after every rank
has gathered the parameters), saves a comparison strip and updates metrics.json. A checkpoint saved
by another number of workers is resumed through DeepSpeed's universal checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..cluster import check_request, check_shared_storage, count_node_types, hourly_spend_rate, this_node_type
from ..config import ConfigError, ExperimentConfig, config_to_dict, with_absolute_storage
from ..checkpoints import STEP_FILE, latest_checkpoint, load_model
from ..models.precision import autocast
from ..data.build import build_dataset
from ..data.clips import ClipStream
from ..data.shards import MANIFEST, ShardDataset
from ..runs import RunName, RunRegistry
from ..storage import Storage, aws_settings, storage_from_config
from ..evaluate import (
    MIN_EVAL_FRAMES, evaluate, evaluate_extrapolation, flatten_eval, format_eval, format_extrapolation,
    headline, heldout_futures, heldout_sequences, window_tensors,
)
from ..evaluate.strips import model_strip, png_bytes
from .local import lr_at, random_crop, shards_storage, training_clips, training_loss
from .on_device import on_engine

CHECKPOINT_TAG = "checkpoint"
UNIVERSAL_TAG = "universal"  # a checkpoint converted for another number of workers
RAY_FOLDER = "ray"  # Ray Train's own files for a run live in runs/<name>/ray/


def autocast_dtype(cfg: ExperimentConfig, use_gpu: bool) -> torch.dtype | None:
    """The networks' compute dtype under autocast: bf16 for precision bf16 (or auto on GPU), else None (fp32)."""
    ds = cfg.deepspeed
    return torch.bfloat16 if ds.precision == "bf16" or (ds.precision == "auto" and use_gpu) else None


def deepspeed_config(cfg: ExperimentConfig, load_universal: bool = False) -> dict:
    """DeepSpeed's JSON config from the experiment config. Weights, gradients and optimizer state stay
    fp32 (DeepSpeed's bf16 mode is off): bf16 is autocast's, so checkpoints hold the fp32 master weights
    that teachers and exports load. `load_universal`: resume from a universal checkpoint."""
    train, ds = cfg.train, cfg.deepspeed
    config = {
        "train_micro_batch_size_per_gpu": train.batch_size,
        "gradient_accumulation_steps": train.grad_accum,
        "optimizer": {"type": "AdamW", "params": {"lr": train.lr, "weight_decay": train.weight_decay,
                                                  "torch_adam": ds.torch_adam}},
        "zero_optimization": {"stage": ds.zero_stage},
        "bf16": {"enabled": False},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if train.grad_clip:
        config["gradient_clipping"] = train.grad_clip
    if load_universal:
        config["checkpoint"] = {"load_universal": True}
    return config


def dataset_prefix(cfg: ExperimentConfig) -> str:
    """Storage prefix of the shards for this data config (synthetic data is rendered once per config)."""
    data = cfg.data.model_dump(mode="json")
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
    return f"datasets/{cfg.data.source}-{digest}"


def ensure_dataset(cfg: ExperimentConfig, storage: Storage, log=print) -> Storage:
    """The dataset to train on: data.shards if given, else shards built under the storage root."""
    if cfg.data.source == "shards":
        return shards_storage(cfg)
    target = storage.child(dataset_prefix(cfg))
    if not target.exists(MANIFEST):
        if target.list():  # an earlier build died half way: its shards are incomplete
            for key in target.list():
                target.delete(key)
        log(f"building {cfg.data.source} shards into {target.uri}")
        build_dataset(cfg.data, target, progress=False)
    return target


def _worker_metrics():
    """Prometheus metrics through ray.util.metrics (scraped from Ray's metrics export port)."""
    from ray.util.metrics import Gauge

    keys = ("run",)
    return {
        "loss": Gauge("oss_train_loss", "training loss", tag_keys=keys),
        "lr": Gauge("oss_train_learning_rate", "learning rate", tag_keys=keys),
        "samples_per_s": Gauge("oss_train_samples_per_second", "windows per second, all workers", tag_keys=keys),
        "step_time_s": Gauge("oss_train_step_seconds", "seconds per optimizer step", tag_keys=keys),
        "eval_psnr": Gauge("oss_eval_psnr_rgb", "held-out PSNR (RGB, border-cropped)", tag_keys=keys),
        "canvas_contribution": Gauge("oss_eval_canvas_contribution", "mean |output - output with canvas zeroed|",
                                     tag_keys=keys),
        "spend_usd": Gauge("oss_job_spend_usd", "accumulated spend of the run's node types since it started (USD)",
                           tag_keys=keys),
    }


def train_loop_per_worker(loop_config: dict) -> None:
    import deepspeed
    import ray.train
    from ray.train import Checkpoint

    cfg = ExperimentConfig.model_validate(loop_config["config"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    if cfg.train.use_gpu and not torch.cuda.is_available():
        raise RuntimeError(f"rank {rank}: train.use_gpu is set and Ray gave this worker a GPU, but torch sees no CUDA "
                           "device (a CPU-only torch build on a GPU node?)")
    torch.manual_seed(cfg.train.seed)
    from ..models import build_model

    model = build_model(cfg.model.name, **cfg.model.options)
    storage = storage_from_config(cfg.storage)
    teacher = None
    if cfg.distill.teacher_run:  # frozen teacher for the distillation term; every rank holds a copy
        teacher, _, _ = load_model(storage, cfg.distill.teacher_run)
        teacher.requires_grad_(False)
    checkpoint = ray.train.get_checkpoint()
    if cfg.distill.init_from_run and checkpoint is None:
        model = initial_student(storage, cfg)
    if cfg.distill.quantization_aware:
        from ..quantize import quantization_aware

        quantization_aware(model)
    scratch = tempfile.TemporaryDirectory()
    resume = _resume_folder(checkpoint, world, scratch.name) if checkpoint is not None else None
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
                                           config=deepspeed_config(cfg, load_universal=bool(resume and resume[2])))
    device = engine.device
    dtype = autocast_dtype(cfg, device.type == "cuda")
    # The node types this run's workers occupy (every rank's node, each node once): what its spend counts.
    placements: list = [None] * world
    torch.distributed.all_gather_object(placements, this_node_type())
    node_types = count_node_types(placements)

    step, samples = 0, 0
    resumed = None
    if resume is not None:
        folder, tag, universal = resume
        _, client = engine.load_checkpoint(folder, tag=tag)
        step_file = Path(folder, CHECKPOINT_TAG, STEP_FILE)
        saved = json.loads(step_file.read_text()) if step_file.exists() else client
        step, samples = saved["step"], saved["samples"]
        resumed = {"resumed_from_step": step, "universal_checkpoint": universal,
                   "weights_sha256": weights_digest(engine.module) if cfg.deepspeed.zero_stage < 3 else None}
        if rank == 0:
            how = " through a universal checkpoint (saved by another number of workers)" if universal else ""
            print(f"resumed from step {step} ({samples} windows seen){how}", flush=True)
    scratch.cleanup()

    if teacher is not None:
        teacher.to(device=device)
    data = ShardDataset(storage.child(loop_config["dataset_prefix"]) if loop_config["dataset_prefix"] else
                        shards_storage(cfg))
    clips = training_clips(cfg, data)  # every window with its warm-up frames
    n = len(clips)
    mine = list(range(rank * n // world, (rank + 1) * n // world)) or [rank % n]
    stream = ClipStream(clips, mine, seed=cfg.train.seed, rank=rank)
    run = RunRegistry(storage).open(loop_config["run_name"]) if rank == 0 else None
    if run is not None:
        run.log_worker_group(node_types, world_size=world, **(resumed or {}))
    metrics = _worker_metrics() if rank == 0 else None
    spend_rate, _ = hourly_spend_rate(node_types) if rank == 0 else (0.0, [])
    tags = {"run": loop_config["run_name"]}
    heldout = heldout_sequences(cfg, frames=loop_config["eval_frames"]) if rank == 0 else []
    if rank == 0 and hasattr(model, "extrapolate"):  # canvas models: OSS-FX against the true mid frames
        heldout = (heldout, heldout_futures(cfg, loop_config["eval_frames"]))
    micro = cfg.train.batch_size
    started, first_step = time.perf_counter(), step
    warm = None  # (time, step) after the first step: rates exclude its one-off warm-up
    engine.train()
    while step < cfg.train.steps:
        step_start = time.perf_counter()
        for micro_step in range(cfg.train.grad_accum):
            # The batch depends only on (seed, rank, step, micro-step): a resumed run sees the same data.
            rng = np.random.default_rng([cfg.train.seed, rank, step, micro_step])
            first = (step * cfg.train.grad_accum + micro_step) * micro
            items = [random_crop(window_tensors(stream.clip(first + j)), cfg.train.crop, rng) for j in range(micro)]
            batch = {k: torch.stack([item[k] for item in items]).to(device=device) for k in items[0]}
            for group in engine.optimizer.param_groups:
                group["lr"] = lr_at(step, cfg.train)
            with autocast(device, dtype):
                loss, _ = training_loss(engine.module, batch, cfg.train, teacher, cfg.distill.weight, clips.warmup)
            engine.backward(loss)
            engine.step()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"rank {rank}: loss became {loss.item()} at step {step}")
        step += 1
        samples += micro * cfg.train.grad_accum * world
        report = {"step": step, "samples": samples, "loss": float(loss.item()), "lr": lr_at(step - 1, cfg.train)}
        now = time.perf_counter()
        elapsed = now - started
        if warm is None:
            warm = (now, step)
        since, steps_since = (now - warm[0], step - warm[1]) if step > warm[1] else (elapsed, step - first_step)
        rate = steps_since * micro * cfg.train.grad_accum * world / since
        report.update(samples_per_s=rate, step_time_s=time.perf_counter() - step_start)
        if rank == 0 and (step % cfg.train.log_every == 0 or step == cfg.train.steps):
            eta = (cfg.train.steps - step) * since / steps_since
            print(f"step {step}/{cfg.train.steps} loss {report['loss']:.5f} lr {report['lr']:.2e} "
                  f"{rate:.2f} samples/s ETA {eta:.0f}s", flush=True)
            run.log_step(step, **{k: v for k, v in report.items() if k != "step"})
            for key in ("loss", "lr", "samples_per_s", "step_time_s"):
                metrics[key].set(report[key], tags=tags)
            metrics["spend_usd"].set(spend_rate * _hours_since(run.record.get("started_at")), tags=tags)
        if step % cfg.train.eval_every == 0 or step == cfg.train.steps:
            evaluated = evaluation_model(engine, cfg, rank)  # every rank takes part under ZeRO-3
            if rank == 0:
                report.update(_evaluate_and_draw(on_engine(evaluated, device, dtype), heldout, run, step, metrics, tags))
        if step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps:
            with tempfile.TemporaryDirectory() as folder:
                engine.save_checkpoint(folder, tag=CHECKPOINT_TAG, client_state={"step": step, "samples": samples})
                if rank == 0:  # the step, readable without loading the weights (evaluate --step)
                    with open(os.path.join(folder, CHECKPOINT_TAG, STEP_FILE), "w") as handle:
                        json.dump({"step": step, "samples": samples, "world_size": world}, handle)
                ray.train.report(report, checkpoint=Checkpoint.from_directory(folder))
        else:
            ray.train.report(report)
    stream.close()
    if run is not None:
        run.tensorboard.close()  # the last steps' scalars reach storage


def weights_digest(weights: torch.nn.Module | dict) -> str:
    """sha256 of a module's state (or a state dict): names, shapes and fp32 bytes, in name order. Equal
    digests, equal tensors."""
    state = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        value = tensor.detach().cpu()
        value = value.float() if value.is_floating_point() else value
        digest.update(name.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _saved_world_size(folder: str) -> int:
    """How many ranks saved a DeepSpeed checkpoint folder (one ZeRO optimizer shard each)."""
    return len([f for f in os.listdir(folder) if f.startswith("zero_pp_rank_") and f.endswith("_optim_states.pt")])


def _resume_folder(checkpoint, world: int, scratch: str) -> tuple[str, str, bool]:
    """(folder, tag, universal) to resume from. A checkpoint saved by another number of workers (e.g.
    the plan's 8 -> 16 GPUs, or 2 -> 1 after losing a node) is converted to DeepSpeed's universal
    checkpoint, which any world size loads."""
    folder = checkpoint.to_directory(os.path.join(scratch, "saved"))
    saved = _saved_world_size(os.path.join(folder, CHECKPOINT_TAG))
    if saved in (0, world):
        return folder, CHECKPOINT_TAG, False
    import argparse

    from deepspeed.checkpoint.ds_to_universal import main as to_universal

    to_universal(argparse.Namespace(
        input_folder=os.path.join(folder, CHECKPOINT_TAG), output_folder=os.path.join(folder, UNIVERSAL_TAG),
        num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False, strict=True,
        # Our checkpoints come from a plain module (no tensor/pipeline parallel): DeepSpeed fills in
        # the parallelism description the converter expects.
        inject_missing_state=True))
    return folder, UNIVERSAL_TAG, True


def evaluation_model(engine, cfg: ExperimentConfig, rank: int):
    """The model to evaluate, on rank 0 (None elsewhere). ZeRO stages 1-2 keep whole weights on every
    rank; under ZeRO-3 each rank holds a slice, so every rank joins the gather (a collective; a
    rank-0-only forward would wait forever for the others) and rank 0 evaluates a whole copy."""
    if cfg.deepspeed.zero_stage < 3:
        return engine.module if rank == 0 else None
    state = engine._zero3_consolidated_16bit_state_dict()  # fp32 here: DeepSpeed's bf16 mode is off
    if rank != 0:
        return None
    from ..models import build_model

    whole = build_model(cfg.model.name, **cfg.model.options)
    whole.load_state_dict(state)
    return whole.to(engine.device)


def initial_student(storage: Storage, cfg: ExperimentConfig):
    """The smaller student of `distill.init_from_run`, grown to this config's student by Net2Net."""
    from ..models import build_model
    from ..models.net2net import expand

    source, source_cfg, _ = load_model(storage, cfg.distill.init_from_run)
    target = build_model(cfg.model.name, **cfg.model.options)
    try:
        return expand(source, target.config).train()
    except (ValueError, TypeError) as err:
        raise ValueError(f"distill.init_from_run={cfg.distill.init_from_run} ({source_cfg.model.name}) cannot be "
                         f"expanded to {cfg.model.name} by Net2Net: {err}") from None


def worker_resources(cfg: ExperimentConfig) -> dict:
    """One worker's resource request: a CPU, a GPU where train.use_gpu, and the config's custom resources."""
    return {"CPU": 1, **({"GPU": 1} if cfg.train.use_gpu else {}), **cfg.train.worker_resources}


def check_cluster(cfg: ExperimentConfig) -> None:
    """Refuse, before any work, what this cluster cannot do for the config: workers whose resources no
    node type provides, and storage that not every node shares."""
    check_shared_storage(cfg.storage.root, cfg.storage.shared)
    check_request(worker_resources(cfg), f"train.num_workers={cfg.train.num_workers} workers",
                  "train.use_gpu / train.worker_resources (on a local machine: --set train.worker_resources={} "
                  "--set train.use_gpu=false)", timeout_s=cfg.train.resource_timeout_s)


def _hours_since(iso_time: str | None) -> float:
    from datetime import datetime, timezone

    if not iso_time:
        return 0.0
    return max(0.0, (datetime.now(timezone.utc) - datetime.fromisoformat(iso_time)).total_seconds() / 3600)


def _evaluate_and_draw(model, heldout, run, step: int, metrics, tags) -> dict:
    model.eval()
    heldout, futures = heldout if isinstance(heldout, tuple) else (heldout, None)
    result = evaluate(model, heldout)
    print(f"eval step {step}:\n{format_eval(result)}", flush=True)
    if futures is not None:
        result["extrapolation"] = evaluate_extrapolation(model, heldout, futures)
        print(f"eval step {step} {format_extrapolation(result['extrapolation'])}", flush=True)
    strip_key = run.log_strip(step, png_bytes(model_strip(model, window_tensors(heldout[0]))))
    run.log_eval(step, **flatten_eval(result), strip=strip_key)
    metrics["eval_psnr"].set(result["model"]["psnr_rgb"], tags=tags)
    if "canvas_contribution" in result["model"]:
        metrics["canvas_contribution"].set(result["model"]["canvas_contribution"], tags=tags)
    model.train()
    report = {f"eval/{k}": v for k, v in flatten_eval(result).items() if isinstance(v, (int, float))}
    # Short names for the held-out model metrics: what Tune sweeps select on (tune.metric).
    report.update(val_psnr=result["model"]["psnr_rgb"], val_ssim=result["model"]["ssim_y"],
                  val_flip=result["model"]["flip"],
                  # Comparable across SR ratios (raw PSNR always favours the smaller ratio).
                  val_psnr_over_bicubic=result["model"]["psnr_rgb"] - result["bicubic"]["psnr_rgb"])
    if "extrapolation" in result:  # canvas models: OSS-FX at alpha 0.5 over the depth-aware forward warp
        fx = headline(result["extrapolation"])
        report["val_fx_over_depth_warp"] = fx["oss_fx"]["psnr_rgb"] - fx["depth_warp"]["psnr_rgb"]
        report["val_sr_fx"] = report["val_psnr_over_bicubic"] + report["val_fx_over_depth_warp"]
    return report


def train_distributed(cfg: ExperimentConfig, run_name: str | None = None, eval_frames: int | None = None, log=print,
                      callbacks=()):
    """Run (or resume) a Ray Train + DeepSpeed training run; returns (run name, ray.train.Result).

    `run_name`: an existing run to resume, or a new name to create (None: allocate the next free one).
    `callbacks`: Ray Train user callbacks (a Tune sweep passes its report forwarder).
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=True)
    check_cluster(cfg)
    cfg = with_absolute_storage(cfg)
    storage = storage_from_config(cfg.storage)
    # Distillation inputs must exist before any worker starts (CheckpointError names what is missing).
    sources = {label: latest_checkpoint(storage, name) for label, name in
               (("teacher_checkpoint", cfg.distill.teacher_run), ("init_checkpoint", cfg.distill.init_from_run)) if name}
    if cfg.distill.init_from_run:
        initial_student(storage, cfg)  # ValueError now, naming both models, if Net2Net cannot grow it
    if (eval_frames or cfg.train.eval_frames) < MIN_EVAL_FRAMES:
        raise ConfigError(f"eval_frames {eval_frames}: held-out sequences need at least {MIN_EVAL_FRAMES} frames")
    dataset = ensure_dataset(cfg, storage, log)
    training_clips(cfg, ShardDataset(dataset))  # DataError now, not in every worker, if no window has its warm-up
    registry = RunRegistry(storage)
    # Node types are recorded by the workers, from the nodes they run on (none are known before they start).
    if run_name and str(RunName.parse(run_name)) in {str(n) for n in registry.names()}:
        run = registry.open(run_name)
        if run.record.get("status") != "created":  # a sweep trial allocates its name before training
            log(f"resuming run {run.name}")
    elif run_name:
        run = registry.create(run_name, config=config_to_dict(cfg))
    else:
        run = registry.allocate(cfg.family, cfg.version, cfg.tier, config=config_to_dict(cfg))
    run.mark_started()
    for label, key in sources.items():
        run.add_artefact(label, key)
    log(f"run {run.name} -> {storage.url(run.prefix)}")
    prefix = dataset_prefix(cfg) if cfg.data.source != "shards" else ""
    use_gpu = cfg.train.use_gpu  # what the config asks for; the autoscaler launches GPU nodes for it
    # Where to look for credentials and endpoints (never the secrets: the standard chain finds them on
    # each node), and a node type to price a node outside cluster.yaml as (tests, benchmarks).
    worker_env = {**aws_settings(), **({"OSS_NODE_TYPE": os.environ["OSS_NODE_TYPE"]}
                                       if os.environ.get("OSS_NODE_TYPE") else {})}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config_to_dict(cfg), "run_name": str(run.name), "dataset_prefix": prefix,
                           "eval_frames": eval_frames or cfg.train.eval_frames},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=use_gpu,
                                     resources_per_worker=worker_resources(cfg)),
        run_config=RunConfig(
            name=RAY_FOLDER, storage_path=storage.arrow_path(run.prefix), storage_filesystem=storage.arrow_filesystem(),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=list(callbacks),
            worker_runtime_env={"env_vars": worker_env},
        ),
    )
    try:
        result = trainer.fit()
    except Exception:
        current = registry.open(run.name)
        # A sweep may already have recorded how this trial ended (Tune stops trials from outside and
        # the interrupted driver lands here afterwards): only a run still marked running has failed.
        if current.record.get("status") == "running":
            current.finish("failed")
        raise
    run = registry.open(run.name)  # rank 0 has been writing the record: continue from the stored one
    if result.checkpoint is not None:
        run.add_artefact("checkpoint", result.checkpoint.path)
    run.finish()
    return str(run.name), result
