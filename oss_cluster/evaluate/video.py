"""A perceptual video metric: ColorVideoVDP (package cvvdp, Mantiuk et al. 2024), in JOD (10 = identical).

It models the visibility of spatial and temporal differences (flicker included) on a stated display;
its display models and calibration ship inside the package, so it runs offline. Where it cannot be
imported or fails, `available` is False and `reason` says why: reports then say "unavailable".
"""

from __future__ import annotations

import numpy as np

DISPLAY = "standard_fhd"  # cvvdp's 24-inch 1920x1080 SDR office display (200 cd/m^2)
FRAMES_PER_SECOND = 60  # games are judged at their frame rate


class VideoMetric:
    name = f"ColorVideoVDP (JOD, display {DISPLAY}, {FRAMES_PER_SECOND} fps)"

    def __init__(self):
        self.metric, self.reason = None, ""
        try:
            import torch
            import pycvvdp

            self.metric = pycvvdp.cvvdp(display_name=DISPLAY, device=torch.device("cpu"), quiet=True)
        except Exception as err:  # not installed, or its data did not load: report why
            self.reason = f"ColorVideoVDP (package cvvdp) could not be loaded: {type(err).__name__}: {err}"

    @property
    def available(self) -> bool:
        return self.metric is not None

    def __call__(self, test: np.ndarray, reference: np.ndarray) -> float | str:
        """test, reference: [F, H, W, 3] uint8 sRGB frames -> JOD (higher is better)."""
        if not self.available:
            return f"unavailable: {self.reason}"
        import torch

        with torch.no_grad():
            jod, _ = self.metric.predict(test, reference, dim_order="FHWC", frames_per_second=FRAMES_PER_SECOND)
        return float(jod)
