"""OSS-FX after a fixed CPU training budget: the canvas model's extrapolation against the baselines.

    python benchmarks/bench_fx.py [--minutes 10] [--ratio 1.5] [--size 128x96]

Trains the canvas model (configs/canvas.yaml, small) for --minutes of wall-clock training on
synthetic frames with game-like motion (warm-up frames before every window, the extrapolation term
at alpha drawn from (0, 1] per frame), then streams it through held-out sequences (scene seeds no
training build uses, the second of every four with a still camera) and prints, for steady-state
frames, OSS-FX at alpha 0.25 / 0.5 / 0.75 beside repeat-last, the depth-aware forward warp and the
naive warp: PSNR and FLIP against the renderer's true intermediate frames, over all pixels and over
the pixels disoccluded between t and t + alpha; the fx-vs-SR / motion ratio; the SR table and the
canvas contribution. The last lines check the OSS-FX acceptance at alpha 0.5.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from oss_cluster.config import load_config
from oss_cluster.evaluate import (
    FX_ALPHAS, evaluate, evaluate_extrapolation, format_eval, format_extrapolation, headline, heldout_futures,
    heldout_sequences,
)
from oss_cluster.train.local import train_local

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "canvas.yaml"
RATIO_RANGE = (0.3, 0.7)  # fx-vs-SR / motion at alpha 0.5 for a frame that moves like the scene


def acceptance(fx: dict) -> list[str]:
    """One line per check of the OSS-FX acceptance at alpha 0.5, with the numbers."""
    half = headline(fx)
    lines = []
    for baseline in ("repeat_last", "depth_warp"):
        for region, psnr_key, flip_key in (("all pixels", "psnr_rgb", "flip"),
                                           ("disoccluded", "disoccluded_psnr_rgb", "disoccluded_flip")):
            ours, theirs = half["oss_fx"], half[baseline]
            if psnr_key not in ours:
                lines.append(f"OSS-FX vs {baseline} on {region}: not measured (nothing disoccluded)")
                continue
            d_psnr, d_flip = ours[psnr_key] - theirs[psnr_key], ours[flip_key] - theirs[flip_key]
            verdict = "beats" if d_psnr > 0 and d_flip < 0 else "does NOT beat"
            lines.append(f"OSS-FX {verdict} {baseline} on {region}: PSNR {d_psnr:+.3f} dB, FLIP {d_flip:+.4f}")
    ratio = half["fx_vs_sr_over_motion"]
    inside = RATIO_RANGE[0] <= ratio <= RATIO_RANGE[1]
    lines.append(f"fx-vs-SR / motion {ratio:.3f}: {'inside' if inside else 'OUTSIDE'} {RATIO_RANGE[0]}-{RATIO_RANGE[1]}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0, help="training time")
    parser.add_argument("--ratio", type=float, default=1.5)
    parser.add_argument("--size", default="128x96", help="output WxH of training and held-out frames")
    parser.add_argument("--frames", type=int, default=480, help="synthetic training frames")
    parser.add_argument("--heldout", type=int, default=4, help="held-out sequences")
    parser.add_argument("--heldout-frames", type=int, default=32)
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    cfg = load_config(CONFIG, [
        "train.worker_resources={}", f"data.ratio={args.ratio}", f"data.out_size=[{height},{width}]",
        f"data.frames={args.frames}", "data.frames_per_sequence=48", "data.window=2",
        f"data.val_sequences={args.heldout}", "train.steps=1000000", "train.lr_schedule=constant",
        "train.warmup_steps=20", "train.log_every=10", "train.eval_every=1000000", "train.batch_size=2",
        "train.crop=64", "train.lr=1e-3", "model.options.capacity=2048", "model.options.spawn_per_frame=1024",
        "model.options.widths=[8,16,32]", "model.options.hidden=32",
    ])
    print(f"== training the canvas model for {args.minutes:g} min (fx_weight {cfg.model.options.get('fx_weight', 1.0)}, "
          f"fusion magnitude {cfg.model.options['fusion_magnitude']})", flush=True)
    model, trained = train_local(cfg, time_budget_s=args.minutes * 60, final_eval=False,
                                 log=lambda line: print("  " + line, flush=True))
    start = time.perf_counter()
    sequences = heldout_sequences(cfg, frames=args.heldout_frames)
    futures = heldout_futures(cfg, args.heldout_frames, FX_ALPHAS)
    sr = evaluate(model, sequences)
    fx = evaluate_extrapolation(model, sequences, futures)
    print(f"\nheld-out: {len(sequences)} sequences x {args.heldout_frames} frames, {width}x{height} output, "
          f"ratio {args.ratio:g}, game-like motion (eval {time.perf_counter() - start:.0f} s)")
    print(f"canvas model: {trained['steps']} steps, {trained['samples']} windows in {trained['seconds']:.0f} s")
    print(format_eval(sr))
    print(format_extrapolation(fx))
    print("\n".join(acceptance(fx)))


if __name__ == "__main__":
    main()
