import subprocess
import sys

import pytest

from oss_cluster.tiers import TIERS, get_tier, ratio_fraction, scaled_size


def test_table_matches_design():
    pico, standard, heavy = TIERS["pico"], TIERS["standard"], TIERS["heavy"]
    assert (pico.input_size, pico.output_size, pico.latency_ms) == ((1280, 720), (1920, 1080), 2.0)
    assert (standard.input_size, standard.output_size, standard.latency_ms) == ((1920, 1080), (2560, 1440), 3.0)
    assert (heavy.input_size, heavy.output_size, heavy.latency_ms) == ((2560, 1440), (3840, 2160), 4.0)
    assert [t.student_param_cap for t in TIERS.values()] == [400_000, 1_000_000, 2_000_000]
    assert [t.teacher_params for t in TIERS.values()] == [3_000_000, 5_000_000, 17_000_000]
    assert pico.ratio == pytest.approx(1.5) and standard.ratio == pytest.approx(4 / 3) and heavy.ratio == pytest.approx(1.5)


def test_budget_is_computed_from_the_formula():
    for tier in TIERS.values():
        expected = tier.peak_tflops * 1e12 * tier.efficiency * tier.latency_ms / 1e3 / (tier.output_size[0] * tier.output_size[1])
        assert tier.flops_per_output_pixel == pytest.approx(expected)
    # DESIGN.md: roughly 1.5 k, 20 k and 47 k FLOPs per output pixel.
    assert TIERS["pico"].flops_per_output_pixel == pytest.approx(1_543, rel=0.01)
    assert TIERS["standard"].flops_per_output_pixel == pytest.approx(20_752, rel=0.01)
    assert TIERS["heavy"].flops_per_output_pixel == pytest.approx(47_020, rel=0.01)


def test_unknown_tier():
    with pytest.raises(KeyError, match="unknown tier 'ultra'"):
        get_tier("ultra")


def test_cli_prints_table():
    out = subprocess.run([sys.executable, "-m", "oss_cluster.tiers"], capture_output=True, text=True, check=True).stdout
    for needle in ("pico", "standard", "heavy", "1,543", "20,752", "47,020", "1280x720 -> 1920x1080"):
        assert needle in out


def test_sizes_scale_by_the_exact_ratio():
    """1920x1080 at the standard tier's 4/3 is 2560x1440 (1920 x 1.333 would round to 2559), whether the ratio is
    the tier's, the configs' 1.333 or the string '4/3'; every tier's render size scales to its display size."""
    from oss_cluster.config import load_config

    for ratio in (TIERS["standard"].ratio, 1.333, "4/3", load_config(None, ["data.ratio=4/3"]).data.ratio):
        assert scaled_size(1080, 1920, ratio) == (1440, 2560)
    for tier in TIERS.values():
        (w, h), (W, H) = tier.input_size, tier.output_size
        assert scaled_size(h, w, tier.ratio) == (H, W)
    assert str(ratio_fraction(1.5)) == "3/2"
    with pytest.raises(ValueError, match="1.4142"):
        ratio_fraction(1.4142)


def test_cli_help_is_help():
    out = subprocess.run([sys.executable, "-m", "oss_cluster.tiers", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("usage: python -m oss_cluster.tiers") and "FLOPs-per-output-pixel" in out
