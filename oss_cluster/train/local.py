"""Single-process trainer: any registered model, on shards or on synthetic windows.

The pieces the distributed jobs reuse: `training_loss` (one window forward + loss), `lr_at`
(warm-up + cosine schedule), `random_crop` (ratio-aligned crops) and `evaluate` (held-out sequences
against bicubic and TAAU). `train_local` wires them into a loop with AdamW, progress lines and the
run's metrics.json.

    python -m oss_cluster.train.local --config configs/smoke.yaml --set model.name=student_pico
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from fractions import Fraction
from typing import Callable, Sequence

import numpy as np
import torch

from ..baselines import TAAU, bicubic, forward_warp
from ..config import ConfigError, ExperimentConfig, TrainConfig, config_to_dict, load_config
from ..data.schema import DataError, Window
from ..data.shards import ShardDataset
from ..data.synth import SynthScene, synth_windows
from ..losses import charbonnier, window_loss
from ..metrics import PSNR_SPACES, LPIPSGauge, flip, psnr, quality_report
from ..models import build_model
from ..models.temporal import FRAME_KEYS, run_window
from ..runs import Run, RunRegistry
from ..storage import open_storage, storage_from_config

LR_KEYS = ("lr", "motion", "depth", "disocclusion")
HELDOUT_SEED_OFFSET = 50_000  # held-out scenes use seeds no training build reaches
EVAL_BORDER = 4


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
    cropped["gt"] = sample["gt"][..., rows_out, cols_out]
    return cropped


def window_tensors(window: Window) -> dict:
    return {name: torch.from_numpy(value.astype(np.float32)) for name, value in window.arrays().items()}


class CroppedWindows(torch.utils.data.Dataset):
    """Random aligned crops of windows from a list or a ShardDataset."""

    def __init__(self, source, crop_out: int, seed: int = 0):
        self.source, self.crop_out = source, crop_out
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        item = self.source[index]
        sample = window_tensors(item) if isinstance(item, Window) else {k: item[k] for k in ("lr", "gt", *LR_KEYS[1:], "jitter")}
        return random_crop(sample, self.crop_out, self.rng)


def shards_storage(cfg: ExperimentConfig):
    """The Storage holding the built dataset named by data.shards (with the run's S3 settings)."""
    return open_storage(cfg.data.shards, endpoint_url=cfg.storage.endpoint_url, region=cfg.storage.region)


def training_windows(cfg: ExperimentConfig):
    """The training set: shards (data.source == shards) or synthetic windows rendered in memory."""
    data = cfg.data
    if data.source == "shards":
        return ShardDataset(shards_storage(cfg))
    if data.source == "synth":
        return list(synth_windows(data.frames, data.ratio, tuple(data.out_size), data.window, data.frames_per_sequence,
                                  data.seed, data.objects, data.gt_samples, motion_scale=data.motion_scale))
    raise DataError(f"the local trainer reads data.source 'shards' or 'synth', not {data.source!r} (build shards first)")


def heldout_sequences(cfg: ExperimentConfig, frames: int = 8, count: int | None = None) -> list[Window]:
    """Whole synthetic sequences from seeds no training build uses, one Window each."""
    data = cfg.data
    count = data.val_sequences if count is None else count
    sequences = []
    for index in range(count):
        windows = list(synth_windows(frames, data.ratio, tuple(data.out_size), frames, frames, data.seed, data.objects,
                                     data.gt_samples, first_sequence=HELDOUT_SEED_OFFSET + index,
                                     motion_scale=data.motion_scale))
        sequences.extend(windows)
    return sequences


def heldout_midframes(cfg: ExperimentConfig, frames: int, alpha: float, count: int | None = None) -> list[torch.Tensor]:
    """Ground truth at t + alpha for every frame t of `heldout_sequences` (same scenes): [K, 3, H, W] each."""
    data = cfg.data
    count = data.val_sequences if count is None else count
    mids = []
    for index in range(count):
        scene = SynthScene(tuple(data.out_size), data.ratio, data.seed * 100003 + HELDOUT_SEED_OFFSET + index,
                           objects=data.objects, gt_samples=data.gt_samples, motion_scale=data.motion_scale)
        mids.append(torch.stack([torch.from_numpy(scene.render_gt(k + alpha).astype(np.float32)) for k in range(frames)]))
    return mids


@torch.no_grad()
def evaluate_extrapolation(model, sequences: Sequence[Window], mids: Sequence[torch.Tensor], alpha: float = 0.5,
                           border: int = EVAL_BORDER) -> dict:
    """OSS-FX at t + alpha against the true intermediate frames, beside "repeat the last output" and
    "forward-warp the last output by alpha x motion"; plus the extrapolated-vs-SR difference over the
    inter-frame motion (mean |fx - SR_t| / mean |SR_t - SR_{t-1}|), which is ~0 when the composite
    head ignores the canvas."""
    scores: dict[str, list[float]] = {}
    moved, changed = [], []
    model.eval()
    for window, mid in zip(sequences, mids):
        batch = {k: v[None] for k, v in window_tensors(window).items()}
        out_size, state, previous = tuple(batch["gt"].shape[-2:]), None, None
        for k in range(window.length):
            frame = {key: batch[key][:, k] for key in FRAME_KEYS}
            output, state = model.step(frame, state, out_size)
            if previous is not None:  # from the second frame on, the canvas has a velocity
                truth = mid[k][None]
                candidates = {"oss_fx": model.extrapolate(state, alpha), "repeat_last": output,
                              "forward_warp": forward_warp(output, frame["motion"], alpha)}
                for name, image in candidates.items():
                    scores.setdefault(f"{name}/psnr_rgb", []).append(psnr(image, truth, border))
                    scores.setdefault(f"{name}/flip", []).append(flip(image, truth, border))
                moved.append(float((candidates["oss_fx"] - output).abs().mean()))
                changed.append(float((output - previous).abs().mean()))
            previous = output
    result = {key: float(np.mean(values)) for key, values in scores.items()}
    result["fx_vs_sr_over_motion"] = float(np.mean(moved) / max(np.mean(changed), 1e-12))
    result["alpha"] = alpha
    return result


def training_loss(model: torch.nn.Module, batch: dict, cfg: TrainConfig, teacher: torch.nn.Module | None = None,
                  distill_weight: float = 0.0):
    """Forward a window batch ({key: [B, K, ...]}) recurrently and return (loss, outputs [B, K, 3, H, W]).

    With a (frozen) teacher, the distillation term distill_weight x Charbonnier(outputs, teacher's
    outputs on the same window) is added.
    """
    outputs, _ = run_window(model, batch)
    loss = window_loss(outputs, batch, cfg.charbonnier_eps, cfg.temporal_weight)
    if teacher is not None and distill_weight > 0:
        with torch.no_grad():
            targets, _ = run_window(teacher, batch)
        loss = loss + distill_weight * charbonnier(outputs, targets, cfg.charbonnier_eps)
    if hasattr(model, "auxiliary_loss"):  # e.g. the canvas model's canvas-colour term
        loss = loss + model.auxiliary_loss(batch, cfg.charbonnier_eps)
    return loss, outputs


def _mean_reports(reports: list[dict]) -> dict:
    summary = {}
    for key in ("psnr_rgb", "psnr_y", "ssim_y", "flip"):
        summary[key] = float(np.mean([r[key] for r in reports]))
    lpips = [r["lpips"] for r in reports]
    summary["lpips"] = float(np.mean(lpips)) if all(isinstance(v, float) for v in lpips) else lpips[0]
    return summary


@torch.no_grad()
def evaluate(model: torch.nn.Module | None, sequences: Sequence[Window], border: int = EVAL_BORDER,
             baselines: bool = True, lpips_gauge: LPIPSGauge | None = None) -> dict:
    """Quality of the model (and of bicubic and TAAU) on whole held-out sequences, every frame.

    Returns {"model": {...}, "bicubic": {...}, "taau": {...}, "psnr_spaces": ..., "border_crop": ...}
    with per-method means of psnr_rgb, psnr_y, ssim_y, flip and lpips (or its "unavailable" reason).
    """
    gauge = lpips_gauge or LPIPSGauge()
    per_method: dict[str, list[dict]] = {}
    contributions: list[float] = []
    was_training = model.training if model is not None else False
    if model is not None:
        model.eval()
    for window in sequences:
        batch = {k: v[None] for k, v in window_tensors(window).items()}
        out_size = tuple(batch["gt"].shape[-2:])
        outputs = {}
        if model is not None:
            outputs["model"] = run_window(model, batch)[0]
            if hasattr(model, "contribution"):  # canvas models: how much the canvas changes the output
                contributions.append(model.contribution())
        if baselines:
            outputs["bicubic"] = torch.stack([bicubic(batch["lr"][:, k], out_size, batch["jitter"][:, k])
                                              for k in range(window.length)], dim=1)
            outputs["taau"] = TAAU().run(batch, out_size)[0]
        for method, frames in outputs.items():
            for k in range(window.length):
                per_method.setdefault(method, []).append(quality_report(frames[:, k], batch["gt"][:, k], border, gauge))
    if model is not None and was_training:
        model.train()
    result = {method: _mean_reports(reports) for method, reports in per_method.items()}
    if contributions:
        result["model"]["canvas_contribution"] = float(np.mean(contributions))
    result.update(psnr_spaces=PSNR_SPACES, border_crop=border)
    return result


def flatten_eval(result: dict) -> dict:
    """{"model": {"psnr_rgb": x}} -> {"model/psnr_rgb": x} for metrics.json and Ray reports."""
    flat = {}
    for method, values in result.items():
        if isinstance(values, dict):
            flat.update({f"{method}/{key}": value for key, value in values.items()})
        else:
            flat[method] = values
    return flat


def format_extrapolation(fx: dict) -> str:
    return (f"alpha {fx['alpha']:g}: PSNR RGB oss_fx {fx['oss_fx/psnr_rgb']:.3f}, repeat_last {fx['repeat_last/psnr_rgb']:.3f}, "
            f"forward_warp {fx['forward_warp/psnr_rgb']:.3f}; FLIP oss_fx {fx['oss_fx/flip']:.4f}, "
            f"repeat_last {fx['repeat_last/flip']:.4f}, forward_warp {fx['forward_warp/flip']:.4f}; "
            f"fx-vs-SR / motion {fx['fx_vs_sr_over_motion']:.4f}")


def format_eval(result: dict) -> str:
    methods = [m for m, v in result.items() if isinstance(v, dict) and "psnr_rgb" in v]
    lines = [f"{'method':10s} {'PSNR RGB':>9s} {'PSNR Y':>8s} {'SSIM Y':>7s} {'FLIP':>7s} {'LPIPS':>7s}"]
    missing = ""
    for method in methods:
        r = result[method]
        lpips = f"{r['lpips']:7.4f}" if isinstance(r["lpips"], float) else f"{'n/a':>7s}"
        missing = missing or ("" if isinstance(r["lpips"], float) else r["lpips"])
        lines.append(f"{method:10s} {r['psnr_rgb']:9.3f} {r['psnr_y']:8.3f} {r['ssim_y']:7.4f} {r['flip']:7.4f} {lpips}")
    lines.append(f"({result['psnr_spaces']}; border crop {result['border_crop']} px; FLIP lower is better)")
    if missing:
        lines.append(f"LPIPS {missing}")
    if "canvas_contribution" in result.get("model", {}):
        lines.append(f"canvas contribution (mean |output - output with canvas zeroed|): {result['model']['canvas_contribution']:.5f}")
    return "\n".join(lines)


def train_local(cfg: ExperimentConfig, run: Run | None = None, time_budget_s: float | None = None,
                eval_frames: int | None = None, final_eval: bool = True,
                log: Callable[[str], None] = print) -> tuple[torch.nn.Module, dict]:
    """Train cfg.model on cfg.data for cfg.train.steps (or until the time budget), evaluating as configured.

    Returns (model, summary) where summary has steps, samples, seconds and the last evaluation.
    """
    train = cfg.train
    eval_frames = eval_frames or train.eval_frames
    torch.manual_seed(train.seed)
    model = build_model(cfg.model.name, **cfg.model.options)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    dataset = CroppedWindows(training_windows(cfg), train.crop, seed=train.seed)
    if len(dataset) == 0:
        raise DataError("no training windows (data.frames too small for data.window?)")
    loader = torch.utils.data.DataLoader(dataset, batch_size=train.batch_size, shuffle=True, drop_last=False)
    evaluating = final_eval or train.eval_every <= train.steps
    heldout = heldout_sequences(cfg, frames=eval_frames) if evaluating else []
    extrapolates = hasattr(model, "extrapolate")
    mids = heldout_midframes(cfg, eval_frames, 0.5) if evaluating and extrapolates else []
    if run is not None:
        run.mark_started()
    started, step, samples, last_eval = time.perf_counter(), 0, 0, {}

    def run_eval():
        result = evaluate(model, heldout)
        log(f"eval step {step}:\n{format_eval(result)}")
        if extrapolates:
            result["extrapolation"] = evaluate_extrapolation(model, heldout, mids)
            log(f"eval step {step} OSS-FX: {format_extrapolation(result['extrapolation'])}")
            model.train()
        if run is not None:
            run.log_eval(step, **flatten_eval(result))
        return result

    model.train()
    while step < train.steps:
        for batch in loader:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, train)
            loss, _ = training_loss(model, batch, train)
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
