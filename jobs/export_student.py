"""Export a student run's newest checkpoint to ONNX (and TensorRT on a GPU), with a manifest.

    python jobs/export_student.py student-v0.1-pico-001
    python jobs/export_student.py student-v0.1-pico-001 --quantize int8      # + a QDQ INT8 ONNX model, its cost measured
    python jobs/export_student.py student-v0.1-pico-001 --quantize fp8       # + FP8 QDQ + TensorRT engine (FP8 GPU)
    python jobs/export_student.py student-v0.1-pico-001 --precision fp16 --precision int8   # on a GPU
    python jobs/export_student.py student-v0.1-pico-001 --storage s3://bucket/oss --endpoint-url http://127.0.0.1:9000

Files go to runs/<name>/exports/<tier>-x<ratio>/ in the run's storage; the manifest's path is printed.
"""

import argparse
import sys

from oss_cluster.checkpoints import CheckpointError
from oss_cluster.export import ExportError, export_student
from oss_cluster.storage import open_storage


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="student run name, e.g. student-v0.1-pico-001")
    parser.add_argument("--storage", default="./oss-runs", help="storage root holding the run (default ./oss-runs)")
    parser.add_argument("--endpoint-url", help="S3 endpoint override")
    parser.add_argument("--precision", action="append", choices=["fp16", "int8"],
                        help="TensorRT engine precision, repeatable (default fp16; only where a GPU and tensorrt are)")
    parser.add_argument("--parity-frames", type=int, default=4, help="held-out frames per sequence for the ONNX check")
    parser.add_argument("--quantize", action="append", choices=["int8", "fp8"], default=[],
                        help="also write a QDQ ONNX model at this precision, calibrated on training-distribution frames, "
                             "with its held-out PSNR/FLIP cost and speed in the manifest (fp8: E4M3 + a TensorRT "
                             "engine, on a GPU with FP8, TensorRT and NVIDIA ModelOpt); repeatable")
    parser.add_argument("--max-psnr-drop", type=float, default=0.2,
                        help="refuse a quantized model losing more steady-state PSNR than this, dB (default 0.2)")
    parser.add_argument("--min-fidelity", type=float, default=48.13,
                        help="refuse a quantized model whose output's PSNR against the fp32 output is under this, dB "
                             "(default 48.13: an RMS difference of one 8-bit level)")
    args = parser.parse_args(argv)
    try:
        storage = open_storage(args.storage, endpoint_url=args.endpoint_url)
        export_student(storage, args.run, tuple(args.precision or ["fp16"]), args.parity_frames,
                       quantize=tuple(args.quantize), max_psnr_drop_db=args.max_psnr_drop,
                       min_fidelity_db=args.min_fidelity)
    except (CheckpointError, FileNotFoundError, ExportError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
