"""Comparison strips: LR · bicubic · model · GT · |error| · features, side by side in one PNG."""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

from ..baselines import bicubic

LABELS = ("LR", "bicubic", "model", "GT", "|error| x4", "features")
LABEL_HEIGHT = 14  # pixels of the label row above the panels


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [0, 1] -> [H, W, 3] uint8."""
    return (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


@torch.no_grad()
def comparison_strip(lr: torch.Tensor, jitter: torch.Tensor, output: torch.Tensor, gt: torch.Tensor,
                     features: torch.Tensor | None = None) -> Image.Image:
    """lr [3, h, w], jitter [2], output and gt [3, H, W], features [C, h, w] or None -> one labelled PNG row."""
    out_size = tuple(gt.shape[-2:])
    panels = [
        F.interpolate(lr[None], size=out_size, mode="nearest")[0],
        bicubic(lr[None], out_size, jitter[None])[0],
        output,
        gt,
        ((output - gt).abs() * 4).clamp(0, 1),
    ]
    if features is not None:
        energy = features.abs().mean(0, keepdim=True)
        energy = (energy - energy.min()) / (energy.max() - energy.min()).clamp(min=1e-8)
        panels.append(F.interpolate(energy[None], size=out_size, mode="bilinear", align_corners=False)[0].expand(3, -1, -1))
    row = np.concatenate([_to_uint8(p) for p in panels], axis=1)
    canvas = Image.new("RGB", (row.shape[1], row.shape[0] + LABEL_HEIGHT), "white")
    canvas.paste(Image.fromarray(row), (0, LABEL_HEIGHT))
    draw = ImageDraw.Draw(canvas)
    for index, label in enumerate(LABELS[: len(panels)]):
        draw.text((index * out_size[1] + 2, 1), label, fill="black")
    # The layout travels with the picture (PNG text), so viewers can cut out panels (the dashboard's slider).
    canvas.info["panels"] = ",".join(LABELS[: len(panels)])
    canvas.info["panel_size"] = f"{out_size[1]}x{out_size[0]}"
    canvas.info["label_height"] = str(LABEL_HEIGHT)
    return canvas


def strip_layout(image: Image.Image) -> dict | None:
    """{"panels": [labels], "width", "height", "top"} from a strip's PNG text, or None for a strip without it."""
    text = getattr(image, "text", None) or image.info
    if "panels" not in text or "panel_size" not in text:
        return None
    width, height = (int(v) for v in text["panel_size"].split("x"))
    return {"panels": text["panels"].split(","), "width": width, "height": height,
            "top": int(text.get("label_height", LABEL_HEIGHT))}


def png_bytes(image: Image.Image) -> bytes:
    """PNG bytes, keeping the image's text entries (a strip's panel layout)."""
    metadata = PngInfo()
    for key in ("panels", "panel_size", "label_height"):
        if key in image.info:
            metadata.add_text(key, str(image.info[key]))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=metadata)
    return buffer.getvalue()


@torch.no_grad()
def model_strip(model, window_tensors: dict, frame: int = -1) -> Image.Image:
    """Run a model over one held-out window and draw the strip for one of its frames (the features
    panel: the network's feature energy on that frame alone, without history)."""
    from ..models.accumulate import empty_history
    from ..models.temporal import run_window

    was_training = model.training
    model.eval()
    batch = {k: v[None] for k, v in window_tensors.items()}
    outputs, _ = run_window(model, batch)
    k = frame % batch["lr"].shape[1]
    features = None
    if hasattr(model, "features") and hasattr(model, "reproject"):
        frame_inputs = [batch[key][:, k] for key in ("lr", "depth", "jitter", "motion")]
        history, previous_depth = empty_history(frame_inputs[0], tuple(outputs.shape[-2:]))
        reprojected = model.reproject(*frame_inputs, previous_depth, history)
        features = model.features(model.assemble(*frame_inputs, reprojected))[0]
    model.train(was_training)
    return comparison_strip(batch["lr"][0, k], batch["jitter"][0, k], outputs[0, k], batch["gt"][0, k], features)
