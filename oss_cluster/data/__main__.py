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
    from ..config import DataConfig

    d = DataConfig()  # the defaults a flag left out takes (unless --config gives others)
    parser = argparse.ArgumentParser(prog="python -m oss_cluster.data")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="render or load frames into Parquet shards")
    build.add_argument("--source", choices=["synth", "tartanair"], help=f"where frames come from (default {d.source})")
    build.add_argument("--root", help="TartanAir trajectory folder (or a folder above several); needed with "
                                      "--source tartanair")
    build.add_argument("--frames", help=f"synthetic frames in all (default {d.frames})")
    build.add_argument("--ratio", help=f"SR ratio per axis, in (1, 4]: 2, 1.5, 4/3 (default {d.ratio:g})")
    build.add_argument("--size", help=f"output (ground-truth) size as WxH, synthetic only (default "
                                      f"{d.out_size[1]}x{d.out_size[0]})")
    build.add_argument("--window", help=f"frames per temporal window (default {d.window})")
    build.add_argument("--seed", help=f"scene seed (default {d.seed})")
    build.add_argument("--objects", help=f"moving objects per synthetic scene (default {d.objects})")
    build.add_argument("--gt-samples", help=f"ground-truth samples per pixel, a square >= 16 (default {d.gt_samples})")
    build.add_argument("--frames-per-sequence", help=f"frames per sequence (default {d.frames_per_sequence})")
    build.add_argument("--windows-per-shard", help=f"windows per Parquet shard (default {d.windows_per_shard})")
    build.add_argument("--out", help="local folder or s3://bucket/prefix (default ./oss-runs/datasets/<source>-<time>)")
    build.add_argument("--endpoint-url", help="S3 endpoint override (default: AWS_ENDPOINT_URL)")
    build.add_argument("--config", help="experiment YAML whose data section gives the defaults")
    build.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = list(args.set)
    typed = {}  # override -> the flag as the user typed it, so errors speak in flags
    for flag, name in FLAG_FIELDS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"data.{name}={value}")
            typed[f"data.{name}={value}"] = (f"--{flag.replace('_', '-')} {value}", f"data.{name}: ")
    if args.source == "tartanair" and not args.root and not args.config and \
            not any(item.startswith("data.root=") for item in args.set):
        print("error: --source tartanair needs --root, the TartanAir folder: a trajectory (ENV/Easy/P000) or a "
              "folder above several, e.g. --root /data/tartanair/oldtown", file=sys.stderr)
        return 2
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
        print(f"error: {_in_flags(str(err), typed)}", file=sys.stderr)
        return 2
    print(format_summary(manifest, storage.uri))
    return 0


def _in_flags(message: str, typed: dict[str, tuple[str, str]]) -> str:
    """A config error about an override a flag made, restated in that flag: '--set data.ratio=7: data.ratio: ...'
    -> '--ratio 7: ...'."""
    for override, (flag, field) in typed.items():
        prefix = f"--set {override}: "
        if message.startswith(prefix):
            rest = message[len(prefix):]
            return f"{flag}: {rest[len(field):] if rest.startswith(field) else rest}"
    return message


if __name__ == "__main__":
    sys.exit(main())
