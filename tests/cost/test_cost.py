"""Cost module: estimate arithmetic against hand-computed values, bad plans, report on a real smoke
run's record, and the memo written and parsed back."""

import re
from pathlib import Path

import pytest
import yaml

from oss_cluster.config import load_config
from oss_cluster.cost.__main__ import main
from oss_cluster.cost.catalog import CostError, load_catalog, load_node_types
from oss_cluster.cost.plan import estimate, load_plan

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

CATALOG = """InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region
gpu.big,A100,2,16,64,10.0,4.0,us-east-1
cpu.small,,,2,8,0.5,0.2,us-east-1
gpu.small,T4,1,4,16,1.0,0.3,us-east-1
"""
CLUSTER = {
    "available_node_types": {
        "head": {"resources": {}, "node_config": {"InstanceType": "cpu.small"}},
        "trainer": {"resources": {}, "node_config": {"InstanceType": "gpu.big", "InstanceMarketOptions": {"MarketType": "spot"}}},
        "tester": {"resources": {}, "node_config": {"InstanceType": "gpu.small"}},
        "mystery": {"resources": {}, "node_config": {"InstanceType": "gpu.unpriced"}},
    }
}
PLAN = {
    "name": "small",
    "head_node_type": "head",
    "flops_model": {"flops_per_sample": 1e12, "peak_tflops_per_gpu": 100, "mfu": 0.5},
    "cycles": [
        {"name": "c1", "node_type": "trainer", "nodes": 2, "steps": 3600, "global_batch": 8,
         "step_time": {"source": "fixed", "seconds": 2.0}, "checkpoint_every": 600, "checkpoint_seconds": 36,
         "restart_seconds": 300, "spot_interruptions_per_hour": 0.5},
        {"name": "c2", "node_type": "trainer", "nodes": 2, "steps": 1000, "global_batch": 8,
         "step_time": {"source": "flops_model"}, "checkpoint_every": 1000, "checkpoint_seconds": 0,
         "restart_seconds": 0, "spot_interruptions_per_hour": 0.0},
    ],
    "line_items": [{"name": "latency", "node_type": "tester", "nodes": 1, "hours": 3}],
}


@pytest.fixture
def files(tmp_path):
    (tmp_path / "vms.csv").write_text(CATALOG)
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(CLUSTER))
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(PLAN))
    return tmp_path


def load(files, plan="plan.yaml"):
    catalog, cluster = load_catalog(files / "vms.csv"), load_node_types(files / "cluster.yaml")
    return load_plan(files / plan, cluster, catalog), cluster, catalog


def test_estimate_matches_hand_computed_values(files):
    plan, cluster, catalog = load(files)
    result = estimate(plan, cluster, catalog)
    c1, c2, item, head = result["rows"]
    # c1: 3600 steps x 2 s = 2 h; 6 checkpoints x 36 s = 0.06 h; 0.5/h x 2.06 h = 1.03 interruptions,
    # each redoing 300 steps x 2 s = 600 s plus a 300 s restart: 0.2575 h lost.
    assert c1["interruptions"] == pytest.approx(1.03)
    assert c1["lost_hours"] == pytest.approx(0.2575)
    assert c1["node_hours_on_demand"] == pytest.approx(4.12) and c1["node_hours_spot"] == pytest.approx(4.635)
    assert c1["gpu_hours"] == pytest.approx(9.27)
    assert c1["usd_on_demand"] == pytest.approx(41.2) and c1["usd_spot"] == pytest.approx(18.54)
    # c2: FLOPs model, 1e12 x 8 / (2 nodes x 2 GPUs x 100e12 x 0.5) = 0.04 s/step; 1000 steps = 40 s.
    assert c2["step_seconds"] == pytest.approx(0.04) and c2["wall_hours"] == pytest.approx(40 / 3600)
    assert c2["usd_on_demand"] == pytest.approx(2 * 40 / 3600 * 10)
    # Line item on an on-demand node type: the same price in both columns.
    assert item["usd_on_demand"] == item["usd_spot"] == pytest.approx(3.0)
    # Head: up for every item's wall time, on demand at 0.5 $/h.
    assert head["usd_on_demand"] == pytest.approx((2.06 + 40 / 3600 + 3) * 0.5)
    assert head["usd_spot"] == pytest.approx((2.3175 + 40 / 3600 + 3) * 0.5)
    totals = result["totals"]
    assert totals["usd_spot"] == pytest.approx(sum(row["usd_spot"] for row in result["rows"]))


