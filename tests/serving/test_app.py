"""The real Serve app on the session's Ray instance, called over HTTP with real (synthetic) frames."""

import io
import json
import re
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from oss_cluster.data.synth import synth_windows
from oss_cluster.models.accumulate import HISTORY_CHANNELS
from oss_cluster.serving.backends import OnnxRuntimeBackend, untrained_manifest
from oss_cluster.serving.codec import encode_png, to_uint8

RATIO = 1.5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    """A storage root with one recorded run, for the app's /dashboard route."""
    from oss_cluster.runs import RunRegistry
    from oss_cluster.storage import open_storage

    root = tmp_path_factory.mktemp("serve-runs")
    run = RunRegistry(open_storage(str(root))).allocate("student", "0.1", "pico")
    run.mark_started()
    run.log_step(1, loss=0.25)
    run.finish()
    return root, str(run.name)


@pytest.fixture(scope="module")
def endpoint(ray_local, runs_root):
    from ray import serve

    from oss_cluster.serving.app import build_app

    port = _free_port()
    # Bound beyond loopback so the tests can also call it as another machine would (through _lan_address()).
    serve.start(http_options={"host": "0.0.0.0", "port": port})
    app = build_app({"tiers": {"pico": {"model": "student_pico", "ratio": RATIO, "num_cpus": 0.5}},
                     "max_pixels": 64 * 64, "max_batch_size": 4, "storage": {"root": str(runs_root[0])},
                     "dashboard": {"enabled": True, "refresh_s": 3600}})
    serve.run(app, name="oss", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()  # free the CPUs for the training tests that share this Ray instance


@pytest.fixture(scope="module")
def frames():
    """Three consecutive real frames (render 32x48 for a 48x72 output), as PNG and arrays."""
    window = next(iter(synth_windows(3, RATIO, (48, 72), 3, 3, seed=5, objects=2)))
    arrays = window.arrays()
    return [{"lr": arrays["lr"][k].astype(np.float32), "motion": arrays["motion"][k].astype(np.float32),
             "depth": arrays["depth"][k].astype(np.float32), "jitter": arrays["jitter"][k].astype(np.float32)}
            for k in range(3)]


def post(url, body: bytes, headers: dict, path="/v1/upscale"):
    request = urllib.request.Request(url + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def get_json(url, path):
    with urllib.request.urlopen(url + path, timeout=60) as response:
        return json.loads(response.read())


def png_of(frame) -> bytes:
    return encode_png(to_uint8(frame["lr"]))


def multipart(frame) -> tuple[bytes, str]:
    boundary = "oss-test-boundary"
    parts = [("frame", "image/png", png_of(frame)),
             ("motion", "application/octet-stream", frame["motion"].transpose(1, 2, 0).astype("<f4").tobytes()),
             ("depth", "application/octet-stream", frame["depth"].transpose(1, 2, 0).astype("<f4").tobytes())]
    body = b""
    for name, kind, data in parts:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n"
                 f"Content-Type: {kind}\r\n\r\n").encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_health_and_models(endpoint):
    assert get_json(endpoint, "/healthz") == {"status": "ok", "tiers": ["pico"]}
    models = get_json(endpoint, "/v1/models")
    (pico,) = models["models"]
    assert pico["tier"] == "pico" and pico["ratio"] == RATIO and pico["backend"] == "onnxruntime"
    assert pico["source_run"] == "untrained" and models["versions"]["ray"]


def test_png_stream_with_session_matches_in_process_inference(endpoint, frames):
    backend = OnnxRuntimeBackend(untrained_manifest("student_pico", RATIO)["files"]["onnx"]["data"])
    history, previous_depth = np.zeros((1, HISTORY_CHANNELS, 48, 72), np.float32), np.zeros((1, 1, 32, 48), np.float32)
    for k, frame in enumerate(frames):
        body, content_type = multipart(frame)
        status, headers, data = post(endpoint, body, {"Content-Type": content_type, "X-Session-Id": "stream-1",
                                                      "X-Jitter": f"{frame['jitter'][0]},{frame['jitter'][1]}"})
        assert status == 200, data
        assert headers["x-history"] == ("continued" if k else "new")
        got = np.asarray(Image.open(io.BytesIO(data)))
        assert got.shape == (48, 72, 3)
        # The same step in-process, on the frame as the server decoded it (8-bit PNG) and its own history.
        lr = np.asarray(Image.open(io.BytesIO(png_of(frame))), np.float32).transpose(2, 0, 1)[None] / 255
        inputs = {"lr": lr, "depth": frame["depth"][None], "jitter": frame["jitter"][None],
                  "motion": frame["motion"][None], "previous_depth": previous_depth, "previous": history}
        output, history = backend.run(inputs)
        history = history.astype(np.float16).astype(np.float32)  # the replica keeps histories in half precision
        previous_depth = frame["depth"][None].astype(np.float16).astype(np.float32)
        assert np.abs(got.astype(int) - to_uint8(output[0]).astype(int)).max() <= 1


def test_frames_without_motion_and_depth_get_no_history(endpoint, frames):
    """Without motion vectors and depth the history would be warped by assumed-zero motion: none is used."""
    backend = OnnxRuntimeBackend(untrained_manifest("student_pico", RATIO)["files"]["onnx"]["data"])
    for k, frame in enumerate(frames):
        status, headers, data = post(endpoint, png_of(frame), {"Content-Type": "image/png", "X-Session-Id": "png-only",
                                                               "X-Jitter": f"{frame['jitter'][0]},{frame['jitter'][1]}"})
        assert status == 200 and headers["x-history"] == "unavailable", headers
        assert "motion vectors and depth" in headers["x-history-reason"]
        lr = np.asarray(Image.open(io.BytesIO(png_of(frame))), np.float32).transpose(2, 0, 1)[None] / 255
        zeros = {"depth": np.zeros((1, 1, 32, 48), np.float32), "motion": np.zeros((1, 2, 32, 48), np.float32)}
        alone, _ = backend.run({"lr": lr, "jitter": frame["jitter"][None], **zeros, "previous_depth": zeros["depth"],
                                "previous": np.zeros((1, HISTORY_CHANNELS, 48, 72), np.float32)})
        got = np.asarray(Image.open(io.BytesIO(data)))
        assert np.abs(got.astype(int) - to_uint8(alone[0]).astype(int)).max() <= 1  # this frame alone, every time
    # Motion and depth arrive: a new history starts, then continues.
    for k, frame in enumerate(frames[:2]):
        body, content_type = multipart(frame)
        _, headers, _ = post(endpoint, body, {"Content-Type": content_type, "X-Session-Id": "png-only"})
        assert headers["x-history"] == ("continued" if k else "new")


def test_raw_rgb_in_and_out(endpoint, frames):
    rgb = to_uint8(frames[0]["lr"])
    status, headers, data = post(endpoint, rgb.tobytes(), {
        "Content-Type": "application/octet-stream", "X-Width": "48", "X-Height": "32", "X-Format": "rgb8",
        "Accept": "application/octet-stream"})
    assert status == 200 and headers["x-format"] == "rgb8"
    assert len(data) == int(headers["x-width"]) * int(headers["x-height"]) * 3 == 72 * 48 * 3


def raw_with_planes(frame, fmt="rgb8", plane_format="f32") -> tuple[bytes, dict]:
    """One raw body: the frame in `fmt`, then motion and depth planes (X-Planes), as a game engine would send them."""
    pixels = frame["lr"].transpose(1, 2, 0)
    body = to_uint8(frame["lr"]).tobytes() if fmt == "rgb8" else pixels.astype("<f2").tobytes()
    dtype = "<f4" if plane_format == "f32" else "<f2"
    body += frame["motion"].transpose(1, 2, 0).astype(dtype).tobytes() + frame["depth"][0].astype(dtype).tobytes()
    return body, {"Content-Type": "application/octet-stream", "X-Width": "48", "X-Height": "32", "X-Format": fmt,
                  "X-Planes": "motion,depth", "X-Plane-Format": plane_format,
                  "X-Jitter": f"{frame['jitter'][0]},{frame['jitter'][1]}"}


def test_raw_frames_with_raw_planes_stream_like_multipart_and_half_floats_round_trip(endpoint, frames):
    """A raw rgb8 body carrying its motion and depth planes continues a history exactly as the multipart PNG path
    does (same pixels, same planes); rgbf16 frames and f16 planes in, rgbf16 out, match the model run in-process on
    the half-float inputs to half-float precision."""
    backend = OnnxRuntimeBackend(untrained_manifest("student_pico", RATIO)["files"]["onnx"]["data"])
    history, previous_depth = np.zeros((1, HISTORY_CHANNELS, 48, 72), np.float32), np.zeros((1, 1, 32, 48), np.float32)
    for k, frame in enumerate(frames):
        body, content_type = multipart(frame)
        jitter = {"X-Jitter": f"{frame['jitter'][0]},{frame['jitter'][1]}"}
        _, _, via_png = post(endpoint, body, {"Content-Type": content_type, "X-Session-Id": "mp", **jitter,
                                              "Accept": "application/octet-stream"})
        body, headers = raw_with_planes(frame)
        status, reply, via_raw = post(endpoint, body, {**headers, "X-Session-Id": "raw",
                                                       "Accept": "application/octet-stream"})
        assert status == 200 and reply["x-history"] == ("continued" if k else "new") and reply["x-format"] == "rgb8"
        assert via_raw == via_png  # the same 8-bit pixels and planes: the same reply, byte for byte

        body, headers = raw_with_planes(frame, "rgbf16", "f16")
        status, reply, data = post(endpoint, body, {**headers, "X-Session-Id": "half", "X-Reply-Format": "rgbf16",
                                                    "Accept": "application/octet-stream"})
        assert status == 200 and reply["x-format"] == "rgbf16" and int(reply["content-length"]) == 48 * 72 * 3 * 2
        assert reply["x-inference-includes"].startswith("the run on the CPU")
        got = np.frombuffer(data, "<f2").reshape(48, 72, 3).astype(np.float32)
        half = {name: frame[name].astype(np.float16).astype(np.float32)[None] for name in ("lr", "motion", "depth")}
        output, history = backend.run({**half, "jitter": frame["jitter"][None], "previous_depth": previous_depth,
                                       "previous": history})
        history = history.astype(np.float16).astype(np.float32)
        previous_depth = half["depth"].astype(np.float16).astype(np.float32)
        assert np.abs(got - np.clip(output[0].transpose(1, 2, 0), 0, 1)).max() < 2e-3


def test_bad_requests_get_4xx_json_and_the_replica_stays_healthy(endpoint, frames):
    good = png_of(frames[0])
    raw = to_uint8(frames[0]["lr"]).tobytes()
    nan_motion = np.full((32, 48, 2), np.nan, "<f4").tobytes()
    body, content_type = multipart(frames[0])
    bad = [
        (b"definitely not a png", {"Content-Type": "image/png"}, 400, "does not start with the PNG signature"),
        (good[:60], {"Content-Type": "image/png"}, 400, "truncated or corrupt"),
        (b"\xff\xd8\xff\xe0" + bytes(64), {"Content-Type": "image/png"}, 415, "the body is JPEG"),
        (good, {"Content-Type": "image/png", "X-Tier": "pico", "Accept": "text/html"}, 406, "Accept"),
        (good, {"Content-Type": "text/plain"}, 415, "Content-Type"),
        (b"", {"Content-Type": "image/png"}, 400, "empty body"),
        (encode_png(np.zeros((80, 80, 3), np.uint8)), {"Content-Type": "image/png"}, 413, "maximum"),
        (raw, {"Content-Type": "application/octet-stream", "X-Width": "48"}, 400, "X-Height"),
        (raw, {"Content-Type": "application/octet-stream", "X-Width": "47", "X-Height": "32"}, 400, "needs"),
        (raw, {"Content-Type": "application/octet-stream", "X-Width": "48", "X-Height": "32", "X-Format": "bgr16"},
         415, "X-Format"),
        (good, {"Content-Type": "image/png", "X-Tier": "ultra"}, 404, "unknown tier"),
        (raw_with_planes(frames[0])[0][:-4], raw_with_planes(frames[0])[1], 400, "with planes motion,depth (f32) needs"),
        (raw_with_planes(frames[0])[0], {**raw_with_planes(frames[0])[1], "X-Planes": "motion,normals"}, 400,
         "X-Planes"),
        (raw_with_planes(frames[0])[0], {**raw_with_planes(frames[0])[1], "X-Plane-Format": "f64"}, 415,
         "X-Plane-Format"),
        (good, {"Content-Type": "image/png", "X-Reply-Format": "rgbf16"}, 400, "for raw replies"),
        (good, {"Content-Type": "image/png", "Accept": "application/octet-stream", "X-Reply-Format": "rgbf32"}, 400,
         "X-Reply-Format"),
        (good, {"Content-Type": "image/png", "X-Jitter": "nan,0"}, 400, "X-Jitter"),
        (body.replace(frames[0]["motion"].transpose(1, 2, 0).astype("<f4").tobytes(), nan_motion),
         {"Content-Type": content_type}, 422, "NaN"),
        (body.replace(frames[0]["depth"].transpose(1, 2, 0).astype("<f4").tobytes(), b"\0" * 12),
         {"Content-Type": content_type}, 422, "depth"),
        (b"--x\r\nbroken", {"Content-Type": "multipart/form-data; boundary=x"}, 400, "frame"),
    ]
    for data, headers, status, words in bad:
        code, _, reply = post(endpoint, data, headers)
        assert code == status, (headers, reply)
        assert words in json.loads(reply)["error"], reply
        assert "object at 0x" not in json.loads(reply)["error"], reply
    code, _, reply = post(endpoint, good, {"Content-Type": "image/png", "X-Tier": "pico"}, path="/v1/upscale?tier=heavy")
    assert code == 400 and "disagree" in json.loads(reply)["error"]
    code, headers, _ = post(endpoint, good, {"Content-Type": "image/png"})
    assert code == 200 and (headers["x-tier"], headers["x-tier-source"]) == ("pico", "default")
    status, _, data = post(endpoint, good, {"Content-Type": "image/png"})
    assert status == 200 and Image.open(io.BytesIO(data)).size == (72, 48)
    assert get_json(endpoint, "/healthz")["status"] == "ok"


def test_concurrent_requests_are_batched(endpoint, frames):
    from concurrent.futures import ThreadPoolExecutor

    good = png_of(frames[1])
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: post(endpoint, good, {"Content-Type": "image/png"}), range(16)))
    assert all(status == 200 for status, _, _ in replies)
    assert max(int(headers["x-batch-size"]) for _, headers, _ in replies) > 1
    assert len({data for _, _, data in replies}) == 1  # no session: same frame, same output


