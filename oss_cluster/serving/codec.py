"""HTTP request and response bodies of the upscaling endpoint.

A frame arrives as
  - a PNG body (Content-Type image/png), or
  - raw pixels (Content-Type application/octet-stream) with headers X-Width, X-Height and
    X-Format: rgb8 (H x W x 3 bytes), rgbf16 or rgbf32 (H x W x 3 little-endian half or single floats in
    [0, 1]); with X-Planes: motion,depth (either or both, in that order) the body continues with those
    planes, raw, in X-Plane-Format f32 (default) or f16: motion H x W x 2 (render pixels, pointing from the
    current pixel to where it was in the previous frame), depth H x W (view depth in scene units); or
  - multipart/form-data with a part `frame` (PNG or raw as above) and optional parts `motion`
    (float32 H x W x 2) and `depth` (float32 H x W), as above.
Optional headers: X-Jitter "jx,jy" (the frame's sub-pixel jitter in render pixels, default 0,0),
X-Session-Id (keys the stream's history), X-Tier (or the `tier` query parameter).
Every problem raises RequestError with an HTTP status and a message naming the field.
"""

from __future__ import annotations

import io
import math
import re

import numpy as np

FORMATS = {"rgb8": (np.dtype(np.uint8), 1), "rgbf16": (np.dtype("<f2"), 2), "rgbf32": (np.dtype("<f4"), 4)}
PLANE_FORMATS = {"f32": np.dtype("<f4"), "f16": np.dtype("<f2")}
PLANES = {"motion": 2, "depth": 1}  # channels per pixel
REPLY_FORMATS = ("rgb8", "rgbf16")  # raw replies (Accept: application/octet-stream, X-Reply-Format)


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _dimension(headers, name: str) -> int:
    text = headers.get(name)
    if text is None:
        raise RequestError(400, f"raw frames need header {name}")
    try:
        value = int(text)
    except ValueError:
        raise RequestError(400, f"header {name}: {text!r} is not an integer") from None
    if value <= 0:
        raise RequestError(400, f"header {name}: must be positive, got {value}")
    return value


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise RequestError(413, f"frame {width}x{height} has {width * height} pixels; the maximum is {max_pixels}")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"), (b"RIFF", "RIFF (WebP?)"),
               (b"II*\0", "TIFF"), (b"MM\0*", "TIFF"))


def decode_png(data: bytes, max_pixels: int) -> np.ndarray:
    """PNG bytes -> float32 [3, h, w] in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = max_pixels + 1
    if not data.startswith(PNG_SIGNATURE):
        known = next((name for magic, name in IMAGE_MAGIC if data.startswith(magic)), None)
        if known:
            raise RequestError(415, f"frame: labelled image/png but the body is {known}: send PNG, or raw pixels as "
                                    "application/octet-stream")
        raise RequestError(400, f"frame: labelled image/png but the body does not start with the PNG signature "
                                f"(first bytes {data[:8]!r})")
    try:
        image = Image.open(io.BytesIO(data))
        if image.format != "PNG":
            raise RequestError(415, f"frame: expected a PNG image, got {image.format}")
        check_pixels(image.width, image.height, max_pixels)
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except RequestError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        # PIL's messages can name in-memory objects ("<_io.BytesIO object at 0x...>"): keep only what helps.
        reason = re.sub(r"\s*<[^>]*object at 0x[0-9a-f]+>", "", str(err)).strip() or type(err).__name__
        raise RequestError(400, f"frame: not a readable PNG image (truncated or corrupt: {reason})") from None
    except Image.DecompressionBombError:
        raise RequestError(413, f"frame: more than {max_pixels} pixels") from None
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def raw_frame_layout(headers, max_pixels: int) -> tuple[int, int, str]:
    """(width, height, format) of a raw frame from X-Width/X-Height/X-Format."""
    width, height = _dimension(headers, "X-Width"), _dimension(headers, "X-Height")
    check_pixels(width, height, max_pixels)
    fmt = headers.get("X-Format", "rgb8")
    if fmt not in FORMATS:
        raise RequestError(415, f"header X-Format: {fmt!r} is not one of {', '.join(FORMATS)}")
    return width, height, fmt


def _raw_pixels(data: bytes | memoryview, width: int, height: int, fmt: str) -> np.ndarray:
    """Raw RGB bytes of a width x height frame in `fmt` -> float32 [3, h, w] in [0, 1]."""
    dtype, size = FORMATS[fmt]
    expected = width * height * 3 * size
    if len(data) != expected:
        raise RequestError(400, f"frame: {len(data)} bytes, but {width}x{height} {fmt} needs {expected}")
    pixels = np.frombuffer(data, dtype=dtype).reshape(height, width, 3).transpose(2, 0, 1)
    if fmt == "rgb8":  # one pass: convert, scale and lay out planar
        return np.multiply(pixels, np.float32(1 / 255), out=np.empty((3, height, width), np.float32), casting="unsafe")
    pixels = pixels.astype(np.float32, order="C")
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
        raise RequestError(422, f"frame: {fmt} values must be finite and in [0, 1]")
    return pixels


def decode_raw(data: bytes | memoryview, headers, max_pixels: int) -> np.ndarray:
    """Raw RGB bytes described by X-Width/X-Height/X-Format -> float32 [3, h, w] in [0, 1]."""
    return _raw_pixels(data, *raw_frame_layout(headers, max_pixels))


def decode_raw_body(data: bytes, headers, max_pixels: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A raw body: the frame, then the planes X-Planes lists -> (lr [3, h, w], {plane name: [channels, h, w]})."""
    listed = [name.strip() for name in headers.get("X-Planes", "").split(",") if name.strip()]
    unknown = [name for name in listed if name not in PLANES]
    if unknown or len(set(listed)) != len(listed):
        raise RequestError(400, f"header X-Planes: {headers.get('X-Planes')!r}: list motion and/or depth, once each")
    width, height, fmt = raw_frame_layout(headers, max_pixels)
    if not listed:
        return _raw_pixels(data, width, height, fmt), {}
    plane_format = headers.get("X-Plane-Format", "f32")
    if plane_format not in PLANE_FORMATS:
        raise RequestError(415, f"header X-Plane-Format: {plane_format!r} is not one of {', '.join(PLANE_FORMATS)}")
    frame_bytes = width * height * 3 * FORMATS[fmt][1]
    sizes = [width * height * PLANES[name] * PLANE_FORMATS[plane_format].itemsize for name in listed]
    if len(data) != frame_bytes + sum(sizes):
        parts = " + ".join([f"frame {frame_bytes}", *(f"{n} {b}" for n, b in zip(listed, sizes))])
        raise RequestError(400, f"body: {len(data)} bytes, but {width}x{height} {fmt} with planes {','.join(listed)} "
                                f"({plane_format}) needs {parts} = {frame_bytes + sum(sizes)}")
    view = memoryview(data)
    lr = _raw_pixels(view[:frame_bytes], width, height, fmt)
    planes, offset = {}, frame_bytes
    for name, size in zip(listed, sizes):
        planes[name] = decode_plane(view[offset:offset + size], name, (height, width), plane_format)
        offset += size
    return lr, planes


