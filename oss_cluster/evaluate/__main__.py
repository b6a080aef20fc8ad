"""python -m oss_cluster.evaluate: score a run's checkpoint or an exported student on a dataset.

    python -m oss_cluster.evaluate --run student-v0.1-pico-003 [--step 150] [--data DATASET]
    python -m oss_cluster.evaluate --export runs/student-v0.1-pico-003/exports/pico-x1.5/manifest.json --data s3://b/oldtown

The model (a teacher, student or canvas run's newest checkpoint, or the one at --step; or an export's
ONNX file through ONNX Runtime) runs beside bicubic and TAAU over every sequence of --data (any built
shard dataset, synthetic or TartanAir, local or S3; whole sequences rebuilt from its windows) or, by
default, held-out synthetic sequences at the run's ratio, size and motion. Written under the run:

    runs/<run>/evals/<dataset>/<step-NNNNNNN | onnx-step-NNNNNNN>/
        report.json   the summary (steady state, all frames, motion buckets, temporal metrics) + what was scored
        frames.csv    every frame of every method
        strips/<sequence>.png   LR . bicubic . model . GT . |error| (. features) at the last frame
        clips/<sequence>.mp4    ground truth | TAAU | model, side by side, every frame (H.264)
        clips/<sequence>-sr-fx.mp4   canvas runs: the SR + OSS-FX stream, frames at t, t + 0.5, t + 1, ...

For canvas runs the report also holds OSS-FX beside repeat-last and the depth-aware and naive
forward warps ("extrapolation"): on held-out sequences at alpha 0.25 / 0.5 / 0.75 against the
renderer's true intermediate frames; on a dataset at alpha 1 against each next frame.

An existing evaluation is never overwritten: give --tag to write another one beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone

import numpy as np

from ..checkpoints import CheckpointError, checkpoint_step, load_model
from ..config import ConfigError, ExperimentConfig
from ..data.clips import whole_sequences
from ..data.schema import DataError
from ..data.shards import ShardDataset
from ..export import ExportError, read_manifest, verified_bytes
from ..runs import RunNameError, RunRegistry
from ..storage import StorageError, open_storage
from .clips import encode_mp4, labelled_row
from .extrapolation import FX_ALPHAS, evaluate_extrapolation, format_extrapolation, next_frame_futures
from .heldout import MIN_EVAL_FRAMES, heldout_futures, heldout_sequences
from .methods import ModelMethod, OnnxMethod, anchors
from .report import format_eval, frames_csv
from .scoring import STEADY_FROM, uint8_image, score, window_tensors
from .strips import comparison_strip, model_strip, png_bytes
from .video import VideoMetric

CLIP_PANELS = (("gt", "ground truth"), ("taau", "TAAU"), ("model", "model"))


class EvaluationError(ValueError):
    """Arguments that cannot be evaluated; the message says what is wrong."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m oss_cluster.evaluate", description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", help="a run name: its newest checkpoint (or --step) is scored")
    what.add_argument("--export", metavar="MANIFEST", help="storage key of an export manifest (its ONNX file runs "
                                                           "through ONNX Runtime)")
    parser.add_argument("--step", type=int, help="with --run: the checkpoint saved at this step")
    parser.add_argument("--data", help="a built shard dataset (local folder or s3://bucket/prefix); default: "
                                       "held-out synthetic sequences like the run's training data")
    parser.add_argument("--storage", default="./oss-runs", help="storage root holding the runs (default ./oss-runs)")
    parser.add_argument("--endpoint-url", help="S3 endpoint override (default: AWS_ENDPOINT_URL)")
    parser.add_argument("--sequences", type=int, help="score at most this many sequences")
    parser.add_argument("--frames", type=int, help=f"frames per sequence (held-out default 48; at least "
                                                   f"{MIN_EVAL_FRAMES} for held-out sequences)")
    parser.add_argument("--heldout", type=int, default=4, help="held-out sequences when --data is not given")
    parser.add_argument("--clips", type=int, default=2, help="sequences to write strips and clips for")
    parser.add_argument("--clip-fps", type=int, default=15)
    parser.add_argument("--no-video-metric", action="store_true", help="skip ColorVideoVDP")
    parser.add_argument("--tag", help="write to <source>-<tag> (a second evaluation of the same source)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads for --export")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def _dataset_label(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1] or "dataset"