def _fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers, response.read(), response.url
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read(), url


def test_dashboard_route_serves_the_site_of_the_app_storage(endpoint, runs_root):
    """GET /dashboard/ on the Serve app: the same pages as `python -m oss_cluster.dashboard serve`, built from the
    app's storage (a loopback client needs no token when none is configured)."""
    import time

    _, name = runs_root
    deadline = time.time() + 60
    while True:  # the replica builds the site in the background after it starts
        status, _, body, _ = _fetch(f"{endpoint}/dashboard/data.json")
        if status != 503 or time.time() > deadline:
            break
        time.sleep(0.5)
    assert status == 200, body
    assert [run["name"] for run in json.loads(body)["runs"]] == [name]
    status, _, body, url = _fetch(f"{endpoint}/dashboard")
    assert status == 200 and b"<title>OpenSuperSampling" in body and url.endswith("/dashboard/")
    assert _fetch(f"{endpoint}/dashboard/app.js")[1]["content-type"].startswith("text/javascript")
    assert _fetch(f"{endpoint}/dashboard/nope.txt")[0] == 404


def _lan_address() -> str:
    """This machine's address on its network (not loopback): how another machine reaches the endpoint."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the outgoing interface
        address = probe.getsockname()[0]
    assert not address.startswith("127."), "this machine has no non-loopback address to test from"
    return address


def test_other_machines_need_an_api_token(endpoint, frames):
    lan = f"http://{_lan_address()}:{endpoint.rsplit(':', 1)[1]}"
    status, _, reply = post(lan, png_of(frames[0]), {"Content-Type": "image/png"})
    assert status == 401 and "OSS_SERVE_TOKEN" in json.loads(reply)["error"]
    assert _fetch(lan + "/v1/models")[0] == 401
    assert _fetch(lan + "/healthz")[0] == 200  # health carries no data; load balancers probe it


def _raw_exchange(port: int, head: bytes, body_chunks=()) -> tuple[int, bytes]:
    """Send a hand-made HTTP request (headers, then body chunks while the server still reads) and return the status
    and body of the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the whole body was sent: what a limit should do
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply) < reply.index(b"\r\n\r\n") + 4 + int(
                re.search(rb"(?i)content-length: (\d+)", reply).group(1) if re.search(rb"(?i)content-length: (\d+)", reply) else 0):
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    return int(reply.split(b" ", 2)[1]), reply.split(b"\r\n\r\n", 1)[1]