def decode_body(content_type: str, data: bytes, headers, max_pixels: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A whole (not multipart) body -> (lr [3, h, w], {plane name: [channels, h, w]}): a PNG, or a raw frame with
    the planes X-Planes lists after it."""
    if _kind(content_type) == "application/octet-stream" and data:
        return decode_raw_body(data, headers, max_pixels)
    return decode_frame(content_type, data, headers, max_pixels), {}


def _kind(content_type: str) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def decode_frame(content_type: str, data: bytes, headers, max_pixels: int) -> np.ndarray:
    kind = _kind(content_type)
    if not data:
        raise RequestError(400, "frame: empty body")
    if kind == "image/png":
        return decode_png(data, max_pixels)
    if kind == "application/octet-stream":
        if headers.get("X-Planes"):
            raise RequestError(400, "header X-Planes: planes follow a raw frame sent as the whole body, not a "
                                    "multipart part (send them as parts 'motion' and 'depth' there)")
        return decode_raw(data, headers, max_pixels)
    raise RequestError(415, f"frame: Content-Type {kind or '(none)'!r}: send image/png, application/octet-stream "
                            "(raw, with X-Width/X-Height/X-Format) or multipart/form-data")


def decode_plane(data: bytes | memoryview, name: str, size: tuple[int, int], plane_format: str = "f32") -> np.ndarray:
    """A raw H x W x channels plane `name` (motion: 2 channels, depth: 1; little-endian float32, or float16 with
    plane_format f16) -> float32 [channels, h, w]; size is the frame's (h, w)."""
    h, w = size
    channels, dtype = PLANES[name], PLANE_FORMATS[plane_format]
    expected = h * w * channels * dtype.itemsize
    if len(data) != expected:
        raise RequestError(422, f"{name}: {len(data)} bytes, but the {w}x{h} frame needs {expected} "
                                f"({plane_format}, {channels} per pixel)")
    plane = np.frombuffer(data, dtype=dtype).reshape(h, w, channels).transpose(2, 0, 1).astype(np.float32, order="C")
    if not np.isfinite(plane).all():
        raise RequestError(422, f"{name}: contains NaN or infinite values")
    return plane


def parse_jitter(text: str | None) -> np.ndarray:
    if text is None:
        return np.zeros(2, np.float32)
    parts = text.split(",")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if len(values) != 2 or not all(math.isfinite(v) and abs(v) <= 0.5 for v in values):
        raise RequestError(400, f"header X-Jitter: {text!r}: expected 'jx,jy', each within [-0.5, 0.5] render pixels")
    return np.asarray(values, np.float32)


def encode_png(rgb: np.ndarray) -> bytes:
    """uint8 [H, W, 3] -> PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [3, H, W] in [0, 1] -> uint8 [H, W, 3]."""
    return np.ascontiguousarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0))


def to_reply_pixels(image: np.ndarray, fmt: str) -> np.ndarray:
    """float [3, H, W] -> what a reply carries, [H, W, 3]: uint8 for PNG and rgb8, little-endian float16 in [0, 1]
    for rgbf16."""
    if fmt == "rgbf16":
        return np.ascontiguousarray(np.clip(image, 0, 1).transpose(1, 2, 0), dtype="<f2")
    return to_uint8(image)
