"""Train the Gaussian-canvas model (SR + OSS-FX) on Ray Train + DeepSpeed.

    python jobs/train_canvas.py --smoke
    python jobs/train_canvas.py --config configs/canvas.yaml --set model.options.fusion_magnitude=10

The same job as jobs/train_heavy.py with the canvas model; every option can be set with --set.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_heavy import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(default_model="canvas", family="canvas"))
