"""Train the Heavy teacher on Ray Train + DeepSpeed.

    python jobs/train_heavy.py --smoke                      # local Ray instance, a few minutes on 2 CPUs
    ray job submit --working-dir . -- python jobs/train_heavy.py --smoke
    python jobs/train_heavy.py --config configs/heavy.yaml --set train.steps=2000   # on cluster.yaml's heavy_trainer nodes
    python jobs/train_heavy.py --run-name hat-v0.1-heavy-003   # resume that run from its last checkpoint

Without --config the embedded defaults are used (synthetic data rendered into shards, storage
./oss-runs, a new frozen run name). Every option can be set with --set key=value.
"""

import argparse
import sys
from pathlib import Path

from oss_cluster.config import ConfigError, load_config
from oss_cluster.data.schema import DataError
from oss_cluster.runs import RunExistsError, RunNameError
from oss_cluster.train.distributed import train_distributed

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def main(argv=None, default_model: str = "hat_heavy", family: str = "hat") -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="experiment YAML (default: embedded defaults)")
    parser.add_argument("--smoke", action="store_true", help="tiny config (configs/smoke.yaml): minutes on 2 CPUs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    parser.add_argument("--run-name", help="a run name to create, or an existing one to resume")
    args = parser.parse_args(argv)
    path = args.config or (SMOKE if args.smoke else None)
    try:
        defaults = [f"model.name={default_model}", f"family={family}"] if path is None or args.smoke else []
        cfg = load_config(path, [*defaults, *args.set])
        name, result = train_distributed(cfg, run_name=args.run_name)
    except (ConfigError, DataError, RunExistsError, RunNameError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"run {name} finished: {result.metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
