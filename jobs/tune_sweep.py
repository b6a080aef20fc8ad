"""Ray Tune sweep of the canvas model: fusion magnitude (log-uniform) x SR ratio, ASHA early stopping.

    python jobs/tune_sweep.py --smoke                       # 4 tiny trials, a few minutes on 2 CPUs
    python jobs/tune_sweep.py --config configs/canvas.yaml --set tune.num_samples=24
    ray job submit --working-dir . -- python jobs/tune_sweep.py --smoke

Each trial is a Ray Train + DeepSpeed run. The sweep writes sweeps/<name>/ under the storage root:
results.parquet/.csv, metric_vs_fusion.png, best.yaml (for jobs/train_canvas.py --config) and Tune's
experiment folder tune/ (tensorboard --logdir it). Every option can be set with --set key=value.
"""

import argparse
import sys
from pathlib import Path

from oss_cluster.config import ConfigError, load_config
from oss_cluster.data.schema import DataError
from oss_cluster.sweep import SweepExistsError, SweepFailedError, run_sweep

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help=f"base experiment YAML (default: {CONFIGS / 'canvas.yaml'})")
    parser.add_argument("--smoke", action="store_true", help="tiny sweep (configs/tune_smoke.yaml): minutes on 2 CPUs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    parser.add_argument("--name", help="sweep name (default: <family>-sweep-<UTC time>); must be new")
    args = parser.parse_args(argv)
    path = args.config or CONFIGS / ("tune_smoke.yaml" if args.smoke else "canvas.yaml")
    try:
        cfg = load_config(path, args.set)
        result = run_sweep(cfg, name=args.name)
    except (ConfigError, DataError, SweepExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except SweepFailedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"sweep {result.name} finished; best config: {result.uris['best_config']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
