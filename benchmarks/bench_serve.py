"""Serve endpoint under a bounded concurrent load on 127.0.0.1, beside in-process inference.

    python benchmarks/bench_serve.py [--concurrency 4] [--requests 64] [--size 320x180]

Deploys the Serve app (the Pico student, ONNX Runtime) on a local Ray instance, sends --requests PNG
frames with at most --concurrency in flight, and prints requests/s, p50/p99 latency, and the HTTP
overhead ratio: HTTP p50 at concurrency 1 / in-process p50 on the same frames (same backend).
"""

import argparse
import socket
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: bytes) -> float:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "image/png"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        response.read()
    return (time.perf_counter() - started) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--size", default="320x180", help="render WxH of the frames")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    import ray
    from ray import serve

    from oss_cluster.models.accumulate import HISTORY_CHANNELS
    from oss_cluster.serving.app import build_app
    from oss_cluster.serving.backends import OnnxRuntimeBackend, untrained_manifest
    from oss_cluster.serving.codec import decode_png, encode_png, to_uint8

    ray.init(num_cpus=2, log_to_driver=False, configure_logging=False)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"tiers": {"pico": {"model": "student_pico", "ratio": 1.5}}, "max_pixels": width * height}),
              name="bench", route_prefix="/")
    url = f"http://127.0.0.1:{port}/v1/upscale?tier=pico"
    rng = np.random.default_rng(0)
    bodies = [encode_png(to_uint8(rng.random((3, height, width), dtype=np.float32))) for _ in range(8)]

    # In-process: the same backend and inputs as a replica sees for a sessionless PNG request.
    backend = OnnxRuntimeBackend(untrained_manifest("student_pico", 1.5)["files"]["onnx"]["data"])
    H, W = round(height * 1.5), round(width * 1.5)
    in_process = []
    for index in range(3 + 24):
        lr = decode_png(bodies[index % len(bodies)], width * height)[None]
        inputs = {"lr": lr, "depth": np.zeros((1, 1, height, width), np.float32), "jitter": np.zeros((1, 2), np.float32),
                  "motion": np.zeros((1, 2, height, width), np.float32),
                  "previous_depth": np.zeros((1, 1, height, width), np.float32),
                  "previous": np.zeros((1, HISTORY_CHANNELS, H, W), np.float32)}
        started = time.perf_counter()
        backend.run(inputs)
        if index >= 3:
            in_process.append((time.perf_counter() - started) * 1e3)

    for body in bodies[:3]:  # warm the proxy and replica
        post(url, body)
    serial = [post(url, bodies[i % len(bodies)]) for i in range(24)]
    started = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        loaded = list(pool.map(lambda i: post(url, bodies[i % len(bodies)]), range(args.requests)))
    elapsed = time.perf_counter() - started
    serve.shutdown()

    p = lambda values, q: float(np.percentile(values, q))  # noqa: E731
    print(f"frames {width}x{height} -> {W}x{H}, Pico student, ONNX Runtime, one replica, 127.0.0.1")
    print(f"in-process            p50 {p(in_process, 50):8.2f} ms  p99 {p(in_process, 99):8.2f} ms")
    print(f"HTTP, concurrency 1   p50 {p(serial, 50):8.2f} ms  p99 {p(serial, 99):8.2f} ms  "
          f"HTTP/in-process p50 ratio {p(serial, 50) / p(in_process, 50):.2f}x")
    print(f"HTTP, concurrency {args.concurrency:<3d} p50 {p(loaded, 50):8.2f} ms  p99 {p(loaded, 99):8.2f} ms  "
          f"{args.requests / elapsed:.1f} requests/s (in-process serial bound {1e3 / p(in_process, 50):.1f}/s)")


if __name__ == "__main__":
    main()
