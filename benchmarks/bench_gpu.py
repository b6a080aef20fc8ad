"""GPU check of the training path: bf16 (autocast, fp32 geometry) beside fp32, and the canvas model with gsplat.

    python benchmarks/bench_gpu.py [--steps 60] [--json out.json]     # needs CUDA
    python benchmarks/bench_gpu.py --device cpu --tiny                # the same code path, tiny, on CPU

Part 1 trains the Heavy teacher (hat_heavy, configs/heavy.yaml's crop, ratio and batch per GPU) from
one seed twice, in fp32 and under bf16 autocast, with the training loop's own pieces (training_loss,
lr_at, the same crops), and prints the median step time of each (their ratio) and the held-out PSNR
of each (their difference) from the same evaluation code the cluster runs, on the device and in the
precision it trained in. On one GPU DeepSpeed's ZeRO partitions nothing and its bf16 mode is off
(bf16 is autocast's), so torch's AdamW here computes what the engine does.
Part 2 renders one canvas state with gsplat and with the project's torch rasterizer (parity) and
times the canvas model's bf16 training step on the device with gsplat.
Also printed: this device's measured bf16 matmul peak, so step times can be read against it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from oss_cluster.config import load_config
from oss_cluster.evaluate import evaluate, heldout_sequences
from oss_cluster.models import build_model
from oss_cluster.models.precision import autocast
from oss_cluster.train.local import CroppedClips, lr_at, training_clips, training_loss
from oss_cluster.train.on_device import move, on_engine


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak_tflops(device, dtype=torch.bfloat16, n=8192, repeats=10) -> float:
    """Measured dense matmul rate of this device (TFLOP/s), the compute bound for the step times."""
    n = n if device.type == "cuda" else 512
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def train(cfg, device, dtype, steps: int, log) -> tuple[torch.nn.Module, list[float]]:
    """`steps` optimizer steps of cfg.model on the device in `dtype` (None: fp32); (model, step seconds)."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model.name, **cfg.model.options).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    clips = training_clips(cfg)
    crops = CroppedClips(clips, cfg.train.crop, seed=cfg.train.seed)
    order = np.random.default_rng(cfg.train.seed).integers(0, len(crops), size=(steps, cfg.train.batch_size))
    times = []
    model.train()
    for step in range(steps):
        items = [crops[int(i)] for i in order[step]]
        batch = move({k: torch.stack([item[k] for item in items]) for k in items[0]}, device)
        synchronize(device)
        start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg.train)
        with autocast(device, dtype):
            loss, _ = training_loss(model, batch, cfg.train, warmup=clips.warmup)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip or 1e9)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        times.append(time.perf_counter() - start)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{cfg.model.name} {dtype}: loss {loss.item()} at step {step}")
        if (step + 1) % 10 == 0 or step + 1 == steps:
            log(f"  {cfg.model.name} {'bf16' if dtype else 'fp32'} step {step + 1}/{steps} loss {loss.item():.4f} "
                f"{times[-1] * 1000:.1f} ms/step")
    return model, times


