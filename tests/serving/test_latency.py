"""jobs/latency_test.py on the session's Ray instance (whose head carries the tier_* resources)."""

import json
import sys
from pathlib import Path

import pytest

from oss_cluster.serving.latency import roofline_ms, student_costs_per_frame, student_flops_per_frame
from oss_cluster.tiers import TIERS

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "jobs"))


def test_roofline_is_the_larger_of_compute_and_memory_time():
    flops = student_flops_per_frame("student_pico", TIERS["pico"].input_size, 1.5)
    per_pixel = flops / (1920 * 1080)
    assert 0 < per_pixel <= TIERS["pico"].flops_per_output_pixel  # the student fits its budget ...
    assert roofline_ms("pico", flops) == pytest.approx(flops / (3.2e12 * 0.5) * 1e3)
    assert roofline_ms("pico", flops) <= TIERS["pico"].latency_ms  # ... so its compute time meets the target
    costs = student_costs_per_frame("student_pico", TIERS["pico"].input_size, 1.5)
    memory = costs["io_bytes"] / (88e9 * 0.5) * 1e3  # the Steam Deck's 88 GB/s at the same 50 %
    assert roofline_ms("pico", flops, costs["io_bytes"]) == pytest.approx(max(roofline_ms("pico", flops), memory))


def test_latency_job_prints_and_writes_the_per_tier_table(tmp_path, ray_local, capsys):
    import latency_test

    out = tmp_path / "latency.json"
    assert latency_test.main(["--tiers", "pico", "standard", "--scale", "0.05", "--frames", "4", "--warmup", "1",
                              "--out", str(out), "--storage", str(tmp_path / "runs")]) == 0
    rows = json.loads(out.read_text())
    (kept,) = (tmp_path / "runs" / "latency").glob("*.json")  # the dashboard's tiers page reads these
    assert json.loads(kept.read_text())["rows"] == rows
    from oss_cluster.dashboard.site import build
    from oss_cluster.storage import open_storage

    tiers = {row["tier"]: row for row in build(open_storage(str(tmp_path / "runs")), tmp_path / "site")["tiers"]}
    assert tiers["pico"]["latency"]["http_ms"] == rows[0]["http_ms"] and tiers["heavy"]["latency"] is None
    assert [row["tier"] for row in rows] == ["pico", "standard"]
    for row in rows:
        assert row["pinned"] and row["backend"] == "onnxruntime" and row["verdict"] == "n/a (scaled)"
        assert row["render_size"] == [round(TIERS[row["tier"]].input_size[0] * 0.05),
                                      round(TIERS[row["tier"]].input_size[1] * 0.05)]
        for kind in ("in_process_ms", "http_ms"):
            stats = row[kind]
            assert stats["n"] == 4 and 0 < stats["p50"] <= stats["p95"] <= stats["p99"]
        assert row["http_ms"]["p50"] > 0 and row["roofline_target_ms"] > 0
    printed = capsys.readouterr().out
    assert "pico" in printed and "roofline" in printed and "[tier_pico]" in printed
