"""Single-process trainer: any registered model, on shards or on synthetic windows.

The pieces the distributed jobs reuse: `training_loss` (warm-up without gradient, then one window
forward + loss), `lr_at` (warm-up + cosine schedule), `random_crop` (ratio-aligned crops) and
`training_clips` (every window preceded by its warm-up frames). `train_local` wires them into a loop
with AdamW, progress lines, evaluation (oss_cluster.evaluate) and the run's metrics.json.

    python -m oss_cluster.train.local --config configs/smoke.yaml --set model.name=student_pico
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from fractions import Fraction
from typing import Callable

import numpy as np
import torch

from ..config import ConfigError, ExperimentConfig, TrainConfig, config_to_dict, load_config, warmup_frames
from ..data.clips import Clips, WindowList
from ..data.schema import FIELDS, DataError
from ..data.shards import ShardDataset
from ..data.synth import synth_windows
from ..evaluate import (
    MIN_EVAL_FRAMES, evaluate, evaluate_extrapolation, flatten_eval, format_eval, format_extrapolation,
    heldout_futures, heldout_sequences, window_tensors,
)
from ..evaluate.strips import model_strip, png_bytes
from ..losses import charbonnier, window_loss
from ..models import build_model
from ..models.temporal import run_window
from ..runs import Run, RunRegistry
from ..storage import open_storage, storage_from_config

LR_KEYS = tuple(name for name, (_, _, resolution) in FIELDS.items() if resolution == "lr")
GT_KEYS = tuple(name for name, (_, _, resolution) in FIELDS.items() if resolution == "gt")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at `step` (0-based): linear warm-up, then constant or cosine decay to 10 %."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _axis_crop(out_len: int, in_len: int, crop_out: int, rng: np.random.Generator) -> tuple[slice, slice]:
    """Render and output slices of one axis, aligned so the crop keeps the exact output/render ratio."""
    ratio = Fraction(out_len, in_len)
    step_in, step_out = ratio.denominator, ratio.numerator
    n_steps = max(1, round(crop_out / step_out))
    if n_steps * step_in >= in_len:
        return slice(0, in_len), slice(0, out_len)
    start = int(rng.integers(0, (in_len - n_steps * step_in) // step_in + 1))
    return (slice(start * step_in, (start + n_steps) * step_in), slice(start * step_out, (start + n_steps) * step_out))


def random_crop(sample: dict, crop_out: int, rng: np.random.Generator) -> dict:
    """Crop a window sample ({key: [K, C, h|H, w|W]}) to about crop_out x crop_out output pixels."""
    (h, w), (H, W) = sample["lr"].shape[-2:], sample["gt"].shape[-2:]
    rows_in, rows_out = _axis_crop(H, h, crop_out, rng)
    cols_in, cols_out = _axis_crop(W, w, crop_out, rng)
    cropped = dict(sample)
    for key in LR_KEYS:
        cropped[key] = sample[key][..., rows_in, cols_in]
    for key in GT_KEYS:
        cropped[key] = sample[key][..., rows_out, cols_out]
    return cropped


class CroppedClips(torch.utils.data.Dataset):
    """Random aligned crops of training clips (warm-up + window frames, the same crop on every frame)."""

    def __init__(self, clips: Clips, crop_out: int, seed: int = 0):
        self.clips, self.crop_out = clips, crop_out
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict:
        return random_crop(window_tensors(self.clips.clip(index)), self.crop_out, self.rng)


def shards_storage(cfg: ExperimentConfig):
    """The Storage holding the built dataset named by data.shards (with the run's S3 settings)."""
    return open_storage(cfg.data.shards, endpoint_url=cfg.storage.endpoint_url, region=cfg.storage.region)


def training_clips(cfg: ExperimentConfig, source=None) -> Clips:
    """Every training window with its warm-up frames: from `source` (a ShardDataset or WindowList), else
    from data.shards or synthetic windows rendered in memory. Refuses a dataset with no such clip."""
    data = cfg.data
    if source is None:
        if data.source == "shards":
            source = ShardDataset(shards_storage(cfg))
        elif data.source == "synth":
            source = WindowList(synth_windows(data.frames, data.ratio, tuple(data.out_size), data.window,
                                              data.frames_per_sequence, data.seed, data.objects, data.gt_samples,
                                              motion_scale=data.motion_scale, motion=data.motion))
        else:
            raise DataError(f"the local trainer reads data.source 'shards' or 'synth', not {data.source!r} "
                            "(build shards first)")
    window = source.keys()[0][2] if len(source) else data.window
    ratio = source.manifest["ratio"] if isinstance(source, ShardDataset) else data.ratio
    warmup = warmup_frames(cfg.train, ratio, window)
    clips = Clips(source, warmup)
    if len(clips) == 0:
        raise DataError(f"no training window has {warmup} warm-up frames before it in its sequence "
                        f"({len(source)} windows of {window} frames): lower train.warmup_frames or use longer sequences")
    return clips


def _split(batch: dict, first: int) -> tuple[dict, dict]:
    return {k: v[:, :first] for k, v in batch.items()}, {k: v[:, first:] for k, v in batch.items()}


def training_loss(model: torch.nn.Module, batch: dict, cfg: TrainConfig, teacher: torch.nn.Module | None = None,
                  distill_weight: float = 0.0, warmup: int = 0):
    """Forward a clip batch ({key: [B, warmup + K, ...]}) recurrently; return (loss, outputs [B, K, 3, H, W]).

    The first `warmup` frames run without gradient and only build the history (truncated
    back-propagation through time); the loss covers the last K frames. With a (frozen) teacher, the
    distillation term distill_weight x Charbonnier(outputs, teacher's outputs, same frames and warm-up) is added.
    """
    state = teacher_state = None
    if warmup:
        warm, batch = _split(batch, warmup)
        with torch.no_grad():
            _, state = run_window(model, warm)
            if teacher is not None and distill_weight > 0:
                _, teacher_state = run_window(teacher, warm)
    outputs, _ = run_window(model, batch, state=state)
    loss = window_loss(outputs, batch, cfg.charbonnier_eps, cfg.temporal_weight, cfg.lowpass_weight, cfg.lowpass_sigma)
    if teacher is not None and distill_weight > 0:
        with torch.no_grad():
            targets, _ = run_window(teacher, batch, state=teacher_state)
        loss = loss + distill_weight * charbonnier(outputs, targets, cfg.charbonnier_eps)
    if hasattr(model, "auxiliary_loss"):  # e.g. the canvas model's canvas-colour term
        loss = loss + model.auxiliary_loss(batch, cfg.charbonnier_eps)
    return loss, outputs


def train_local(cfg: ExperimentConfig, run: Run | None = None, time_budget_s: float | None = None,
                eval_frames: int | None = None, final_eval: bool = True,
                log: Callable[[str], None] = print) -> tuple[torch.nn.Module, dict]:
    """Train cfg.model on cfg.data for cfg.train.steps (or until the time budget), evaluating as configured.

    Returns (model, summary) where summary has steps, samples, seconds and the last evaluation.
    """
    train = cfg.train
    eval_frames = eval_frames or train.eval_frames
    if eval_frames < MIN_EVAL_FRAMES:
        raise ConfigError(f"eval_frames {eval_frames}: held-out sequences need at least {MIN_EVAL_FRAMES} frames")
    torch.manual_seed(train.seed)
    model = build_model(cfg.model.name, **cfg.model.options)
    if cfg.distill.quantization_aware:
        from ..quantize import quantization_aware

        quantization_aware(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    clips = training_clips(cfg)
    dataset = CroppedClips(clips, train.crop, seed=train.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=train.batch_size, shuffle=True, drop_last=False)
    evaluating = final_eval or train.eval_every <= train.steps
    heldout = heldout_sequences(cfg, frames=eval_frames) if evaluating else []
    extrapolates = hasattr(model, "extrapolate")
    futures = heldout_futures(cfg, eval_frames) if evaluating and extrapolates else []
    if run is not None:
        run.mark_started()
    started, step, samples, last_eval = time.perf_counter(), 0, 0, {}

    def run_eval():
        result = evaluate(model, heldout)
        log(f"eval step {step}:\n{format_eval(result)}")
        if extrapolates:
            result["extrapolation"] = evaluate_extrapolation(model, heldout, futures)
            log(f"eval step {step} {format_extrapolation(result['extrapolation'])}")
        if run is not None:
            strip_key = run.log_strip(step, png_bytes(model_strip(model, window_tensors(heldout[0]))))
            run.log_eval(step, **flatten_eval(result), strip=strip_key)
        return result

    model.train()
    while step < train.steps:
        for batch in loader:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, train)
            loss, _ = training_loss(model, batch, train, warmup=clips.warmup)
            (loss / train.grad_accum).backward()
            if (step + 1) % train.grad_accum == 0:
                if train.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {step}")
            step += 1
            samples += batch["lr"].shape[0]
            elapsed = time.perf_counter() - started
            if step % train.log_every == 0 or step == train.steps:
                rate = samples / elapsed
                total = train.steps if time_budget_s is None else min(train.steps, step * time_budget_s / elapsed)
                eta = (total - step) * elapsed / step
                log(f"step {step}/{train.steps} loss {loss.item():.5f} lr {lr_at(step - 1, train):.2e} "
                    f"{rate:.2f} samples/s ETA {eta:.0f}s")
                if run is not None:
                    run.log_step(step, loss=loss.item(), lr=lr_at(step - 1, train), samples_per_s=rate)
            if step % train.eval_every == 0:
                last_eval = run_eval()
            out_of_time = time_budget_s is not None and elapsed >= time_budget_s
            if step >= train.steps or out_of_time:
                break
        if time_budget_s is not None and time.perf_counter() - started >= time_budget_s:
            break
    if final_eval and (step % train.eval_every != 0 or not last_eval):
        last_eval = run_eval()
    seconds = time.perf_counter() - started
    if run is not None:
        run.finish()
    return model, {"steps": step, "samples": samples, "seconds": seconds, "eval": last_eval}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oss_cluster.train.local")
    parser.add_argument("--config", help="experiment YAML (default: embedded defaults)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--minutes", type=float, help="stop after this much training time")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
        registry = RunRegistry(storage_from_config(cfg.storage))
        run = registry.allocate(cfg.family, cfg.version, cfg.tier, config=config_to_dict(cfg), node_types={"local": 1})
        print(f"run {run.name} -> {run.storage.url(run.prefix)}")
        train_local(cfg, run=run, time_budget_s=args.minutes * 60 if args.minutes else None)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
