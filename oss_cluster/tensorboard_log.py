"""TensorBoard event files for a run, kept in the run's folder in storage (local or S3).

    runs/<name>/tensorboard/events.out.tfevents.<time>.<host>.<pid>        scalars of this process
    runs/<name>/tensorboard/events.out.tfevents.<time>.<host>.strip-<step>  one comparison strip each

so `tensorboard --logdir <storage>/runs` shows every run beside the dashboard. tensorboardX writes into a
local temporary folder; the scalar file is copied to storage (an atomic whole-file write) after every
evaluation, at most every `upload_every_s` seconds between them and when the run ends. Each strip gets its
own small file, written once, so a long run never re-uploads its images.
"""

from __future__ import annotations

import io
import math
import numbers
import shutil
import tempfile
import time
from pathlib import Path

from .storage import Storage

FOLDER = "tensorboard"


def _scalar(value) -> float | None:
    """A finite number TensorBoard can plot, or None (strings such as 'unavailable: ...', lists, NaN)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class TensorBoardLog:
    """Writes one run's scalars and images as TensorBoard events under `<prefix>/tensorboard/`."""

    def __init__(self, storage: Storage, prefix: str, upload_every_s: float = 60.0):
        self.storage = storage
        self.folder = f"{prefix}/{FOLDER}"
        self.upload_every_s = upload_every_s
        self._local = Path(tempfile.mkdtemp(prefix="oss-tb-"))
        self._writer = None
        self._uploaded_at = 0.0

    def _scalars_writer(self):
        if self._writer is None:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(logdir=str(self._local / "scalars"), flush_secs=3600)
        return self._writer

    def scalars(self, group: str, step: int, metrics: dict, upload: bool = False) -> None:
        """Every numeric entry of `metrics` as `<group>/<key>` at `step`."""
        writer = self._scalars_writer()
        for key, value in metrics.items():
            number = _scalar(value)
            if number is not None:
                writer.add_scalar(f"{group}/{key}", number, step)
        if upload or time.monotonic() - self._uploaded_at >= self.upload_every_s:
            self.upload()

    def image(self, tag: str, step: int, png: bytes) -> str:
        """One PNG as an image event in its own file, written to storage at once; returns its key."""
        import numpy as np
        from PIL import Image
        from tensorboardX import SummaryWriter

        pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        folder = Path(tempfile.mkdtemp(prefix="oss-tb-image-", dir=self._local))
        writer = SummaryWriter(logdir=str(folder), filename_suffix=f".{tag.replace('/', '-')}-{step}")
        writer.add_image(tag, pixels, step, dataformats="HWC")
        writer.close()
        (path,) = folder.glob("events.out.tfevents.*")
        key = f"{self.folder}/{path.name}"
        self.storage.write_bytes(key, path.read_bytes())
        shutil.rmtree(folder, ignore_errors=True)
        return key

    def upload(self) -> None:
        """Copy the scalar event file to storage as it is now."""
        if self._writer is None:
            return
        self._writer.flush()
        for path in (self._local / "scalars").glob("events.out.tfevents.*"):
            self.storage.write_bytes(f"{self.folder}/{path.name}", path.read_bytes())
        self._uploaded_at = time.monotonic()

    def close(self) -> None:
        self.upload()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        shutil.rmtree(self._local, ignore_errors=True)
