"""The Ray Serve upscaling application: a FastAPI ingress and one upscaler deployment per tier.

    POST /v1/upscale   a frame (see codec.py) -> the upscaled PNG, or raw pixels with Accept:
                       application/octet-stream (rgb8, or rgbf16 with X-Reply-Format: rgbf16), streamed;
                       X-Session-Id keys the stream's history
    GET  /v1/models    tiers, ratios, backends, versions
    GET  /healthz      ok when every tier's replicas answer
    GET  /dashboard/   the research dashboard of the app's storage (with `dashboard.enabled`); a client on
                       another machine needs the bearer token in $OSS_DASHBOARD_TOKEN, as for
                       `python -m oss_cluster.dashboard serve` off localhost

Requests from other machines need an API token ($OSS_SERVE_TOKEN or the lines of `api_token_file` on
the Serve nodes; without one configured they get 401); session ids are scoped to the caller's token.
Bodies are bounded before they are read (413); decoding and encoding run on worker threads, off the
ingress's event loop, so one large PNG does not stall every other request. Each tier's `Upscaler` replica loads its export
(manifest + ONNX / TensorRT files, sha256-checked) or, for development, an untrained student; picks
TensorRT where the worker has a GPU and an engine, else ONNX Runtime; batches concurrent requests with
@serve.batch; and keeps each session's previous output history buffer and depth (what the temporal
student warps and accumulates, and what its disocclusion is derived from) in half precision, in an LRU
bounded in sessions and bytes. A frame without motion vectors and depth is answered without history
(warping by assumed-zero motion would smear the picture): `X-History: unavailable`. Replicas ask for
the custom resource `tier_<tier>`, which cluster.yaml's target-hardware node types carry, so they land
there.
"""


import asyncio
import hashlib
import logging
import os
import time
from collections import OrderedDict
from typing import Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import Field, PositiveFloat, PositiveInt, ValidationError
from ray import serve

from ..access import bearer_token, is_loopback, token_matches
from ..cluster import tier_gpus, tier_pinning
from ..config import ConfigError, Section, StorageConfig, TierName
from ..models.accumulate import HISTORY_CHANNELS
from ..storage import storage_from_config
from ..tiers import scaled_size
from .codec import (PLANES, REPLY_FORMATS, RequestError, decode_body, decode_frame, decode_plane, encode_png,
                    parse_jitter, to_reply_pixels)


class TierServeConfig(Section):
    manifest: str | None = None  # storage key of an export manifest (runs/<name>/exports/<tier>-x<r>/manifest.json)
    model: str | None = None  # without a manifest: an untrained student (development only)
    ratio: PositiveFloat = 1.5  # output/input per axis for an untrained student (a manifest carries its own)
    replicas: PositiveInt = 1
    # auto: the fp16 TensorRT engine where one can run, else fp32 ONNX; or fp32 | int8 (the export's QDQ model) |
    # fp16 | fp8 (TensorRT engines); what the replica cannot run is an error naming what the manifest has
    precision: Literal["auto", "fp32", "int8", "fp16", "fp8"] = "auto"
    num_cpus: PositiveFloat = 1.0
    # GPUs per replica; auto: 1 where the tier's target nodes (tier_<tier>) have a GPU, so TensorRT can run there
    num_gpus: Literal["auto"] | float = Field("auto", union_mode="left_to_right")
    tier_resource: PositiveFloat = 0.01  # units of tier_<tier> per replica


class DashboardServeConfig(Section):
    enabled: bool = False  # serve the research dashboard of `storage` at /dashboard/
    token_env: str = "OSS_DASHBOARD_TOKEN"  # env var on the Serve nodes holding the bearer token
    refresh_s: PositiveFloat = 30.0  # rebuild interval while runs train


