"""Quality after a fixed CPU training budget: Pico teacher and Pico student against bicubic and TAAU.

    python benchmarks/bench_quality.py [--minutes 10] [--ratio 2] [--size 128x96]

Trains HAT-Tiny (the Pico teacher) and the Pico student, each for --minutes of wall-clock training
on synthetic frames, then evaluates all four methods on the same held-out synthetic sequences
(scene seeds no training build uses), every frame, and prints PSNR (RGB and Y), SSIM and FLIP side
by side, with each method's PSNR difference to bicubic.
"""

from __future__ import annotations

import argparse
import time

import torch

from oss_cluster.config import load_config
from oss_cluster.train.local import evaluate, format_eval, heldout_sequences, train_local


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0, help="training time per model")
    parser.add_argument("--ratio", type=float, default=2.0)
    parser.add_argument("--size", default="128x96", help="output WxH of training and held-out frames")
    parser.add_argument("--frames", type=int, default=480, help="synthetic training frames")
    parser.add_argument("--heldout", type=int, default=3, help="held-out sequences")
    parser.add_argument("--heldout-frames", type=int, default=12)
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    common = [f"tier=pico", f"data.ratio={args.ratio}", f"data.out_size=[{height},{width}]", f"data.frames={args.frames}",
              "data.frames_per_sequence=24", "data.window=2", f"data.val_sequences={args.heldout}",
              "train.steps=1000000", "train.lr_schedule=constant", "train.warmup_steps=20", "train.log_every=25",
              "train.eval_every=1000000"]
    settings = {
        "teacher": ["model.name=hat_tiny", "train.batch_size=4", "train.crop=32", "train.lr=4e-4", *common],
        "student": ["model.name=student_pico", "train.batch_size=8", "train.crop=64", "train.lr=2e-3", *common],
    }
    models, trained = {}, {}
    for label, overrides in settings.items():
        cfg = load_config(None, overrides)
        print(f"== training {label} ({cfg.model.name}) for {args.minutes:g} min")
        models[label], trained[label] = train_local(cfg, time_budget_s=args.minutes * 60, final_eval=False,
                                                    log=lambda line: print("  " + line, flush=True))
    cfg = load_config(None, settings["teacher"])
    sequences = heldout_sequences(cfg, frames=args.heldout_frames)
    start = time.perf_counter()
    result = evaluate(models["teacher"], sequences)
    result["student"] = evaluate(models["student"], sequences, baselines=False)["model"]
    result["teacher"] = result.pop("model")
    ordered = {key: result[key] for key in ("bicubic", "taau", "teacher", "student")}
    ordered.update(psnr_spaces=result["psnr_spaces"], border_crop=result["border_crop"])
    print(f"\nheld-out: {len(sequences)} sequences x {args.heldout_frames} frames, "
          f"{width}x{height} output, ratio {args.ratio:g} (eval {time.perf_counter() - start:.0f} s)")
    for label in ("teacher", "student"):
        t = trained[label]
        print(f"{label}: {t['steps']} steps, {t['samples']} windows in {t['seconds']:.0f} s")
    print(format_eval(ordered))
    base = ordered["bicubic"]["psnr_rgb"]
    for method in ("taau", "teacher", "student"):
        print(f"{method:8s} PSNR RGB vs bicubic: {ordered[method]['psnr_rgb'] - base:+.2f} dB, "
              f"vs TAAU: {ordered[method]['psnr_rgb'] - ordered['taau']['psnr_rgb']:+.2f} dB")


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
