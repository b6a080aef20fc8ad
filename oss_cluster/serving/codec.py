"""HTTP request and response bodies of the upscaling endpoint.

A frame arrives as
  - a PNG body (Content-Type image/png), or
  - raw pixels (Content-Type application/octet-stream) with headers X-Width, X-Height and
    X-Format: rgb8 (H x W x 3 bytes) or rgbf32 (H x W x 3 little-endian float32 in [0, 1]), or
  - multipart/form-data with a part `frame` (PNG or raw as above) and optional parts `motion`
    (float32 H x W x 2, render pixels, pointing from the current pixel to where it was in the
    previous frame) and `depth` (float32 H x W, view depth in scene units).
Optional headers: X-Jitter "jx,jy" (the frame's sub-pixel jitter in render pixels, default 0,0),
X-Session-Id (keys the stream's history), X-Tier (or the `tier` query parameter).
Every problem raises RequestError with an HTTP status and a message naming the field.
"""

from __future__ import annotations

import io
import math
import re

import numpy as np

FORMATS = {"rgb8": (np.uint8, 1), "rgbf32": (np.dtype("<f4"), 4)}


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


def decode_raw(data: bytes, headers, max_pixels: int) -> np.ndarray:
    """Raw RGB bytes described by X-Width/X-Height/X-Format -> float32 [3, h, w] in [0, 1]."""
    width, height = _dimension(headers, "X-Width"), _dimension(headers, "X-Height")
    check_pixels(width, height, max_pixels)
    fmt = headers.get("X-Format", "rgb8")
    if fmt not in FORMATS:
        raise RequestError(415, f"header X-Format: {fmt!r} is not one of {', '.join(FORMATS)}")
    dtype, size = FORMATS[fmt]
    expected = width * height * 3 * size
    if len(data) != expected:
        raise RequestError(400, f"frame: {len(data)} bytes, but {width}x{height} {fmt} needs {expected}")
    pixels = np.frombuffer(data, dtype=dtype).reshape(height, width, 3).astype(np.float32)
    if fmt == "rgb8":
        pixels /= 255.0
    elif not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
        raise RequestError(422, "frame: rgbf32 values must be finite and in [0, 1]")
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def decode_frame(content_type: str, data: bytes, headers, max_pixels: int) -> np.ndarray:
    kind = (content_type or "").split(";")[0].strip().lower()
    if not data:
        raise RequestError(400, "frame: empty body")
    if kind == "image/png":
        return decode_png(data, max_pixels)
    if kind == "application/octet-stream":
        return decode_raw(data, headers, max_pixels)
    raise RequestError(415, f"frame: Content-Type {kind or '(none)'!r}: send image/png, application/octet-stream "
                            "(raw, with X-Width/X-Height/X-Format) or multipart/form-data")


def decode_plane(data: bytes, name: str, channels: int, size: tuple[int, int]) -> np.ndarray:
    """A float32 H x W x channels part -> [channels, h, w]; size is the frame's (h, w)."""
    h, w = size
    expected = h * w * channels * 4
    if len(data) != expected:
        raise RequestError(422, f"{name}: {len(data)} bytes, but the {w}x{h} frame needs {expected} "
                                f"(float32, {channels} per pixel)")
    plane = np.frombuffer(data, dtype="<f4").reshape(h, w, channels)
    if not np.isfinite(plane).all():
        raise RequestError(422, f"{name}: contains NaN or infinite values")
    return np.ascontiguousarray(plane.transpose(2, 0, 1).astype(np.float32))


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
