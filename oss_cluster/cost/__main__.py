"""python -m oss_cluster.cost {estimate, report, memo, flops}: see oss_cluster/cost/__init__.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..runs import RunRegistry
from ..storage import open_storage
from .catalog import CATALOG, CLUSTER, REPO, CostError, load_catalog, load_node_types
from .plan import assumptions, bottom_line, estimate, format_estimate, load_plan

DEFAULT_PLAN = REPO / "cost" / "heavy_multicycle.yaml"
DEFAULT_RUNS = "./oss-runs"  # where the training jobs keep runs by default (storage.root)


def _runs_reader(storage):
    registry = RunRegistry(storage)
    return lambda name: registry.open(name).record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oss_cluster.cost", description="multi-cycle Heavy training cost")
    parser.add_argument("--catalog", default=str(CATALOG), help="price catalog CSV (SkyPilot vms.csv columns)")
    parser.add_argument("--cluster", default=str(CLUSTER), help="cluster.yaml with the node types")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("estimate", "per-cycle and total hours and dollars"),
                       ("report", "actual spend per run and per cycle beside the estimate"),
                       ("memo", "write the cost memo (Markdown)")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--plan", default=str(DEFAULT_PLAN))
        command.add_argument("--runs", default=None, help="storage root of the run registry (local path or s3://)" + (
            "" if name == "estimate" else f"; default {DEFAULT_RUNS}, where no folder means no runs yet"))
        command.add_argument("--endpoint-url", help="S3 endpoint override")
        if name == "estimate":
            command.add_argument("--spot", action="store_true", help="node-hours of the spot plan (with redone work)")
        if name == "memo":
            command.add_argument("--out", required=True, help="Markdown file to write")
    flops = commands.add_parser("flops", help="training FLOPs per window of a model (for the plan's flops_model)")
    flops.add_argument("--model", default="hat_heavy")
    flops.add_argument("--crop", type=int, default=96, help="output crop side (pixels)")
    flops.add_argument("--window", type=int, default=4, help="frames per window")
    flops.add_argument("--ratio", type=float, default=2.0)
    flops.add_argument("--warmup", default="cycle",
                       help="warm-up frames run without gradient before each window (default: one Halton cycle)")
    args = parser.parse_args(argv)
    try:
        if args.command == "flops":
            from ..config import TrainConfig, warmup_frames
            from .flops import training_flops_per_window

            try:
                warmup = warmup_frames(TrainConfig(warmup_frames=args.warmup), args.ratio, args.window)
            except ValueError as err:
                raise CostError(f"--warmup {args.warmup!r}: a number of frames or 'cycle' ({err})") from None
            value = training_flops_per_window(args.model, args.crop, args.window, args.ratio, warmup)
            print(f"{args.model}: {value:.4g} training FLOPs per window ({warmup} warm-up frames forward only + "
                  f"{args.window} frames x 3 for forward + backward; {args.crop}x{args.crop} output, ratio "
                  f"{args.ratio:g}; every operation counted)")
            return 0
        catalog, cluster = load_catalog(Path(args.catalog)), load_node_types(Path(args.cluster))
        catalog_source = Path(args.catalog).with_suffix(".source.yaml")
        plan = load_plan(args.plan, cluster, catalog)
        if args.runs and "://" not in args.runs and not Path(args.runs).is_dir():
            raise CostError(f"--runs {args.runs}: no such folder (the storage root of a run registry: a local "
                            "folder or s3://bucket/prefix)")
        if args.command == "memo" and not Path(args.out).resolve().parent.is_dir():
            raise CostError(f"--out {args.out}: the folder {Path(args.out).resolve().parent} does not exist")
        root, no_runs = args.runs, None
        if root is None and args.command != "estimate":
            if Path(DEFAULT_RUNS).is_dir():
                root = DEFAULT_RUNS
            else:  # before the first run: a registry with no runs, not an error
                no_runs = (f"No runs found under {DEFAULT_RUNS} (the default --runs; no such folder yet). Name a run "
                           "registry with --runs PATH or --runs s3://bucket/prefix.")
        storage = open_storage(root, endpoint_url=args.endpoint_url) if root else None
        runs = _runs_reader(storage) if storage else None
        result = estimate(plan, cluster, catalog, runs)
        if args.command == "estimate":
            print(bottom_line(result))
            print(f"plan {plan.name} ({args.plan})")
            print(format_estimate(result, args.spot))
            print("\nassumptions:")
            for note in assumptions(plan, result, cluster, catalog, catalog_source):
                print(f"  - {note}")
            return 0
        from .report import by_cycle, format_actuals, format_cycles, run_actuals

        actuals = run_actuals(storage, catalog, cluster) if storage else []
        if args.command == "report":
            print(no_runs or f"runs under {storage.uri}:")
            print(format_actuals(actuals))
            print(f"\nper cycle of plan {plan.name}:")
            print(format_cycles(by_cycle(plan, result, actuals)))
            return 0
        from .memo import write_memo

        Path(args.out).write_text(write_memo(plan, args.plan, cluster, catalog, actuals, runs, catalog_source,
                                             registry_note=no_runs))
        print(f"wrote {args.out}")
        return 0
    except (CostError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