def steady(times: list[float]) -> float:
    """Median step time after the first few (allocator and kernel warm-up)."""
    return statistics.median(times[min(5, len(times) // 2):])


def canvas_parity(device) -> dict:
    """One canvas state rendered by gsplat and by the torch rasterizer: largest colour difference."""
    from oss_cluster.models.canvas import empty_canvas, render_canvas, spawn
    from oss_cluster.models.raster import gsplat_available

    ok, why = gsplat_available()
    if device.type != "cuda" or not ok:
        return {"gsplat": "unavailable", "reason": why if device.type == "cuda" else "needs CUDA"}
    g = torch.Generator().manual_seed(0)
    h, w = 90, 160
    lr, depth = torch.rand(1, 3, h, w, generator=g), 1 + torch.rand(1, 1, h, w, generator=g)
    jitter, motion = torch.rand(1, 2, generator=g) - 0.5, (torch.rand(1, 2, h, w, generator=g) - 0.5) * 4
    state = spawn(empty_canvas(1, 8192, 8, (180, 320), "cpu"), (torch.rand(1, 1, h, w, generator=g) > 0.5).float(),
                  lr, depth, jitter, torch.rand(1, 5, h, w, generator=g), limit=8192, motion=motion)
    state = move(state, device)
    torch_image, torch_cover = render_canvas(state, backend="torch")
    gsplat_image, gsplat_cover = render_canvas(state, backend="gsplat")
    return {"gsplat": "ok", "max_abs_colour_diff": float((torch_image - gsplat_image)[:, :3].abs().max()),
            "mean_abs_colour_diff": float((torch_image - gsplat_image)[:, :3].abs().mean()),
            "max_abs_coverage_diff": float((torch_cover - gsplat_cover).abs().max())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--tiny", action="store_true", help="tiny frames and models (a CPU check of the code path)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("skipped: bench_gpu needs CUDA (run with --device cpu --tiny to check the code path)")
        return 0
    log = print
    tiny_hat = ["model.name=hat_tiny", "model.options.embed_dim=24", "model.options.groups=1", "model.options.depth=2",
                "model.options.heads=2", "model.options.compress=6", "model.options.squeeze=6"]
    size = ["data.out_size=[48,64]", "train.crop=32", "data.frames=40", "data.frames_per_sequence=20",
            *tiny_hat] if args.tiny else ["data.out_size=[240,320]", "data.frames=120", "data.frames_per_sequence=60"]
    base = load_config("configs/heavy.yaml", ["train.worker_resources={}", "train.grad_accum=1",
                                              "train.warmup_steps=10", "data.objects=3", *size])
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "bf16_matmul_peak_tflops": matmul_peak_tflops(device)}
    log(f"{result['device']}: bf16 matmul {result['bf16_matmul_peak_tflops']:.0f} TFLOP/s measured")
    heldout = heldout_sequences(base, frames=32)
    # configs/heavy.yaml asks for 8 windows per GPU at crop 128: find the largest batch that fits here (bf16).
    result["batch_fits"] = {}
    batch = 2
    for candidate in ([8, 4, 2, 1] if device.type == "cuda" else [2]):
        try:
            cfg = base.model_copy(update={"train": base.train.model_copy(update={"batch_size": candidate})})
            train(cfg, device, torch.bfloat16, 2, lambda *_: None)
            result["batch_fits"][candidate] = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
            batch = candidate
            break
        except torch.OutOfMemoryError:
            result["batch_fits"][candidate] = "out of memory"
            torch.cuda.empty_cache()
        finally:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
    log(f"hat_heavy at crop {base.train.crop}, bf16, windows per GPU -> peak GiB: {result['batch_fits']}")
    cfg = base.model_copy(update={"train": base.train.model_copy(update={"batch_size": batch})})
    for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        model, times = train(cfg, device, dtype, args.steps, log)
        score = evaluate(on_engine(model, device, dtype), heldout)
        result[label] = {"step_ms": steady(times) * 1000, "psnr_rgb": score["model"]["psnr_rgb"],
                         "flip": score["model"]["flip"], "taau_psnr_rgb": score["taau"]["psnr_rgb"],
                         "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    result["bf16_speedup"] = result["fp32"]["step_ms"] / result["bf16"]["step_ms"]
    result["bf16_minus_fp32_psnr_db"] = result["bf16"]["psnr_rgb"] - result["fp32"]["psnr_rgb"]
    log(f"{cfg.model.name}, crop {cfg.train.crop}, batch {cfg.train.batch_size}, {args.steps} steps:")
    log(f"  fp32 {result['fp32']['step_ms']:.1f} ms/step, PSNR {result['fp32']['psnr_rgb']:.3f} dB")
    log(f"  bf16 {result['bf16']['step_ms']:.1f} ms/step, PSNR {result['bf16']['psnr_rgb']:.3f} dB")
    log(f"  bf16 speed-up {result['bf16_speedup']:.2f}x; bf16 - fp32 PSNR {result['bf16_minus_fp32_psnr_db']:+.3f} dB")

    result["canvas_parity"] = canvas_parity(device)
    log(f"canvas render, gsplat vs torch rasterizer: {result['canvas_parity']}")
    canvas = load_config("configs/canvas.yaml", ["train.worker_resources={}", "train.batch_size=2",
                                                 *(["data.out_size=[48,64]", "train.crop=32", "data.frames=72",
                                                    "data.frames_per_sequence=36", "model.options.capacity=512",
                                                    "model.options.spawn_per_frame=512"] if args.tiny else
                                                   ["data.out_size=[240,320]", "data.frames=144",
                                                    "data.frames_per_sequence=72"])])
    steps = max(6, args.steps // 4)
    _, times = train(canvas, device, torch.bfloat16, steps, log)
    result["canvas_bf16_step_ms"] = steady(times) * 1000
    log(f"canvas bf16 on {device.type} (rasterizer: {'gsplat' if result['canvas_parity'].get('gsplat') == 'ok' else 'torch'}): "
        f"{result['canvas_bf16_step_ms']:.1f} ms/step over {steps} steps")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