@pytest.mark.parametrize("change, words", [
    (lambda p: p["cycles"][0].update(node_type="mystery"), "cycles.0.node_type: node type 'mystery' uses instance type 'gpu.unpriced'"),
    (lambda p: p["cycles"][0].update(node_type="nowhere"), "cycles.0.node_type: unknown node type 'nowhere'"),
    (lambda p: p["cycles"][0].update(nodes=-1), "cycles.0.nodes"),
    (lambda p: p["cycles"][1].pop("steps"), "cycles.1.steps: Field required"),
    (lambda p: p["line_items"][0].update(hourz=3), "line_items.0.hourz: unknown field"),
    (lambda p: p["cycles"][0].update(step_time={"source": "measured"}), "cycles.0.step_time.run"),
    (lambda p: p.pop("flops_model"), "source flops_model needs a top-level flops_model"),
])
def test_bad_plans_name_the_file_and_field(files, change, words):
    plan = yaml.safe_load(yaml.safe_dump(PLAN))
    change(plan)
    (files / "bad.yaml").write_text(yaml.safe_dump(plan))
    with pytest.raises(CostError) as err:
        load(files, "bad.yaml")
    assert "bad.yaml" in str(err.value) and words in str(err.value)


def test_default_plan_estimate_prints_the_table_from_the_heavy_config(capsys):
    assert main(["estimate"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Bottom line: $") and "cycle-1" in out and "total" in out and "assumptions:" in out
    assert "ON-DEMAND plan" in out and "verify against the live price list" in out and "+-30 %" in out
    heavy = load_config(CONFIGS / "heavy.yaml")
    windows = heavy.train.batch_size * heavy.train.grad_accum
    assert (f"{heavy.train.crop}x{heavy.train.crop} output crops, ratio {heavy.data.ratio:g}, {heavy.data.window}-frame "
            f"windows") in out and f"{windows} windows per GPU per step" in out
    assert f"global batch {windows * 8} windows" in out  # one p4d.24xlarge: 8 GPUs
    assert main(["estimate", "--spot"]) == 0
    assert "SPOT plan" in capsys.readouterr().out
    assert main(["estimate", "--plan", "/nonexistent.yaml"]) == 2


def test_a_plan_that_disagrees_with_its_training_config_is_refused(files):
    smoke = load_config(CONFIGS / "smoke.yaml")
    per_gpu = smoke.train.batch_size * smoke.train.grad_accum
    plan = yaml.safe_load(yaml.safe_dump(PLAN))
    plan["training_config"] = str(CONFIGS / "smoke.yaml")
    del plan["flops_model"]["flops_per_sample"]  # counted from the config
    plan["cycles"][0]["global_batch"] = per_gpu * 2 * 2 + 1  # 2 nodes x 2 GPUs
    (files / "bad.yaml").write_text(yaml.safe_dump(plan))
    with pytest.raises(CostError, match=rf"cycles.0.global_batch {per_gpu * 4 + 1} disagrees with .*smoke.yaml"):
        load(files, "bad.yaml")
    plan["cycles"][0]["global_batch"] = per_gpu * 2 * 2
    plan["flops_model"]["flops_per_sample"] = 1e12
    (files / "bad.yaml").write_text(yaml.safe_dump(plan))
    with pytest.raises(CostError, match=r"flops_per_sample 1e\+12 disagrees with .*counted"):
        load(files, "bad.yaml")
    del plan["flops_model"]["flops_per_sample"]
    del plan["cycles"][1]["global_batch"]
    (files / "good.yaml").write_text(yaml.safe_dump(plan))
    good, cluster, catalog = load(files, "good.yaml")
    assert estimate(good, cluster, catalog)["rows"][1]["global_batch"] == per_gpu * 2 * 2


def test_cli_errors_and_checkpoint_warning(files, tmp_path, capsys):
    common = ["--catalog", str(files / "vms.csv"), "--cluster", str(files / "cluster.yaml")]
    plan = yaml.safe_load(yaml.safe_dump(PLAN))
    plan["cycles"][0]["checkpoint_every"] = 10  # 360 checkpoints x 36 s = 3.6 h for 2 h of compute
    (files / "plan.yaml").write_text(yaml.safe_dump(plan))
    assert main([*common, "estimate", "--plan", str(files / "plan.yaml")]) == 0
    assert "WARNING c1: checkpoints cost 180% of compute" in capsys.readouterr().out
    assert main([*common, "report", "--plan", str(files / "plan.yaml"), "--runs", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main([*common, "memo", "--plan", str(files / "plan.yaml"), "--runs", str(tmp_path),
                 "--out", str(tmp_path / "missing" / "memo.md")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_memo_and_report_before_the_first_run(tmp_path, monkeypatch, capsys):
    """The memo's first use: no run yet, so no ./oss-runs. With the default --runs the registry is empty (every
    cycle of the default plan not started, $0 spent, one line naming where it looked and how to name another), and
    nothing is created; the same path typed as --runs is still an error naming the flag as typed."""
    from oss_cluster.cost.__main__ import DEFAULT_PLAN

    monkeypatch.chdir(tmp_path)
    cycles = [cycle["name"] for cycle in yaml.safe_load(DEFAULT_PLAN.read_text())["cycles"]]
    assert main(["memo", "--out", "memo.md"]) == 0
    text = (tmp_path / "memo.md").read_text()
    assert text.startswith("# Multi-cycle Heavy training cost memo") and "**Bottom line: $" in text
    notes = [line for line in text.splitlines() if line.startswith("No runs found under ./oss-runs")]
    assert len(notes) == 1 and "--runs PATH or --runs s3://bucket/prefix" in notes[0]
    assert "No started runs: $0.00 spent so far." in text
    for cycle in cycles:
        assert f"| {cycle} | 0 |" in text and text.split(f"| {cycle} | 0 |")[1].split("\n")[0].endswith(
            "| - | not started | - |")
    assert "(runs in no cycle)" not in text
    capsys.readouterr()
    assert main(["report"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("No runs found under ./oss-runs") and "$0.00 spent" in out
    assert all(re.search(rf"^{cycle} +0 .* - +not started", out, re.M) for cycle in cycles)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["memo.md"]  # no ./oss-runs made

    assert main(["memo", "--runs", "./oss-runs", "--out", "typed.md"]) == 2
    assert "--runs ./oss-runs: no such folder" in capsys.readouterr().err and not (tmp_path / "typed.md").exists()
    (tmp_path / "oss-runs").mkdir()  # once the folder is there, the default is read as a registry
    assert main(["report"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("runs under ") and "No runs found" not in out


def test_report_and_memo_from_a_real_smoke_run(files, tmp_path, ray_local, monkeypatch, capsys):
    from oss_cluster.train.distributed import train_distributed

    monkeypatch.setenv("OSS_NODE_TYPE", "trainer")  # this process is priced as the plan's spot trainer node
    cfg = load_config(CONFIGS / "smoke.yaml", [f"storage.root={tmp_path / 'runs'}", "model.name=student_pico",
                                               "data.out_size=[48,64]", "train.crop=32", "train.steps=2",
                                               "train.eval_every=2", "train.checkpoint_every=2"])
    name, _ = train_distributed(cfg)
    plan = yaml.safe_load(yaml.safe_dump(PLAN))
    plan["cycles"][0]["runs"] = [name]
    plan["cycles"][1]["steps"] = 400_000  # 4.4 h at 0.04 s/step: MFU changes show in whole dollars
    plan["cycles"].append({**plan["cycles"][1], "name": "c3", "step_time": {"source": "measured", "run": name}})
    (files / "plan.yaml").write_text(yaml.safe_dump(plan))
    common = ["--catalog", str(files / "vms.csv"), "--cluster", str(files / "cluster.yaml")]
    runs = str(tmp_path / "runs")
    capsys.readouterr()
    assert main([*common, "report", "--plan", str(files / "plan.yaml"), "--runs", runs]) == 0
    out = capsys.readouterr().out
    line = next(text for text in out.splitlines() if text.startswith(name))
    hours, rate, spent = float(line.split()[2]), float(line.split()[-2]), float(line.split()[-1])
    # Spend counts the worker nodes from when the workers started (not the driver's dataset build before).
    assert 0 < hours < 1 and rate == pytest.approx(4.0) and 0 < spent <= hours * 4.0 + 0.005
    assert "trainer x1" in line and "c1" in out

    memo = tmp_path / "memo.md"
    assert main([*common, "memo", "--plan", str(files / "plan.yaml"), "--runs", runs, "--out", str(memo)]) == 0
    text = memo.read_text()
    for heading in ("## Plan", "## Assumptions", "## Estimate", "## Actuals so far", "## Variance", "## Sensitivity"):
        assert heading in text
    assert text.splitlines()[2].startswith("**Bottom line: $")  # first, under the title
    assert "| c2 | 0 |" in text and "not started" in text  # a cycle with no runs is not a negative variance
    assert "Step time x spot price:" in text
    assert f"measured: median step_time_s of run {name}" in text and name in text
    # Parse the estimate's total row and the sensitivity grid back out of the Markdown.
    total = next(row for row in text.splitlines() if row.startswith("| **total**"))
    spot_total = float(total.split("|")[5].strip(" *").replace(",", ""))
    catalog, cluster = load_catalog(files / "vms.csv"), load_node_types(files / "cluster.yaml")
    from oss_cluster.cost.__main__ import _runs_reader
    from oss_cluster.storage import open_storage

    expected = estimate(load_plan(files / "plan.yaml", cluster, catalog), cluster, catalog,
                        _runs_reader(open_storage(runs)))["totals"]["usd_spot"]
    assert spot_total == pytest.approx(expected, abs=0.5)
    grid_start = text.index("| step time \\ interruption rate")
    grid = [row for row in text[grid_start:].splitlines()[2:6]]
    values = [[float(cell.replace(",", "")) for cell in row.split("|")[2:-1]] for row in grid]
    assert len(values) == 4 and all(len(row) == 4 for row in values)
    assert all(row == sorted(row) for row in values)  # more interruptions never cost less
    assert [row[1] for row in values] == sorted(row[1] for row in values)  # slower steps cost more
    assert values[0][1] < values[-1][1]
    prices = text.index("| step time \\ spot price")
    rows = [[float(c.replace(",", "")) for c in row.split("|")[2:-1]] for row in text[prices:].splitlines()[2:6]]
    assert all(row == sorted(row) and row[0] < row[-1] for row in rows)  # dearer spot, dearer plan
