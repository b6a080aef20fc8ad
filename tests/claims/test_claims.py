"""The claims registry: the repository's hypotheses and discoveries load, gates run on real run data,
statuses are written back, and bad registry files get errors that name them."""

import shutil

import pytest

from oss_cluster.claims import REGISTRY, check_all, load_registry
from oss_cluster.claims.__main__ import main


def test_the_repository_registry_loads_and_its_discoveries_are_backed():
    registry = load_registry()
    ids = [h.id for h in registry.hypotheses]
    assert "H009" in ids and len(ids) >= 4
    h009 = next(h for h in registry.hypotheses if h.id == "H009")
    metrics = [check["metric"] for check in h009.meta["gate"]["checks"]]
    assert metrics == ["model/canvas_contribution", "extrapolation/a0.5/fx_vs_sr_over_motion"]
    result = check_all(registry)
    assert result["discoveries"] and all(d["backed"] for d in result["discoveries"]), result["discoveries"]


def _expected_h009(record):
    latest = record["eval_metrics"][-1]
    collapsed = latest["model/canvas_contribution"] < 0.001 and latest["extrapolation/a0.5/fx_vs_sr_over_motion"] < 0.05
    return "validated" if collapsed else "refuted"


def test_h009_gate_runs_on_a_real_canvas_run(canvas_trained, capsys):
    cfg, run, _, _ = canvas_trained
    before = {p.name: p.read_text() for p in (REGISTRY / "hypotheses").glob("H*.md")}
    # The repository's gate wants >= 2000 steps: this 20-step run is named as too short and nothing changes.
    assert main(["check", "--runs", cfg.storage.root, "--no-write"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("H009"))
    assert "untested" in line and f"{run.name} (20)" in line and "too short" in line
    # --min-steps judges it anyway, prints the status its metrics give, and never writes.
    assert main(["check", "--runs", cfg.storage.root, "--min-steps", "1"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("H009"))
    expected = _expected_h009(run.storage.read_json(f"runs/{run.name}/metrics.json"))
    assert line.split()[1] == expected and str(run.name) in line and "model/canvas_contribution" in line
    assert {p.name: p.read_text() for p in (REGISTRY / "hypotheses").glob("H*.md")} == before


def test_check_writes_the_status_into_the_hypothesis_file(canvas_trained, tmp_path, capsys):
    cfg, run, _, _ = canvas_trained
    registry = tmp_path / "research"
    shutil.copytree(REGISTRY, registry)
    h009 = registry / "hypotheses" / "H009.md"
    h009.write_text(h009.read_text().replace("min_steps: 2000", "min_steps: 10"))
    body = h009.read_text().split("\n---\n", 1)[1]
    assert main(["check", "--runs", cfg.storage.root, "--registry", str(registry)]) == 0
    assert "[updated H009.md]" in capsys.readouterr().out
    (updated,) = [h for h in load_registry(registry).hypotheses if h.id == "H009"]
    expected = _expected_h009(run.storage.read_json(f"runs/{run.name}/metrics.json"))
    assert updated.meta["status"] == expected and updated.meta["linked_runs"] == [str(run.name)]
    assert updated.meta["last_checked"]["run"] == str(run.name) and updated.body == body
    assert main(["check", "--runs", cfg.storage.root, "--registry", str(registry)]) == 0  # nothing new: unchanged
    assert "[updated" not in capsys.readouterr().out


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("---\n", "", 1), "no YAML front matter"),
    (lambda t: t.replace("op: <", "op: '~'", 1), "op '~' is not one of"),
    (lambda t: t.replace("status: untested", "status: maybe"), "status 'maybe' is not one of"),
    (lambda t: t.replace("id: H009", "id: H010"), "differs from the file name"),
])
def test_bad_hypothesis_files_are_named(tmp_path, capsys, edit, message):
    registry = tmp_path / "research"
    shutil.copytree(REGISTRY, registry)
    h009 = registry / "hypotheses" / "H009.md"
    h009.write_text(edit(h009.read_text()))
    assert main(["check", "--runs", str(tmp_path), "--registry", str(registry)]) == 2
    err = capsys.readouterr().err
    assert str(h009) in err and message in err


def test_unbacked_discovery_and_missing_runs(tmp_path, capsys):
    registry = tmp_path / "research"
    shutil.copytree(REGISTRY, registry)
    discoveries = registry / "discoveries.md"
    discoveries.write_text(discoveries.read_text().replace("ratio 0.994 (target >= 0.9)", "ratio 0.999 (target >= 0.9)"))
    assert main(["check", "--runs", str(tmp_path), "--registry", str(registry), "--no-write"]) == 1
    assert "D003  NO" in capsys.readouterr().out
    assert main(["check", "--runs", str(tmp_path / "nope")]) == 2
    assert "--runs" in capsys.readouterr().err
