"""`python -m oss_cluster.evaluate` on the session's distilled smoke student (conftest `shipped`) and its ONNX export,
over a synthetic shard dataset and a TartanAir-layout dataset written here: report, per-frame CSV, strips and a
playable clip; and the errors a user gets for bad arguments."""

import csv
import io
import json

import pytest
from PIL import Image

from oss_cluster.config import load_config
from oss_cluster.data.build import build_dataset
from oss_cluster.evaluate.__main__ import main
from oss_cluster.evaluate.clips import decode_mp4
from oss_cluster.storage import open_storage

from ..data.tartanair_layout import write_trajectory


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """URIs of a synthetic dataset (1.5x, two 12-frame sequences), a TartanAir-layout one (10 frames at 1.5x)
    and a synthetic one at another ratio."""
    root = tmp_path_factory.mktemp("eval-data")
    synth = load_config(None, ["data.ratio=1.5", "data.out_size=[48,64]", "data.window=4", "data.frames=24",
                               "data.frames_per_sequence=12", "data.objects=2", "train.warmup_frames=0"]).data
    build_dataset(synth, open_storage(str(root / "synth-1.5")), progress=False)
    other = synth.model_copy(update={"ratio": 2.0})
    build_dataset(other, open_storage(str(root / "synth-2")), progress=False)
    trajectory = write_trajectory(root / "tartan" / "scene" / "Easy" / "P000", frames=10)
    tartan = load_config(None, ["data.source=tartanair", f"data.root={trajectory}", "data.ratio=1.5", "data.window=5",
                                "data.frames_per_sequence=10", "train.warmup_frames=0"]).data
    build_dataset(tartan, open_storage(str(root / "tartan-1.5")), progress=False)
    return {name: str(root / name) for name in ("synth-1.5", "synth-2", "tartan-1.5")}


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def check_written(storage, prefix: str, frames: int, sequences: int, size: tuple[int, int]):
    """The report, per-frame CSV, strips and clips an evaluation writes; the clip decodes to every frame."""
    report = json.loads(storage.read_bytes(f"{prefix}/report.json"))
    summary = report["summary"]
    for method in ("bicubic", "taau", "model"):
        assert summary[method]["psnr_rgb"] > 10 and set(summary[method]["buckets"]) == {"static", "lt1", "1to4", "gt4"}
        assert summary[method]["all"]["flicker"] is not None
    assert summary["frames"] == frames and summary["sequences"] == sequences
    rows = list(csv.DictReader(io.StringIO(storage.read_bytes(f"{prefix}/frames.csv").decode())))
    assert len(rows) == 3 * frames and {row["method"] for row in rows} == {"bicubic", "taau", "model"}
    (name, media), *_ = report["media"].items()
    clip = decode_mp4(storage.read_bytes(media["clip"]))
    length = next(s["frames"] for s in report["sequences"] if s["name"] == name)
    assert len(clip) == length == media["frames"]
    height, width = clip[0].shape[:2]
    assert [width, height] == media["clip_size"] and width == 3 * size[1] * (height - 16) // size[0]
    strip = Image.open(io.BytesIO(storage.read_bytes(media["strip"])))
    assert strip.height == size[0] + 14 and strip.width >= 5 * size[1]
    return report


def test_scores_the_student_checkpoint_on_a_synthetic_dataset(shipped, datasets, capsys):
    root, _, student, _ = shipped
    code, out, err = run_cli(capsys, "--run", student, "--storage", str(root), "--data", datasets["synth-1.5"],
                             "--quiet", "--no-video-metric")
    assert code == 0, err
    assert "steady state (frames >= 8)" in out and "per motion bucket" in out
    storage = open_storage(str(root))
    prefix = f"runs/{student}/evals/synth-1.5/step-0000100"
    report = check_written(storage, prefix, frames=24, sequences=2, size=(48, 64))
    assert report["source"]["kind"] == "checkpoint" and report["source"]["step"] == 100
    assert report["dataset"]["source"] == "synth" and "disocclusion" in report["summary"]
    # Nothing is overwritten: the same evaluation again is refused, a tagged one is written beside it.
    before = storage.read_bytes(f"{prefix}/report.json")
    code, _, err = run_cli(capsys, "--run", student, "--storage", str(root), "--data", datasets["synth-1.5"], "--quiet")
    assert code == 2 and "exists" in err and "--tag" in err
    assert storage.read_bytes(f"{prefix}/report.json") == before


def test_scores_the_onnx_export_on_a_tartanair_dataset_with_a_video_metric(shipped, exported, datasets, capsys):
    root, _, student, _ = shipped
    manifest_key = f"runs/{student}/exports/pico-x1.5/manifest.json"
    code, out, err = run_cli(capsys, "--export", manifest_key, "--storage", str(root), "--data", datasets["tartan-1.5"],
                             "--quiet", "--clips", "1")
    assert code == 0, err
    storage = open_storage(str(root))
    report = check_written(storage, f"runs/{student}/evals/tartan-1.5/onnx-step-0000100", frames=10, sequences=1,
                           size=(480, 640))
    assert report["source"]["kind"] == "export" and report["dataset"]["source"] == "tartanair"
    video = report["summary"]["model"]["video"]  # ColorVideoVDP in JOD, or why it is unavailable
    assert (isinstance(video, float) and 0 < video <= 10) or video.startswith("unavailable")
    assert "ColorVideoVDP" in out


def test_export_and_checkpoint_score_the_same(shipped, exported, datasets, capsys):
    root, _, student, _ = shipped
    storage = open_storage(str(root))
    manifest_key = f"runs/{student}/exports/pico-x1.5/manifest.json"
    code, _, err = run_cli(capsys, "--export", manifest_key, "--storage", str(root), "--data", datasets["synth-1.5"],
                           "--quiet", "--no-video-metric", "--clips", "0")
    assert code == 0, err
    onnx = json.loads(storage.read_bytes(f"runs/{student}/evals/synth-1.5/onnx-step-0000100/report.json"))
    torch_report = json.loads(storage.read_bytes(f"runs/{student}/evals/synth-1.5/step-0000100/report.json"))
    assert onnx["summary"]["model"]["psnr_rgb"] == pytest.approx(torch_report["summary"]["model"]["psnr_rgb"], abs=0.01)


def test_bad_arguments_get_clear_errors(shipped, datasets, capsys, tmp_path):
    root, teacher, student, _ = shipped
    cases = [
        (["--run", "student-v0.1-pico-999"], "no run student-v0.1-pico-999"),
        (["--run", "not-a-run"], "is not a run name"),
        (["--run", student, "--step", "7"], "no checkpoint at step 7"),
        (["--run", student, "--data", datasets["synth-2"]], "ratio 2 but the model upscales by 1.5"),
        (["--run", student, "--data", str(tmp_path / "nothing")], "no manifest"),
        (["--run", student, "--frames", "12"], "at least 32 frames"),
        (["--export", "runs/nope/manifest.json"], "no export manifest"),
    ]
    for argv, words in cases:
        code, _, err = run_cli(capsys, *argv, "--storage", str(root), "--quiet")
        assert code == 2 and words in err, (argv, err)
    # A run without any checkpoint.
    from oss_cluster.runs import RunRegistry

    empty = RunRegistry(open_storage(str(root))).allocate("student", "0.1", "pico", config={})
    code, _, err = run_cli(capsys, "--run", str(empty.name), "--storage", str(root), "--quiet")
    assert code == 2 and "no checkpoint" in err
    with pytest.raises(SystemExit):  # --run or --export is required
        main(["--storage", str(root)])