def test_oversized_bodies_are_refused_before_they_are_read(endpoint):
    port = int(endpoint.rsplit(":", 1)[1])
    limit = 64 * 64 * (3 * 4 + 2 * 4 + 4) + 65536  # ServeAppConfig.body_limit for max_pixels 64 x 64
    # A declared length over the limit: 413 at once, although not one byte of the body is sent.
    status, body = _raw_exchange(port, b"POST /v1/upscale HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                                       b"Content-Length: 1000000000\r\nConnection: close\r\n\r\n")
    assert status == 413 and b"limit" in body
    # No length, streamed in chunks past the limit: 413 once the limit is crossed.
    chunk = b"x" * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(limit // len(chunk) + 2)] + [b"0\r\n\r\n"]
    status, body = _raw_exchange(port, b"POST /v1/upscale HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                                       b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n", chunks)
    assert status == 413 and b"stopped reading" in body
    assert get_json(endpoint, "/healthz")["status"] == "ok"


def test_tokens_scope_sessions_and_a_mixed_load_leaves_valid_streams_exact(endpoint, frames, tmp_path):
    """A second app with two API tokens (one per client, in a token file): requests need one, sessions are
    scoped to it, and valid streams stay exact while oversized, truncated and malformed requests arrive
    between them; no replica restarts."""
    from concurrent.futures import ThreadPoolExecutor

    from ray import serve

    from oss_cluster.serving.app import build_app

    tokens = tmp_path / "tokens"
    tokens.write_text("client-a\nclient-b\n")
    serve.run(build_app({"tiers": {"pico": {"model": "student_pico", "ratio": RATIO, "num_cpus": 0.25}},
                         "max_pixels": 64 * 64, "api_token_file": str(tokens),
                         # one 48x72 session holds 4x48x72 + 32x48 half floats = 30,720 bytes: room for one
                         "max_history_bytes": 40_000}), name="oss-secure", route_prefix="/secure")
    secure = endpoint + "/secure"
    try:
        body, content_type = multipart(frames[0])
        headers = {"Content-Type": content_type, "X-Session-Id": "shared-name"}
        assert post(secure, body, headers)[0] == 401
        assert post(secure, body, {**headers, "Authorization": "Bearer nope"})[0] == 401
        a, b = {**headers, "Authorization": "Bearer client-a"}, {**headers, "Authorization": "Bearer client-b"}
        assert post(secure, body, a)[1]["x-history"] == "new"
        assert post(secure, body, a)[1]["x-history"] == "continued"
        assert post(secure, body, b)[1]["x-history"] == "new"  # same session id, other client: not a's history
        # b's history pushed a's out (bytes bound, least recently used first): a starts anew, b continues.
        assert post(secure, body, a)[1]["x-history"] == "new"
        request = urllib.request.Request(secure + "/v1/models", headers={"Authorization": "Bearer client-a"})
        with urllib.request.urlopen(request, timeout=30) as response:
            (model,) = json.loads(response.read())["models"]
        assert model["sessions"] == 1 and model["history_bytes"] == 30_720
        before = get_json(endpoint, "/v1/models")["models"][0]["pid"]

        def stream(index):
            """One valid 3-frame stream; returns its outputs."""
            outputs = []
            for frame in frames:
                data, kind = multipart(frame)
                status, _, reply = post(endpoint, data, {"Content-Type": kind, "X-Session-Id": f"load-{index}"})
                assert status == 200, reply
                outputs.append(reply)
            return outputs

        good = png_of(frames[0])
        junk = [(b"x" * 200_000, {"Content-Type": "image/png"}), (good[:40], {"Content-Type": "image/png"}),
                (b"--x\r\nbroken", {"Content-Type": "multipart/form-data; boundary=x"}),
                (good, {"Content-Type": "image/png", "X-Jitter": "9,9"})]
        with ThreadPoolExecutor(6) as pool:
            streams = [pool.submit(stream, i) for i in range(3)]
            bad = [pool.submit(post, endpoint, data, kind) for data, kind in junk * 3]
            results = [s.result() for s in streams]
            assert all(400 <= f.result()[0] < 500 for f in bad)
        assert results[0] == results[1] == results[2]  # every stream's frames equal, however requests interleaved
        alone = stream(99)
        assert results[0] == alone  # and equal to the same stream sent with nothing else going on
        assert get_json(endpoint, "/v1/models")["models"][0]["pid"] == before  # no replica restarted
    finally:
        serve.delete("oss-secure")


def test_a_1920x1080_frame_at_the_standard_tier_comes_back_2560x1440(endpoint):
    """The standard tier's ratio (1.333, i.e. 4/3) from its full render size gives its display size exactly, over
    HTTP through a real replica of the (untrained) standard student: a raw frame in, a raw frame out."""
    from ray import serve

    from oss_cluster.serving.app import build_app

    serve.run(build_app({"tiers": {"standard": {"model": "student_standard", "ratio": 1.333, "num_cpus": 0.25}},
                         "max_pixels": 1920 * 1080}), name="oss-standard", route_prefix="/standard")
    try:
        rng = np.random.default_rng(0)
        frame = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8).tobytes()
        status, headers, data = post(endpoint + "/standard", frame, {
            "Content-Type": "application/octet-stream", "X-Width": "1920", "X-Height": "1080", "X-Format": "rgb8",
            "Accept": "application/octet-stream", "X-Tier": "standard"})
        assert status == 200, data[:300]
        assert (headers["x-width"], headers["x-height"]) == ("2560", "1440") and len(data) == 2560 * 1440 * 3
    finally:
        serve.delete("oss-standard")