class ServeAppConfig(Section):
    storage: StorageConfig = Field(default_factory=StorageConfig)
    dashboard: DashboardServeConfig = Field(default_factory=DashboardServeConfig)
    tiers: dict[TierName, TierServeConfig] = Field(
        default_factory=lambda: {"pico": TierServeConfig(model="student_pico")}, min_length=1)
    # auto: pin when a node of the cluster (alive, or a node type the autoscaler can launch) has tier_<tier>
    pin_to_tier_workers: Literal["auto", "required", "off"] = "auto"
    backend: Literal["auto", "onnxruntime", "tensorrt"] = "auto"
    max_pixels: PositiveInt = 2560 * 1440  # largest accepted input frame (the Heavy tier's render size)
    max_batch_size: PositiveInt = 4
    batch_wait_timeout_s: float = Field(0.005, ge=0)
    max_sessions: PositiveInt = 64  # per replica; the least recently used history is dropped
    max_history_bytes: PositiveInt = 512 * 2**20  # per replica: session histories (half precision) beyond it are evicted
    max_body_bytes: PositiveInt | None = None  # largest request body; default: what max_pixels needs (rgbf32 + planes)
    api_token_env: str = "OSS_SERVE_TOKEN"  # env var on the Serve nodes holding an API bearer token
    api_token_file: str | None = None  # or a file on the Serve nodes with one token per line (one per client)
    threads: PositiveInt = 1  # ONNX Runtime intra-op threads per replica

    @property
    def body_limit(self) -> int:
        """Bytes a request body may have: an rgbf32 frame of max_pixels, its motion and depth planes, and 64 KiB of
        multipart framing, unless max_body_bytes says otherwise."""
        return self.max_body_bytes or self.max_pixels * (3 * 4 + 2 * 4 + 4) + 65536


def _load(tier: str, tier_cfg: TierServeConfig, app_cfg: ServeAppConfig):
    from ..export import read_manifest
    from .backends import load_backend, untrained_manifest

    if tier_cfg.manifest:
        storage = storage_from_config(app_cfg.storage)
        manifest = read_manifest(storage, tier_cfg.manifest)
    elif tier_cfg.model:
        storage, manifest = None, untrained_manifest(tier_cfg.model, tier_cfg.ratio)
    else:
        raise ConfigError(f"tiers.{tier}: give manifest (an export) or model (an untrained student)")
    if manifest["tier"] != tier:
        raise ConfigError(f"tiers.{tier}: the export is for tier {manifest['tier']!r}")
    return manifest, load_backend(manifest, storage, app_cfg.backend, app_cfg.threads, tier_cfg.precision)


