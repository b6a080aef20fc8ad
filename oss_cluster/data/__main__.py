"""python -m oss_cluster.data build --source synth|tartanair ... : build a shard dataset."""

from __future__ import annotations

import argparse
import sys

from ..config import ConfigError, load_config
from ..storage import StorageError, open_storage
from .build import build_dataset, default_output, format_summary
from .schema import DataError

# Command-line flag -> DataConfig field (every field can also be set with --set data.<field>=VALUE).
FLAG_FIELDS = {
    "source": "source", "root": "root", "frames": "frames", "ratio": "ratio", "window": "window",
    "seed": "seed", "objects": "objects", "gt_samples": "gt_samples",
    "frames_per_sequence": "frames_per_sequence", "windows_per_shard": "windows_per_shard",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m oss_cluster.data")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="render or load frames into Parquet shards")
    build.add_argument("--source", choices=["synth", "tartanair"])
    build.add_argument("--root", help="TartanAir trajectory folder (or a folder above several)")
    build.add_argument("--frames", type=int, help="synthetic frames in all")
    build.add_argument("--ratio", type=float, help="SR ratio, e.g. 2, 1.5, 1.333")
    build.add_argument("--size", help="output (ground-truth) size as WxH, e.g. 640x480 (synthetic only)")
    build.add_argument("--window", type=int, help="frames per temporal window")
    build.add_argument("--seed", type=int)
    build.add_argument("--objects", type=int, help="moving objects per synthetic scene")
    build.add_argument("--gt-samples", type=int, help="ground-truth samples per pixel (square number >= 16)")
    build.add_argument("--frames-per-sequence", type=int)
    build.add_argument("--windows-per-shard", type=int)
    build.add_argument("--out", help="local folder or s3://bucket/prefix (default ./oss-runs/datasets/<source>-<time>)")
    build.add_argument("--endpoint-url", help="S3 endpoint override (default: AWS_ENDPOINT_URL)")
    build.add_argument("--config", help="experiment YAML whose data section gives the defaults")
    build.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = list(args.set)
    for flag, name in FLAG_FIELDS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"data.{name}={value}")
    if args.size:
        width, sep, height = args.size.lower().partition("x")
        if not sep or not width.isdigit() or not height.isdigit():
            print(f"error: --size {args.size!r}: expected WxH, e.g. 640x480", file=sys.stderr)
            return 2
        overrides.append(f"data.out_size=[{height},{width}]")
    try:
        cfg = load_config(args.config, overrides)
        out = args.out or default_output(cfg.data.source)
        storage = open_storage(out, endpoint_url=args.endpoint_url or cfg.storage.endpoint_url, region=cfg.storage.region)
        manifest = build_dataset(cfg.data, storage, progress=not args.quiet)
    except (ConfigError, DataError, StorageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_summary(manifest, storage.uri))
    return 0


if __name__ == "__main__":
    sys.exit(main())
