"""Serve endpoint under a bounded concurrent load on 127.0.0.1, beside in-process inference, for PNG and raw frames.

    python benchmarks/bench_serve.py [--size 1280x720] [--serial 12] [--concurrency 4] [--requests 16]

Deploys the Serve app (the Pico student, ONNX Runtime, one replica, one thread) on a local Ray instance and
streams --serial frames of one session through it, one at a time, in each format:
- png: a multipart body (PNG frame + float32 motion and depth parts), PNG reply;
- raw: one application/octet-stream body (rgb8 frame, then float32 motion and depth planes: X-Planes), raw rgb8
  reply (Accept: application/octet-stream), streamed.
It prints each format's HTTP p50/p99 beside the in-process p50 (the same backend on the same frames and history,
nothing else: what a replica's model costs) and their ratio against the target (raw: HTTP p50 <= 1.3x
in-process at the Pico tier's render size, 1280x720), then requests/s for --requests raw frames with at most
--concurrency in flight (sessionless).
"""

import argparse
import socket
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np

TARGET_RATIO = 1.3  # raw frames: HTTP p50 / in-process p50 at the Pico render size


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: bytes, headers: dict) -> float:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        response.read()
    return (time.perf_counter() - started) * 1e3


def bodies(frame: dict, width: int, height: int) -> dict[str, tuple[bytes, dict]]:
    """{format: (body, headers)} of one frame with its motion and depth."""
    from oss_cluster.serving.codec import encode_png, to_uint8

    motion = frame["motion"].transpose(1, 2, 0).astype("<f4").tobytes()
    depth = frame["depth"][0].astype("<f4").tobytes()
    boundary = "bench-boundary"
    multipart = b""
    for name, kind, data in (("frame", "image/png", encode_png(to_uint8(frame["lr"]))),
                             ("motion", "application/octet-stream", motion),
                             ("depth", "application/octet-stream", depth)):
        multipart += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n"
                      f"Content-Type: {kind}\r\n\r\n").encode() + data + b"\r\n"
    multipart += f"--{boundary}--\r\n".encode()
    raw = to_uint8(frame["lr"]).tobytes() + motion + depth
    return {"png": (multipart, {"Content-Type": f"multipart/form-data; boundary={boundary}"}),
            "raw": (raw, {"Content-Type": "application/octet-stream", "X-Width": str(width), "X-Height": str(height),
                          "X-Format": "rgb8", "X-Planes": "motion,depth", "Accept": "application/octet-stream"})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--size", default="1280x720", help="render WxH of the frames (the Pico tier's is 1280x720)")
    parser.add_argument("--serial", type=int, default=12, help="frames per format streamed one at a time")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--requests", type=int, default=16, help="raw frames sent under --concurrency")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    import ray
    from ray import serve

    from oss_cluster.models.accumulate import HISTORY_CHANNELS
    from oss_cluster.serving.app import build_app
    from oss_cluster.serving.backends import OnnxRuntimeBackend, untrained_manifest
    from oss_cluster.serving.codec import to_uint8
    from oss_cluster.tiers import scaled_size

    rng = np.random.default_rng(0)
    frames = [{"lr": to_uint8(rng.random((3, height, width), dtype=np.float32)).transpose(2, 0, 1) / np.float32(255),
               "motion": rng.normal(0, 2, (2, height, width)).astype(np.float32),
               "depth": (1 + rng.random((1, height, width))).astype(np.float32)} for _ in range(4)]
    H, W = scaled_size(height, width, 1.5)

    # In-process: the replica's backend on the same frames, each step fed the last one's history.
    backend = OnnxRuntimeBackend(untrained_manifest("student_pico", 1.5)["files"]["onnx"]["data"], threads=1)
    history = np.zeros((1, HISTORY_CHANNELS, H, W), np.float32)
    previous_depth = np.zeros((1, 1, height, width), np.float32)
    in_process = []
    for index in range(2 + args.serial):
        frame = frames[index % len(frames)]
        inputs = {"lr": frame["lr"][None].astype(np.float32), "depth": frame["depth"][None],
                  "jitter": np.zeros((1, 2), np.float32), "motion": frame["motion"][None],
                  "previous_depth": previous_depth, "previous": history}
        started = time.perf_counter()
        _, history = backend.run(inputs)
        if index >= 2:
            in_process.append((time.perf_counter() - started) * 1e3)
        previous_depth = frame["depth"][None]

    ray.init(num_cpus=2, log_to_driver=False, configure_logging=False)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"tiers": {"pico": {"model": "student_pico", "ratio": 1.5}}, "max_pixels": width * height}),
              name="bench", route_prefix="/")
    url = f"http://127.0.0.1:{port}/v1/upscale?tier=pico"
    encoded = [bodies(frame, width, height) for frame in frames]
    serial = {}
    for fmt in ("png", "raw"):
        times = []
        for index in range(2 + args.serial):  # the first two warm the proxy and replica
            body, headers = encoded[index % len(encoded)][fmt]
            elapsed = post(url, body, {**headers, "X-Session-Id": f"bench-{fmt}"})
            if index >= 2:
                times.append(elapsed)
        serial[fmt] = times
    raw_body, raw_headers = encoded[0]["raw"]
    started = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        loaded = list(pool.map(lambda i: post(url, raw_body, raw_headers), range(args.requests)))
    elapsed = time.perf_counter() - started
    serve.shutdown()
    ray.shutdown()

    p = lambda values, q: float(np.percentile(values, q))  # noqa: E731
    base = p(in_process, 50)
    print(f"frames {width}x{height} -> {W}x{H} with motion and depth, Pico student (untrained), ONNX Runtime 1 thread, "
          f"one replica, 127.0.0.1")
    print(f"in-process              p50 {base:8.2f} ms  p99 {p(in_process, 99):8.2f} ms")
    for fmt, label in (("png", "PNG multipart -> PNG "), ("raw", "raw + planes -> rgb8 ")):
        ratio = p(serial[fmt], 50) / base
        verdict = f"(target <= {TARGET_RATIO}x: {'met' if ratio <= TARGET_RATIO else 'missed'})" if fmt == "raw" else ""
        print(f"HTTP {label}  p50 {p(serial[fmt], 50):8.2f} ms  p99 {p(serial[fmt], 99):8.2f} ms  "
              f"HTTP/in-process p50 {ratio:.2f}x {verdict}")
    print(f"raw, concurrency {args.concurrency:<3d}     p50 {p(loaded, 50):8.2f} ms  p99 {p(loaded, 99):8.2f} ms  "
          f"{args.requests / elapsed:.2f} requests/s (in-process serial bound {1e3 / base:.2f}/s)")


if __name__ == "__main__":
    main()
