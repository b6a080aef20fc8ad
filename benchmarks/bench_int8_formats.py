"""INT8 formats on two CPUs: does the exported model compute the same numbers with and without VNNI?

    python benchmarks/bench_int8_formats.py [--steps 200] [--sequences 2] [--out FILE]

Trains the Pico-sized student with a colour residual that tests/test_quantize.py uses (configs/distill_smoke.yaml,
no teacher, --steps steps), exports it to ONNX, and quantizes it in each of quantize.INT8_VARIANTS, calibrated on
training-distribution frames as export does:

    u8s8-7bit        uint8 activations x int8 weights in [-64, 64] (reduce_range): what export writes
    u8s8-8bit        uint8 x int8 in [-127, 127]: the format before, the baseline
    s8s8-symmetric   int8 symmetric activations x int8 weights (what TensorRT's explicit quantization runs)
    u8u8             uint8 activations x uint8 asymmetric weights

Each model, and the fp32 one, runs with ONNX Runtime on the same steps of held-out sequences (each step fed the fp32
model's own history, so every model sees identical inputs) on this CPU and, in one emulated Python, on qemu's
Haswell: an AVX2 CPU without VNNI or AVX-512, where ONNX Runtime sums u8 x s8 products in saturating 16-bit pairs
(needs qemu-user: scripts/bootstrap.sh installs it). Prints, per format, the widest quantized weight, how far the two
CPUs' INT8 outputs are apart, and the fidelity (steady-state PSNR of the INT8 output against the fp32 output of the
same CPU, border crop 4) on each CPU: the baseline's row and the others' side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from oss_cluster.config import load_config
from oss_cluster.evaluate import heldout_sequences, window_tensors
from oss_cluster.evaluate.scoring import EVAL_BORDER, STEADY_FROM
from oss_cluster.export import INPUT_NAMES, calibration_windows, frame_steps, onnx_bytes
from oss_cluster.metrics import psnr
from oss_cluster.quantize import (INT8_VARIANT, INT8_VARIANTS, calibration_feeds, cpu_int8_features,
                                  emulated_cpu_unavailable, quantize_int8, run_on_emulated_cpu, widest_int8_weight)
from oss_cluster.serving.backends import OnnxRuntimeBackend
from oss_cluster.train.local import train_local

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "distill_smoke.yaml"
BASELINE = "u8s8-8bit"


def fidelity(int8_outputs: list[np.ndarray], fp32_outputs: list[np.ndarray]) -> float:
    """Mean PSNR (dB) of INT8 outputs [1, 3, H, W] against the fp32 ones, border crop EVAL_BORDER."""
    return float(np.mean([psnr(torch.from_numpy(a), torch.from_numpy(b), EVAL_BORDER)
                          for a, b in zip(int8_outputs, fp32_outputs)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps of the student")
    parser.add_argument("--sequences", type=int, default=2, help="held-out sequences (16 frames, 8 of them steady)")
    parser.add_argument("--out", help="also write what is printed to this file")
    args = parser.parse_args()
    reason = emulated_cpu_unavailable()
    if reason:
        sys.exit(f"bench_int8_formats needs an emulated x86 CPU: {reason}")
    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    started = time.time()
    root = Path("oss-runs") / "bench-int8-formats"
    cfg = load_config(CONFIG, [f"storage.root={root}", "distill.teacher_run=null", "distill.weight=0",
                               "model.options.residual=true", f"train.steps={args.steps}",
                               f"train.eval_every={args.steps}", f"train.checkpoint_every={args.steps}"])
    model, _ = train_local(cfg, final_eval=False, log=lambda line: None)
    model.eval()
    calibration = [step for window in calibration_windows(cfg) for step in frame_steps(model, window, cfg.data.ratio)]
    onnx = onnx_bytes(model, calibration[0])
    feeds = calibration_feeds(calibration)
    models = {variant: quantize_int8(onnx, feeds, variant) for variant in INT8_VARIANTS}
    steady = [step for window in heldout_sequences(cfg, frames=16, count=args.sequences)
              for k, step in enumerate(frame_steps(model, window_tensors(window), cfg.data.ratio)) if k >= STEADY_FROM]
    held_out = [{name: tensor.numpy() for name, tensor in zip(INPUT_NAMES, step)} for step in steady]
    say(f"student: {cfg.model.name} with a colour residual, {args.steps} steps on ground truth (configs/distill_smoke.yaml); "
        f"{len(feeds)} calibration frames; {len(held_out)} steady-state held-out steps, each fed the fp32 model's history")
    here = {name: [OnnxRuntimeBackend(data).run(feed)[0] for feed in held_out]
            for name, data in {**models, "fp32": onnx}.items()}
    emulated, emulated_cpu = run_on_emulated_cpu({**models, "fp32": onnx}, held_out)
    emulated = {name: [outputs[0] for outputs in steps] for name, steps in emulated.items()}
    native_cpu = cpu_int8_features()
    say(f"this CPU:     {native_cpu['cpu']}; {'/'.join(native_cpu['features'])}; {native_cpu['int8_products']}")
    say(f"emulated CPU: {emulated_cpu['cpu']}; {'/'.join(emulated_cpu['features'])}; {emulated_cpu['int8_products']}")
    say()
    say(f"{'format':20s} {'max |w_q|':>9s} {'this vs emulated: max':>22s} {'mean':>9s} "
        f"{'fidelity dB here':>17s} {'emulated':>9s}")
    rows = {}
    for variant in [BASELINE] + [v for v in INT8_VARIANTS if v != BASELINE]:
        apart = np.abs(np.stack(here[variant]) - np.stack(emulated[variant]))
        rows[variant] = {"widest_weight": widest_int8_weight(models[variant]), "max_apart": float(apart.max()),
                         "mean_apart": float(apart.mean()), "fidelity_here_db": fidelity(here[variant], here["fp32"]),
                         "fidelity_emulated_db": fidelity(emulated[variant], emulated["fp32"])}
        row = rows[variant]
        label = variant + (" (before)" if variant == BASELINE else " (export)" if variant == INT8_VARIANT else "")
        widest = str(row["widest_weight"] or "uint8")  # u8u8's weights are not int8
        say(f"{label:20s} {widest:>9s} {row['max_apart']:>22.2e} {row['mean_apart']:>9.2e} "
            f"{row['fidelity_here_db']:>17.2f} {row['fidelity_emulated_db']:>9.2f}")
    fp32_apart = float(np.abs(np.stack(here["fp32"]) - np.stack(emulated["fp32"])).max())
    say(f"{'fp32':20s} {'-':>9s} {fp32_apart:>22.2e}")
    say()
    shipped, before = rows[INT8_VARIANT], rows[BASELINE]
    say(f"{INT8_VARIANT} against {BASELINE}: the two CPUs {shipped['max_apart']:.2e} apart against "
        f"{before['max_apart']:.2e}; fidelity on the emulated AVX2 CPU {shipped['fidelity_emulated_db']:.2f} dB against "
        f"{before['fidelity_emulated_db']:.2f} dB, here {shipped['fidelity_here_db']:.2f} against "
        f"{before['fidelity_here_db']:.2f} dB")
    say(f"({time.time() - started:.0f} s)")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n" + json.dumps(
            {"rows": rows, "this_cpu": native_cpu, "emulated_cpu": emulated_cpu}, indent=1) + "\n")


if __name__ == "__main__":
    main()
