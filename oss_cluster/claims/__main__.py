"""python -m oss_cluster.claims check [--runs STORAGE]: run every hypothesis's gate on the runs in storage,
print a table, write the statuses the gates give into docs/research/hypotheses/H###.md (unless
--no-write), and confirm every discovery's data. Exit status 1 when a discovery is not backed by its data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..storage import StorageError, open_storage
from . import REGISTRY, ClaimsError, check_all, load_registry, record_status


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]) for row in rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oss_cluster.claims", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="run every gate and update the hypotheses' statuses")
    check.add_argument("--runs", default="./oss-runs",
                       help="storage root holding the runs: a local folder or s3://bucket/prefix (default ./oss-runs)")
    check.add_argument("--endpoint-url", help="S3 endpoint override (default: AWS_ENDPOINT_URL)")
    check.add_argument("--registry", default=str(REGISTRY),
                       help=f"folder with hypotheses/ and discoveries.md (default {REGISTRY})")
    check.add_argument("--no-write", action="store_true", help="print what the gates say; change no file")
    check.add_argument("--min-steps", type=int, metavar="N",
                       help="judge runs with at least N steps instead of each gate's min_steps (smoke data); "
                            "implies --no-write, so short runs never change the registry")
    args = parser.parse_args(argv)
    try:
        if "://" not in args.runs and not Path(args.runs).is_dir():
            raise ClaimsError(f"--runs {args.runs}: no such folder (the storage root of the runs; train one first, "
                              "e.g. python jobs/train_canvas.py --smoke)")
        registry = load_registry(Path(args.registry))
        if not registry.hypotheses:
            raise ClaimsError(f"--registry {args.registry}: no hypotheses/H###.md files")
        storage = open_storage(args.runs, endpoint_url=args.endpoint_url)
        result = check_all(registry, storage, min_steps=args.min_steps)
    except (ClaimsError, StorageError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = [["id", "status", "was", "run", "gate"]]
    for hypothesis, outcome in zip(registry.hypotheses, result["hypotheses"]):
        rows.append([outcome["id"], outcome["status"], outcome["recorded_status"], outcome["judged_run"] or "-",
                     outcome["reason"]])
        if not (args.no_write or args.min_steps is not None) and record_status(hypothesis, outcome):
            rows[-1][-1] += f"  [updated {hypothesis.path.name}]"
    print(f"hypotheses (runs under {storage.uri}):")
    print(_table(rows))
    rows = [["id", "backed", "title / problems"]]
    for discovery in result["discoveries"]:
        rows.append([discovery["id"], "yes" if discovery["backed"] else "NO",
                     discovery["title"] if discovery["backed"] else "; ".join(discovery["problems"])])
    print("\ndiscoveries:")
    print(_table(rows) if len(rows) > 1 else "(none)")
    return 0 if all(d["backed"] for d in result["discoveries"]) else 1


if __name__ == "__main__":
    sys.exit(main())
