"""Video clips a person can play: labelled panels side by side (e.g. ground truth | TAAU | model), H.264 MP4.

Encoded with PyAV (FFmpeg's libraries, bundled in its wheels). Small frames are enlarged by a whole
factor with nearest-neighbour sampling, so pixels stay pixels and flicker stays visible.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

LABEL_HEIGHT = 16
MIN_CLIP_HEIGHT = 240  # enlarge smaller frames by a whole factor up to at least this height


def labelled_row(panels: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """[H, W, 3] uint8 panels side by side under a white label bar: [LABEL_HEIGHT + H*s, n*W*s, 3] (s: enlargement)."""
    height, width = panels[0].shape[:2]
    scale = max(1, -(-MIN_CLIP_HEIGHT // height))
    row = np.concatenate([np.kron(p, np.ones((scale, scale, 1), np.uint8)) for p in panels], axis=1)
    canvas = Image.new("RGB", (row.shape[1], row.shape[0] + LABEL_HEIGHT), "white")
    canvas.paste(Image.fromarray(row), (0, LABEL_HEIGHT))
    draw = ImageDraw.Draw(canvas)
    for index, label in enumerate(labels):
        draw.text((index * width * scale + 3, 2), label, fill="black")
    return np.asarray(canvas)


def encode_mp4(frames: list[np.ndarray], fps: int = 15) -> bytes:
    """[H, W, 3] uint8 frames -> H.264 MP4 bytes (yuv420p; odd sizes are padded by one pixel)."""
    import av

    height, width = frames[0].shape[:2]
    padded_h, padded_w = height + height % 2, width + width % 2
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = padded_w, padded_h, "yuv420p"
        stream.options = {"crf": "18", "preset": "medium"}
        for image in frames:
            if (padded_h, padded_w) != (height, width):
                image = np.pad(image, ((0, padded_h - height), (0, padded_w - width), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def decode_mp4(data: bytes) -> list[np.ndarray]:
    """Every frame of an MP4 as [H, W, 3] uint8 (what a player shows)."""
    import av

    with av.open(io.BytesIO(data)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