@serve.deployment
class Upscaler:
    """One tier's student. `upscale` takes a decoded frame and returns uint8 [H, W, 3]."""

    def __init__(self, tier: str, tier_cfg: dict, app_cfg: dict):
        self.tier = tier
        self.app_cfg = ServeAppConfig.model_validate(app_cfg)
        self.manifest, self.backend = _load(tier, TierServeConfig.model_validate(tier_cfg), self.app_cfg)
        self.ratio = float(self.manifest["ratio"])
        # (history buffer, depth) per session, in half precision, least recently used first
        self.sessions: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.history_bytes = 0
        self.frames = 0
        self.upscale_batch.set_max_batch_size(self.app_cfg.max_batch_size)
        self.upscale_batch.set_batch_wait_timeout_s(self.app_cfg.batch_wait_timeout_s)

    def info(self) -> dict:
        return {"tier": self.tier, "ratio": self.ratio, "backend": self.backend.name,
                "precision": self.backend.precision,
                "backend_version": self.backend.version, "model": self.manifest["model"],
                "source_run": self.manifest.get("source_run"), "source_step": self.manifest.get("source_step"),
                "onnx_sha256": self.manifest["files"]["onnx"].get("sha256"), "frames_served": self.frames,
                "sessions": len(self.sessions), "history_bytes": self.history_bytes, "pid": os.getpid()}

    def _remember(self, session: str, history: np.ndarray, depth: np.ndarray) -> None:
        """Keep a session's history in half precision and evict the least recently used beyond the bounds."""
        self._forget(session)
        stored = (history.astype(np.float16), depth.astype(np.float16))
        self.sessions[session] = stored
        self.history_bytes += stored[0].nbytes + stored[1].nbytes
        while len(self.sessions) > 1 and (len(self.sessions) > self.app_cfg.max_sessions or
                                          self.history_bytes > self.app_cfg.max_history_bytes):
            oldest = next(iter(self.sessions))
            reason = (f"{len(self.sessions)} sessions > max_sessions {self.app_cfg.max_sessions}"
                      if len(self.sessions) > self.app_cfg.max_sessions else
                      f"{self.history_bytes} history bytes > max_history_bytes {self.app_cfg.max_history_bytes}")
            self._forget(oldest)
            logger.warning("upscaler %s: evicted the least recently used session history (%s)", self.tier, reason)

    def _forget(self, session: str) -> None:
        stored = self.sessions.pop(session, None)
        if stored is not None:
            self.history_bytes -= stored[0].nbytes + stored[1].nbytes

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        return scaled_size(h, w, self.ratio)  # exact: 1920x1080 at 4/3 is 2560x1440

    async def upscale(self, frame: dict) -> dict:
        return await self.upscale_batch(frame)

    def _run(self, inputs: dict, replies: list[str]):
        """(reply pixels per frame, history buffers, inference ms) of one batch, on an executor thread: the
        conversion to what each reply carries happens here too, off the replica's event loop."""
        started = time.perf_counter()
        outputs, histories = self.backend.run(inputs)
        elapsed_ms = (time.perf_counter() - started) * 1e3
        return [to_reply_pixels(output, reply) for output, reply in zip(outputs, replies)], histories, elapsed_ms

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.005)
    async def upscale_batch(self, frames: list[dict]) -> list[dict]:
        # Frames of one size run as one batch; a session's history is only used when its size matches.
        results: list[dict | None] = [None] * len(frames)
        groups: dict[tuple, list[int]] = {}
        for index, frame in enumerate(frames):
            groups.setdefault(frame["lr"].shape, []).append(index)
        for shape, indices in groups.items():
            h, w = shape[-2:]
            H, W = self.output_size(h, w)
            previous, previous_depth, history = [], [], []
            for i in indices:
                stored = self.sessions.get(frames[i]["session"]) if frames[i]["session"] else None
                if not frames[i]["geometry"]:
                    stored, status = None, "unavailable"  # no motion and depth: no warp, no disocclusion test
                elif stored is not None and stored[0].shape == (HISTORY_CHANNELS, H, W):
                    status = "continued"
                else:
                    stored, status = None, "new"
                # Zeros: no history buffer, and a previous depth of 0 marks every pixel disoccluded.
                previous.append(stored[0].astype(np.float32) if stored else np.zeros((HISTORY_CHANNELS, H, W), np.float32))
                previous_depth.append(stored[1].astype(np.float32) if stored else np.zeros((1, h, w), np.float32))
                history.append(status)
            inputs = {
                "lr": np.stack([frames[i]["lr"] for i in indices]),
                "depth": np.stack([frames[i]["depth"] for i in indices]),
                "jitter": np.stack([frames[i]["jitter"] for i in indices]),
                "motion": np.stack([frames[i]["motion"] for i in indices]),
                "previous_depth": np.stack(previous_depth), "previous": np.stack(previous),
            }
            replies = [frames[i]["reply"] for i in indices]
            outputs, histories, elapsed_ms = await asyncio.get_running_loop().run_in_executor(
                None, self._run, inputs, replies)
            for j, i in enumerate(indices):
                session = frames[i]["session"]
                if session and not frames[i]["geometry"]:  # nothing to continue from: the next frame starts anew
                    self._forget(session)
                elif session:
                    self._remember(session, histories[j], frames[i]["depth"])
                results[i] = {"image": outputs[j], "history": history[j], "batch": len(indices),
                              "inference_ms": elapsed_ms, "backend": self.backend.name,
                              "timing_includes": self.backend.timing_includes}
        self.frames += len(frames)
        return results


