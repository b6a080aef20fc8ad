"""Quality after a fixed CPU training budget: Pico teacher and Pico student against bicubic and TAAU,
in the steady state and per motion bucket, on held-out sequences with game-like motion.

    python benchmarks/bench_quality.py [--minutes 10] [--ratio 1.5] [--size 128x96] [--models teacher,student]

Trains HAT-Tiny (the Pico teacher) and the Pico student, each for --minutes of wall-clock training on
synthetic frames with the default game-like motion distribution (every training window preceded by
warm-up frames run without gradient: train.warmup_frames "cycle"), then evaluates every method on
the same held-out sequences (scene seeds no training build uses, --heldout-frames frames each, every
method streamed from the first frame) and prints the steady-state table (frames >= 8), the
all-frames table and PSNR / FLIP per motion bucket (static, < 1, 1-4, > 4 render px/frame), with
each method's differences to bicubic and TAAU.
"""

from __future__ import annotations

import argparse
import time

import torch

from oss_cluster.config import load_config, warmup_frames
from oss_cluster.evaluate import format_eval, heldout_sequences, score
from oss_cluster.evaluate.methods import ModelMethod, anchors
from oss_cluster.evaluate.scoring import BUCKET_LABELS, MOTION_BUCKETS
from oss_cluster.evaluate.video import VideoMetric
from oss_cluster.train.local import train_local


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0, help="training time per model")
    parser.add_argument("--ratio", type=float, default=1.5, help="SR ratio (the Pico tier's is 1.5)")
    parser.add_argument("--size", default="128x96", help="output WxH of training and held-out frames")
    parser.add_argument("--frames", type=int, default=960, help="synthetic training frames")
    parser.add_argument("--heldout", type=int, default=8, help="held-out sequences (the second of every four has a still camera)")
    parser.add_argument("--heldout-frames", type=int, default=48)
    parser.add_argument("--models", default="teacher,student", help="which to train: teacher, student or both")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    common = ["tier=pico", f"data.ratio={args.ratio}", f"data.out_size=[{height},{width}]", f"data.frames={args.frames}",
              "data.frames_per_sequence=48", "data.window=2", f"data.val_sequences={args.heldout}",
              "train.steps=1000000", "train.lr_schedule=constant", "train.warmup_steps=20", "train.log_every=25",
              "train.eval_every=1000000", *args.set]
    settings = {
        "teacher": ["model.name=hat_tiny", "train.batch_size=4", "train.crop=32", "train.lr=4e-4", *common],
        "student": ["model.name=student_pico", "train.batch_size=8", "train.crop=48", "train.lr=2e-3", *common],
    }
    chosen = [label for label in args.models.split(",") if label]
    unknown = set(chosen) - set(settings)
    if unknown:
        parser.error(f"--models: unknown {sorted(unknown)} (teacher, student)")
    methods, trained = dict(anchors()), {}
    for label in chosen:
        cfg = load_config(None, settings[label])
        warmup = warmup_frames(cfg.train, cfg.data.ratio, cfg.data.window)
        print(f"== training {label} ({cfg.model.name}) for {args.minutes:g} min "
              f"(each window: {warmup} warm-up frames without gradient + {cfg.data.window} trained)")
        model, trained[label] = train_local(cfg, time_budget_s=args.minutes * 60, final_eval=False,
                                            log=lambda line: print("  " + line, flush=True))
        methods[label] = ModelMethod(model)
    cfg = load_config(None, settings["student"])
    sequences = heldout_sequences(cfg, frames=args.heldout_frames)
    start = time.perf_counter()
    result, _ = score(methods, sequences, video_metric=VideoMetric(), progress=True)
    print(f"\nheld-out: {len(sequences)} sequences x {args.heldout_frames} frames, {width}x{height} output, "
          f"ratio {args.ratio:g}, game-like motion (eval {time.perf_counter() - start:.0f} s)")
    for label, t in trained.items():
        print(f"{label}: {t['steps']} steps, {t['samples']} windows in {t['seconds']:.0f} s")
    print(format_eval(result))
    base, taau = result["bicubic"], result["taau"]
    for method in ("taau", *trained):
        r = result[method]
        cells = [f"{BUCKET_LABELS[b]} {r['buckets'][b]['psnr_rgb'] - base['buckets'][b]['psnr_rgb']:+.2f}"
                 for b in MOTION_BUCKETS if base["buckets"][b]["psnr_rgb"] is not None]
        line = (f"{method:8s} steady PSNR RGB vs bicubic: {r['psnr_rgb'] - base['psnr_rgb']:+.2f} dB, "
                f"vs TAAU: {r['psnr_rgb'] - taau['psnr_rgb']:+.2f} dB; per bucket vs bicubic: {', '.join(cells)}")
        print(line)
    for method in trained:
        r = result[method]
        wins = [b for b in MOTION_BUCKETS if base["buckets"][b]["psnr_rgb"] is not None and all(
            r["buckets"][b]["psnr_rgb"] > other["buckets"][b]["psnr_rgb"] and r["buckets"][b]["flip"] < other["buckets"][b]["flip"]
            for other in (base, taau))]
        buckets = [b for b in MOTION_BUCKETS if base["buckets"][b]["psnr_rgb"] is not None]
        print(f"{method:8s} beats bicubic and TAAU in PSNR and FLIP in {len(wins)} of {len(buckets)} motion buckets"
              + ("" if len(wins) == len(buckets) else f" (not in: {', '.join(BUCKET_LABELS[b] for b in buckets if b not in wins)})"))


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
