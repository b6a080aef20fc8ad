"""Distil a tier's student from that tier's teacher run on Ray Train + DeepSpeed.

    python jobs/distill_student.py --tier pico --teacher-run hat-v0.1-pico-001 --smoke
    python jobs/distill_student.py --tier standard --teacher-run hat-v0.1-standard-002 \\
        --init-from student-v0.1-pico-004 --set distill.weight=0.3
    python jobs/distill_student.py --tier pico --teacher-run hat-v0.1-pico-001 \
        --init-from student-v0.1-pico-004 --set distill.quantization_aware=true    # INT8-aware fine-tuning

Loss = Charbonnier to ground truth + distill.weight x Charbonnier to the frozen teacher's output.
--init-from starts from a smaller student run grown by Net2Net (or the same student, unchanged);
distill.quantization_aware=true trains the convolutions as the INT8 export computes them. Checkpoints, metrics.json and
comparison strips as for the teacher jobs; every option can be set with --set key=value.
"""

import argparse
import sys
from pathlib import Path

from oss_cluster.config import ConfigError, load_config
from oss_cluster.data.schema import DataError
from oss_cluster.runs import RunExistsError
from oss_cluster.tiers import TIERS
from oss_cluster.train.distributed import train_distributed

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "distill_smoke.yaml"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", required=True, choices=sorted(TIERS))
    parser.add_argument("--teacher-run", required=True, help="run name of the tier's teacher (same storage root)")
    parser.add_argument("--init-from", help="run name of a smaller student to expand with Net2Net")
    parser.add_argument("--config", help="experiment YAML (default: embedded defaults)")
    parser.add_argument("--smoke", action="store_true", help="tiny config (configs/distill_smoke.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    parser.add_argument("--run-name", help="a run name to create, or an existing one to resume")
    args = parser.parse_args(argv)
    path = args.config or (SMOKE if args.smoke else None)
    settings = [f"tier={args.tier}", f"model.name=student_{args.tier}", f"distill.teacher_run={args.teacher_run}"]
    if path is None:
        settings.append("family=student")
    if args.init_from:
        settings.append(f"distill.init_from_run={args.init_from}")
    try:
        cfg = load_config(path, [*settings, *args.set])
        name, result = train_distributed(cfg, run_name=args.run_name)
    except (ConfigError, DataError, RunExistsError, FileNotFoundError, ValueError) as err:  # incl. CheckpointError, RunNameError
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"run {name} finished: {result.metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