api = FastAPI(title="OpenSuperSampling upscaling endpoint")
logger = logging.getLogger("ray.serve")
REPLY_TYPES = ("image/png", "application/octet-stream")
STREAM_CHUNK = 1 << 20  # raw replies go out in chunks of this many bytes, straight from the array


def _chunks(pixels: np.ndarray):
    view = memoryview(pixels).cast("B")
    for start in range(0, len(view), STREAM_CHUNK):
        yield bytes(view[start:start + STREAM_CHUNK])  # bytes: what Serve's proxy can pass on


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@serve.deployment(ray_actor_options={"num_cpus": 0})  # it only decodes, encodes and forwards
@serve.ingress(api)
class Gateway:
    def __init__(self, upscalers: dict, app_cfg: dict):
        self.upscalers = upscalers  # tier -> DeploymentHandle
        self.cfg = ServeAppConfig.model_validate(app_cfg)
        self.dashboard = None
        if self.cfg.dashboard.enabled:
            import tempfile
            from pathlib import Path

            from ..dashboard.site import Site

            token = os.environ.get(self.cfg.dashboard.token_env) or None
            self.dashboard = Site(storage_from_config(self.cfg.storage), Path(tempfile.mkdtemp(prefix="oss-dashboard-")),
                                  token, self.cfg.dashboard.refresh_s).start(background=True)

    @api.get("/dashboard")
    async def dashboard_root(self):
        return RedirectResponse("/dashboard/")

    @api.get("/dashboard/{path:path}")
    async def dashboard_file(self, path: str, request: Request):
        """The dashboard's pages, data and media; the same token rule as `python -m oss_cluster.dashboard serve`."""
        from ..dashboard.site import COOKIE, content_type

        if self.dashboard is None:
            return _error(404, "the dashboard is off in this app (serve app args: dashboard.enabled: true)")
        site = self.dashboard
        refusal, set_cookie = site.authorize(request.headers.get("Authorization"), request.headers.get("Cookie"),
                                             request.url.query, request.client.host if request.client else None)
        if refusal:
            return JSONResponse({"error": f"401 unauthorized: {refusal} (the Serve nodes' "
                                          f"${self.cfg.dashboard.token_env})"},
                                status_code=401, headers={"WWW-Authenticate": 'Bearer realm="oss-dashboard"'})
        if set_cookie:
            response = RedirectResponse(f"/dashboard/{path}", status_code=303)
            response.set_cookie(COOKIE, site.token, httponly=True, samesite="strict", path="/dashboard")
            return response
        target = site.resolve(path)
        if target is None:
            message = "the dashboard is still being built" if site.builds == 0 else f"not found: {path}"
            return _error(503 if site.builds == 0 else 404, message)
        return FileResponse(target, media_type=content_type(target), headers={"Cache-Control": "no-cache"})

    @api.get("/healthz")
    async def healthz(self):
        try:
            infos = await asyncio.wait_for(asyncio.gather(*(h.info.remote() for h in self.upscalers.values())), 10)
        except Exception as err:  # a tier that cannot answer makes the service unhealthy
            return _error(503, f"unhealthy: {type(err).__name__}: {err}")
        return {"status": "ok", "tiers": sorted(info["tier"] for info in infos)}

    @api.get("/v1/models")
    async def models(self, request: Request):
        try:
            self._caller(request)
        except RequestError as err:
            return _error(err.status, err.message)
        infos = await asyncio.gather(*(h.info.remote() for h in self.upscalers.values()))
        import onnxruntime
        import ray

        return {"models": infos, "versions": {"ray": ray.__version__, "onnxruntime": onnxruntime.__version__},
                "max_pixels": self.cfg.max_pixels}

    def _caller(self, request: Request) -> str:
        """Who is calling, for scoping sessions: a digest of the bearer token (empty without one). Raises 401
        when the app has an API token and the request lacks it, or has none and the client is not on this machine."""
        tokens = self._tokens()
        given = bearer_token(request.headers.get("Authorization"))
        if not tokens:
            if not is_loopback(request.client.host if request.client else None):
                raise RequestError(401, f"this endpoint answers other machines only with an API token: set "
                                        f"{self.cfg.api_token_env} on the Serve nodes and send Authorization: Bearer")
            return ""
        if not token_matches(given, tokens):
            raise RequestError(401, "missing or wrong API token: send Authorization: Bearer <token>")
        return hashlib.sha256(given.encode()).hexdigest()[:16]

    def _tokens(self) -> list[str]:
        """The API tokens: $api_token_env and the lines of api_token_file (read per request, so rotation works)."""
        tokens = [os.environ[self.cfg.api_token_env]] if os.environ.get(self.cfg.api_token_env) else []
        if self.cfg.api_token_file:
            try:
                with open(self.cfg.api_token_file) as handle:
                    tokens += [line.strip() for line in handle if line.strip()]
            except OSError as err:
                raise RequestError(500, f"api_token_file {self.cfg.api_token_file} cannot be read ({err.strerror}): "
                                        "refusing every request") from None
        return tokens

    def _tier(self, request: Request) -> tuple[str, str]:
        """(tier, how it was chosen): ?tier= and X-Tier must agree; without either, the first configured tier."""
        query, header = request.query_params.get("tier"), request.headers.get("X-Tier")
        if query and header and query != header:
            raise RequestError(400, f"?tier={query} and X-Tier: {header} disagree: give one")
        tier = query or header
        if tier is None:
            return next(iter(self.upscalers)), "default"
        if tier not in self.upscalers:
            raise RequestError(404, f"unknown tier {tier!r}; served tiers: {', '.join(self.upscalers)}")
        return tier, "query" if query else "header"

    async def _body(self, request: Request) -> bytes:
        """The request body, refused with 413 as soon as it is known to exceed the limit (Content-Length first,
        then while it streams), so an oversized body is never read whole."""
        limit = self.cfg.body_limit
        declared = request.headers.get("Content-Length")
        if declared is not None:
            if not declared.isdigit():
                raise RequestError(400, f"header Content-Length: {declared!r} is not a byte count")
            if int(declared) > limit:
                raise RequestError(413, f"body of {int(declared)} bytes; the limit is {limit} (max_body_bytes)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"body over {limit} bytes (max_body_bytes); stopped reading")
            chunks.append(chunk)
        body = b"".join(chunks)
        request._body = body  # starlette replays it to request.form()
        return body

    @api.post("/v1/upscale")
    async def upscale(self, request: Request):
        try:
            caller = self._caller(request)
            tier, chosen = self._tier(request)
            accept = request.headers.get("Accept", "image/png")
            wanted = [t.split(";")[0].strip() for t in accept.split(",") if t.strip()]
            if not any(t in REPLY_TYPES or t in ("*/*", "image/*") for t in wanted):
                raise RequestError(406, f"Accept: {accept!r}: replies are image/png or application/octet-stream (rgb8)")
            raw_reply = "application/octet-stream" in wanted and "image/png" not in wanted
            reply = request.headers.get("X-Reply-Format")
            if reply is not None and not raw_reply:
                raise RequestError(400, f"X-Reply-Format: {reply} is for raw replies: send it with Accept: "
                                        "application/octet-stream")
            if reply is not None and reply not in REPLY_FORMATS:
                raise RequestError(400, f"X-Reply-Format: {reply!r} is not one of {', '.join(REPLY_FORMATS)}")
            frame = await self._decode(request, await self._body(request))
        except RequestError as err:
            return _error(err.status, err.message)
        frame["reply"] = (reply or "rgb8") if raw_reply else "png"
        if frame["session"]:
            frame["session"] = f"{caller}:{frame['session']}"  # one caller cannot touch another's history
        result = await self.upscalers[tier].upscale.remote(frame)
        pixels = result["image"]
        headers = {"X-Width": str(pixels.shape[1]), "X-Height": str(pixels.shape[0]), "X-Backend": result["backend"],
                   "X-History": result["history"], "X-Batch-Size": str(result["batch"]),
                   "X-Inference-Ms": f"{result['inference_ms']:.3f}", "X-Inference-Includes": result["timing_includes"],
                   "X-Tier": tier, "X-Tier-Source": chosen}
        if result["history"] == "unavailable":
            headers["X-History-Reason"] = ("the request has no motion vectors and depth (raw planes listed in "
                                           "X-Planes, or multipart parts 'motion' and 'depth'): upscaled from this "
                                           "frame alone")
        if raw_reply:
            headers.update({"X-Format": frame["reply"], "Content-Length": str(pixels.nbytes)})
            return StreamingResponse(_chunks(pixels), media_type="application/octet-stream", headers=headers)
        return Response(await asyncio.to_thread(encode_png, pixels), media_type="image/png", headers=headers)

    async def _decode(self, request: Request, body: bytes) -> dict:
        content_type = request.headers.get("Content-Type", "")
        headers = request.headers
        if content_type.startswith("multipart/form-data"):
            try:
                form = await request.form(max_files=3, max_fields=3, max_part_size=self.cfg.body_limit)
            except Exception as err:
                raise RequestError(400, f"malformed multipart body: {err}") from None
            known = {"frame", *PLANES}
            unknown = set(form.keys()) - known
            if unknown:
                raise RequestError(400, f"unknown form fields {sorted(unknown)} (known: frame, motion, depth)")
            if "frame" not in form or not hasattr(form["frame"], "read"):
                raise RequestError(400, "multipart body needs a file part 'frame'")
            part = form["frame"]
            data = await part.read()
            lr = await asyncio.to_thread(decode_frame, part.content_type or "", data, headers, self.cfg.max_pixels)
            planes = {}
            for name in PLANES:
                if name in form:
                    if not hasattr(form[name], "read"):
                        raise RequestError(400, f"{name}: must be a file part (raw float32 bytes)")
                    data = await form[name].read()
                    planes[name] = await asyncio.to_thread(decode_plane, data, name, lr.shape[-2:])
        else:
            lr, planes = await asyncio.to_thread(decode_body, content_type, body, headers, self.cfg.max_pixels)
        h, w = lr.shape[-2:]
        missing = {name: np.zeros((channels, h, w), np.float32) for name, channels in PLANES.items() if name not in planes}
        return {"lr": lr, "jitter": parse_jitter(headers.get("X-Jitter")), **planes, **missing,
                "geometry": not missing, "session": headers.get("X-Session-Id")}


def build_app(args: dict | None = None):
    """Serve application builder: `serve run serve.app:app` or serve/config.yaml's args."""
    import ray

    try:
        cfg = ServeAppConfig.model_validate(args or {})
    except ValidationError as err:
        raise ConfigError(f"serve app args: {err}") from None
    upscalers = {}
    for tier, tier_cfg in cfg.tiers.items():
        gpus = tier_gpus(tier) if tier_cfg.num_gpus == "auto" else tier_cfg.num_gpus
        if gpus < 0:
            raise ConfigError(f"serve app args: tiers.{tier}.num_gpus: {gpus} is negative")
        options: dict = {"num_cpus": tier_cfg.num_cpus, "num_gpus": gpus}
        if ray.is_initialized():
            pinned = tier_pinning(tier, tier_cfg.tier_resource, cfg.pin_to_tier_workers, f"serve: {tier} replicas")
            if pinned:
                options["resources"] = pinned
        upscalers[tier] = Upscaler.options(name=f"upscaler_{tier}", num_replicas=tier_cfg.replicas,
                                           ray_actor_options=options).bind(tier, tier_cfg.model_dump(),
                                                                           cfg.model_dump(mode="json"))
    return Gateway.bind(upscalers, cfg.model_dump(mode="json"))