def _load(args, storage):
    """(method, run name, config, ratio, source label, what-was-scored dict)."""
    if args.run:
        if args.step is not None and args.step < 0:
            raise EvaluationError(f"--step {args.step}: must be a training step >= 0")
        RunRegistry(storage).open(args.run)  # a clear error for a missing run before anything is read
        model, cfg, key = load_model(storage, args.run, args.step)
        step = checkpoint_step(storage, key)
        label = f"step-{step:07d}" if step is not None else key.split("/")[-2]
        return ModelMethod(model), args.run, cfg, float(cfg.data.ratio), label, {
            "kind": "checkpoint", "run": args.run, "checkpoint": key, "step": step, "model": cfg.model.name}
    if args.step is not None:
        raise EvaluationError("--step applies to --run; an export is scored as it was exported")
    manifest = read_manifest(storage, args.export)
    onnx = verified_bytes(storage, manifest["files"]["onnx"])
    run = manifest.get("source_run")
    if not run:
        raise EvaluationError(f"{storage.url(args.export)}: the manifest names no source_run to file the evaluation under")
    cfg = ExperimentConfig.model_validate(RunRegistry(storage).open(run).record["config"])
    step = manifest.get("source_step")
    label = f"onnx-step-{step:07d}" if step is not None else "onnx"
    return OnnxMethod(onnx, args.threads), run, cfg, float(manifest["ratio"]), label, {
        "kind": "export", "run": run, "manifest": args.export, "onnx_sha256": manifest["files"]["onnx"]["sha256"],
        "step": step, "model": manifest["model"], "precision": "fp32"}


def _sequences(args, cfg: ExperimentConfig, ratio: float):
    """(sequences, dataset label, dataset description)."""
    if args.frames is not None and args.frames < 2:
        raise EvaluationError(f"--frames {args.frames}: need at least 2 frames per sequence")
    if args.data:
        store = open_storage(args.data, endpoint_url=args.endpoint_url or cfg.storage.endpoint_url,
                             region=cfg.storage.region)
        dataset = ShardDataset(store)
        data_ratio = float(dataset.manifest["ratio"])
        if abs(data_ratio - ratio) > 1e-3 * ratio:
            raise EvaluationError(f"{args.data}: the dataset is at ratio {data_ratio:g} but the model upscales by "
                                  f"{ratio:g} (build the dataset at the model's ratio)")
        sequences = whole_sequences(dataset, min_frames=2)
        if args.frames:
            sequences = [s.frames(0, args.frames) for s in sequences]
        description = {"uri": store.uri, "source": dataset.manifest["source"], "ratio": data_ratio,
                       "in_size": dataset.manifest["in_size"], "out_size": dataset.manifest["out_size"]}
        label = _dataset_label(args.data)
    else:
        frames = args.frames or 48
        if frames < MIN_EVAL_FRAMES:
            raise EvaluationError(f"--frames {frames}: held-out sequences need at least {MIN_EVAL_FRAMES} frames "
                                  f"(the steady state starts at frame {STEADY_FROM})")
        sequences = heldout_sequences(cfg, frames=frames, count=args.heldout)
        description = {"source": "synth held-out (seeds no training build reaches)", "ratio": ratio,
                       "out_size": list(cfg.data.out_size), "motion": cfg.data.motion.model_dump(mode="json")}
        label = "heldout-synth"
    if args.sequences:
        sequences = sequences[: args.sequences]
    return sequences, label, description


