"""Per-tier student latency (p50/p95/p99) in-process and over HTTP, against the tier targets.

    python jobs/latency_test.py                                  # all tiers, untrained students, local Ray
    python jobs/latency_test.py --tiers pico --manifest pico=runs/student-v0.1-pico-001/exports/pico-x1.5/manifest.json
    python jobs/latency_test.py --scale 0.25 --frames 10         # quicker: a quarter of each tier's resolution
    ray job submit --working-dir . -- python jobs/latency_test.py --url http://<serve-host>:8000

Each tier is measured on a Ray task that asks for the tier's custom resource (tier_<tier>) when the
cluster has one, i.e. on that tier's target-hardware worker; without --url the job deploys the Serve
app itself on 127.0.0.1. Prints a table, writes JSON (--out) and keeps the rows in storage
(latency/<UTC time>.json under --storage) for the dashboard's tiers page.
"""

import argparse
import socket
import sys
from pathlib import Path

from oss_cluster.tiers import TIERS


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiers", nargs="+", default=list(TIERS), choices=list(TIERS))
    parser.add_argument("--manifest", action="append", default=[], metavar="TIER=KEY",
                        help="export manifest (storage key) per tier; default: the tier's untrained student")
    parser.add_argument("--storage", default="./oss-runs", help="storage root of the manifests")
    parser.add_argument("--endpoint-url", help="S3 endpoint override")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each tier's render resolution")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (CPU workers)")
    parser.add_argument("--url", help="a running Serve endpoint; default: deploy one here")
    parser.add_argument("--no-http", action="store_true", help="in-process only")
    parser.add_argument("--out", default="latency.json", help="JSON results file")
    args = parser.parse_args(argv)

    import os

    import ray

    from oss_cluster.config import StorageConfig
    from oss_cluster.export import read_manifest
    from oss_cluster.serving.backends import untrained_manifest
    from oss_cluster.serving.latency import dumps, format_rows, run_latency, save_results
    from oss_cluster.storage import storage_from_config

    storage_cfg = StorageConfig(root=args.storage, endpoint_url=args.endpoint_url)
    given = dict(item.split("=", 1) for item in args.manifest)
    unknown = set(given) - set(TIERS)
    if unknown or not 0 < args.scale <= 1:
        print(f"error: unknown tiers in --manifest: {sorted(unknown)}" if unknown else "error: --scale must be in (0, 1]",
              file=sys.stderr)
        return 2
    try:
        storage = storage_from_config(storage_cfg)
        manifests = {t: read_manifest(storage, given[t]) if t in given else
                     untrained_manifest(f"student_{t}", TIERS[t].ratio) for t in args.tiers}
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None)
    url = None if args.no_http else args.url
    deployed = False
    if not args.no_http and not args.url:
        from ray import serve

        from oss_cluster.serving.app import build_app

        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        pixels = max(round(TIERS[t].input_size[0] * args.scale) * round(TIERS[t].input_size[1] * args.scale)
                     for t in args.tiers)
        tiers = {t: ({"manifest": given[t]} if t in given else {"model": f"student_{t}", "ratio": TIERS[t].ratio})
                 | {"num_cpus": 0.25, "replicas": 1} for t in args.tiers}
        serve.run(build_app({"storage": storage_cfg.model_dump(), "tiers": tiers, "max_pixels": max(pixels, 64),
                             "threads": args.threads}), name="oss-latency", route_prefix="/")
        url, deployed = f"http://127.0.0.1:{port}", True
    try:
        rows = run_latency(args.tiers, manifests, storage_cfg.model_dump() if given else None, args.scale,
                           args.frames, args.warmup, url, args.threads)
    finally:
        if deployed:
            from ray import serve

            serve.delete("oss-latency")
    print(format_rows(rows))
    Path(args.out).write_text(dumps(rows))
    print(f"wrote {args.out} and {storage.url(save_results(storage, rows))} (the dashboard's tiers page reads it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
