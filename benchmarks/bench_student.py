"""Every tier's student against this machine's roofline, in PyTorch and in ONNX Runtime, and against its target's.

    python benchmarks/bench_student.py [--size 320x180] [--threads 1] [--repeats 7]

First measures this machine in the same run, on the same threads: the peak of its 3x3 convolution kernel
(a 64 -> 64 channel conv, torch) and its memory bandwidth (a 256 MiB copy: bytes read + written / time).
Then, for each tier's untrained student at --size (a render size this CPU can run; the target's full render
size is far too slow here), one recurrent step with a history:
- its FLOPs (everything counted), compulsory bytes (inputs read and outputs written once, fp32) and the
  bytes its graph moves as written (every operation's reads and writes, views free);
- this machine's roofline: max(FLOPs / conv peak, compulsory bytes / bandwidth), and the graph's own
  memory time (graph bytes / bandwidth), which says how far restructuring could take it;
- the median step time in eager PyTorch and in ONNX Runtime (the served backend), and the fraction of the
  roofline each reaches (roofline time / measured time; 1.0 would be at the bound);
- at the tier's full render size on its target hardware: the roofline (compute | memory) and the graph's
  memory time, at the tier's assumed efficiency, beside the latency target.
"""

import argparse
import statistics
import time

import torch


def _median_ms(run, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def machine_peaks(repeats: int) -> tuple[float, float]:
    """(conv FLOP/s, memory bytes/s) of this machine, on torch's current threads."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).eval()
    x = torch.rand(1, 64, 180, 320)
    with torch.no_grad():
        conv_ms = _median_ms(lambda: conv(x), repeats)
    flops = 2.0 * 64 * 64 * 9 * 180 * 320
    source = torch.rand(64 * 2**20)  # 256 MiB of fp32
    target = torch.empty_like(source)
    copy_ms = _median_ms(lambda: target.copy_(source), repeats)
    return flops / (conv_ms * 1e-3), 2 * source.numel() * 4 / (copy_ms * 1e-3)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--size", default="320x180", help="render size WxH the students run at here")
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per measurement (median)")
    args = parser.parse_args(argv)
    width, _, height = args.size.lower().partition("x")
    w, h = int(width), int(height)
    torch.set_num_threads(args.threads)

    from oss_cluster.cost.flops import step_costs, step_inputs
    from oss_cluster.export import INPUT_NAMES, onnx_bytes
    from oss_cluster.models import build_model
    from oss_cluster.serving.backends import OnnxRuntimeBackend
    from oss_cluster.serving.latency import roofline_ms, student_costs_per_frame
    from oss_cluster.tiers import TIERS, scaled_size

    peak, bandwidth = machine_peaks(args.repeats)
    print(f"this machine ({args.threads} thread{'s' if args.threads > 1 else ''}): 3x3 conv {peak / 1e9:.1f} GFLOP/s, "
          f"memory {bandwidth / 1e9:.1f} GB/s (copy, read + write)")
    print(f"\nstudents at render {w}x{h} here: roofline = max(FLOPs / conv peak, compulsory bytes / bandwidth)")
    print(f"{'student':17s} {'out':>9s} {'GFLOP':>7s} {'io MB':>7s} {'graph MB':>9s} {'roofline ms':>11s} "
          f"{'graph mem ms':>12s} {'torch ms':>9s} {'frac':>6s} {'ORT ms':>8s} {'frac':>6s}")
    rows = []
    for name, tier in TIERS.items():
        model_name = f"student_{name}"
        H, W = scaled_size(h, w, tier.ratio)
        costs = step_costs(model_name, (h, w), (H, W))
        roofline = max(costs["flops"] / peak, costs["io_bytes"] / bandwidth) * 1e3
        graph_ms = costs["graph_bytes"] / bandwidth * 1e3
        torch.manual_seed(0)
        model = build_model(model_name).eval()
        inputs = step_inputs((h, w), (H, W))
        with torch.no_grad():
            torch_ms = _median_ms(lambda: model(*inputs), args.repeats)
        backend = OnnxRuntimeBackend(onnx_bytes(model, inputs), threads=args.threads)
        feed = {key: value.numpy() for key, value in zip(INPUT_NAMES, inputs)}
        ort_ms = _median_ms(lambda: backend.run(feed), args.repeats)
        print(f"{model_name:17s} {W:>4d}x{H:<4d} {costs['flops'] / 1e9:>7.3f} {costs['io_bytes'] / 1e6:>7.2f} "
              f"{costs['graph_bytes'] / 1e6:>9.1f} {roofline:>11.3f} {graph_ms:>12.3f} {torch_ms:>9.2f} "
              f"{roofline / torch_ms:>6.3f} {ort_ms:>8.2f} {roofline / ort_ms:>6.3f}")
        full = student_costs_per_frame(model_name, tier.input_size, tier.ratio)
        rows.append((name, tier, full))
    print(f"\nat full render size on the target (at {next(iter(TIERS.values())).efficiency:.0%} of peak and bandwidth):")
    print(f"{'tier':9s} {'render -> display':>22s} {'roofline ms (compute | memory)':>32s} {'graph mem ms':>12s} "
          f"{'target ms':>9s}  device")
    for name, tier, full in rows:
        compute, memory = roofline_ms(name, full["flops"]), roofline_ms(name, 0.0, full["io_bytes"])
        sizes = f"{tier.input_size[0]}x{tier.input_size[1]} -> {tier.output_size[0]}x{tier.output_size[1]}"
        bound = f"{max(compute, memory):.3f} ({compute:.3f} | {memory:.3f})"
        print(f"{name:9s} {sizes:>22s} {bound:>32s} {roofline_ms(name, 0.0, full['graph_bytes']):>12.3f} "
              f"{tier.latency_ms:>9.1f}  {tier.reference_gpu}, {tier.peak_tflops:g} TFLOP/s {tier.precision}, "
              f"{tier.memory_gbps:g} GB/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