def evaluate_command(args) -> int:
    storage = open_storage(args.storage, endpoint_url=args.endpoint_url)
    method, run_name, cfg, ratio, source_label, source = _load(args, storage)
    sequences, data_label, dataset = _sequences(args, cfg, ratio)
    run = RunRegistry(storage).open(run_name)
    prefix = run.key("evals", data_label, f"{source_label}-{args.tag}" if args.tag else source_label)
    if storage.exists(f"{prefix}/report.json"):
        raise EvaluationError(f"{storage.url(prefix + '/report.json')} exists: this source was evaluated on this "
                              "dataset already (nothing was overwritten; give --tag to write another evaluation)")
    print(f"evaluating {source['kind']} of {run_name} ({source['model']}, step {source['step']}) on {data_label}: "
          f"{len(sequences)} sequences, {sum(s.length for s in sequences)} frames", flush=True)

    clipped = min(args.clips, len(sequences))
    frames: dict[int, list[np.ndarray]] = {i: [] for i in range(clipped)}
    last: dict[int, dict] = {}

    def collect(index, k, outputs, gt):
        if index >= clipped:
            return
        images = {"gt": gt, **outputs}
        frames[index].append(labelled_row([uint8_image(images[name]) for name, _ in CLIP_PANELS],
                                          [label for _, label in CLIP_PANELS]))
        last[index] = {"output": outputs["model"][0], "k": k}

    methods = {**anchors(), "model": method}
    video = None if args.no_video_metric else VideoMetric()
    summary, rows = score(methods, sequences, video_metric=video, on_frame=collect, progress=not args.quiet)

    written = {}
    for index in range(clipped):
        sequence = sequences[index]
        name = _file_name(sequence.sequence, index)
        clip_key = f"{prefix}/clips/{name}.mp4"
        storage.write_bytes(clip_key, encode_mp4(frames[index], args.clip_fps))
        tensors = window_tensors(sequence)
        if isinstance(method, ModelMethod):
            strip = model_strip(method.model, tensors, frame=-1)
        else:
            k = last[index]["k"]
            strip = comparison_strip(tensors["lr"][k], tensors["jitter"][k], last[index]["output"], tensors["gt"][k])
        strip_key = f"{prefix}/strips/{name}.png"
        storage.write_bytes(strip_key, png_bytes(strip))
        written[sequence.sequence] = {"clip": clip_key, "strip": strip_key, "frames": len(frames[index]),
                                      "clip_size": list(frames[index][0].shape[1::-1]), "clip_fps": args.clip_fps}
    extrapolation = None
    if isinstance(method, ModelMethod) and hasattr(method.model, "extrapolate"):  # canvas runs: OSS-FX
        futures = (next_frame_futures(sequences) if args.data else
                   heldout_futures(cfg, sequences[0].length, FX_ALPHAS, count=len(sequences)))
        extrapolation = evaluate_extrapolation(method.model, sequences, futures, stream_sequences=clipped)
        for index, stream in enumerate(extrapolation.pop("streams")):
            name = _file_name(sequences[index].sequence, index)
            stream_key = f"{prefix}/clips/{name}-sr-fx.mp4"
            storage.write_bytes(stream_key, encode_mp4(stream, 2 * args.clip_fps))
            written[sequences[index].sequence].update(sr_fx_clip=stream_key, sr_fx_frames=len(stream))
    storage.write_bytes(f"{prefix}/frames.csv", frames_csv(rows))
    report = {"summary": summary, "extrapolation": extrapolation, "source": source, "dataset": {"label": data_label, **dataset},
              "sequences": [{"name": s.sequence, "frames": s.length} for s in sequences], "media": written,
              "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": sys.argv}
    storage.write_bytes(f"{prefix}/report.json", json.dumps(report, indent=2, default=float).encode())
    run.add_artefact(f"eval_{data_label}_{source_label}", f"{prefix}/report.json")
    print(format_eval(summary))
    if extrapolation is not None:
        print(format_extrapolation(extrapolation))
    print(f"report, per-frame CSV, {clipped} strips and clips: {storage.url(prefix)}")
    return 0


def _file_name(sequence: str, index: int) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in sequence)
    return f"{index:02d}-{safe}"[:80]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return evaluate_command(args)
    except (EvaluationError, ConfigError, DataError, CheckpointError, ExportError, StorageError, RunNameError,
            FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
