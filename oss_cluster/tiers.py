"""The three product tiers (DESIGN.md "Tiers") and their per-output-pixel FLOPs budgets.

The budget is computed, never typed in:
    budget = peak_flops × efficiency × latency / (out_w × out_h)      [FLOPs per output pixel]

`python -m oss_cluster.tiers` prints the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

# Achievable fraction of the hardware's peak that a small conv student reaches (DESIGN.md).
ASSUMED_EFFICIENCY = 0.5


def ratio_fraction(ratio: float | str | Fraction) -> Fraction:
    """The small fraction an SR ratio stands for: 1.333 or "4/3" -> 4/3, 1.5 -> 3/2, 2.0 -> 2 (denominator at most
    16, within 1e-3 of the number given). Sizes scale by it exactly: 1920 x 4/3 = 2560, where 1920 x 1.333 rounds
    to 2559."""
    value = Fraction(ratio) if isinstance(ratio, str) else Fraction(ratio).limit_denominator(16)
    if abs(float(value) - float(Fraction(ratio))) > 1e-3:
        raise ValueError(f"ratio {ratio}: not within 1e-3 of a fraction with a denominator up to 16")
    return value


def scaled_size(h: int, w: int, ratio: float | str | Fraction) -> tuple[int, int]:
    """(H, W) = (h, w) x ratio, rounded to the nearest pixel with the ratio taken as its exact fraction."""
    exact = ratio_fraction(ratio)
    return round(h * exact), round(w * exact)


@dataclass(frozen=True)
class Tier:
    name: str
    teacher: str  # registered teacher model name
    teacher_label: str
    teacher_params: int  # parameter target
    student_param_cap: int
    hardware: str  # target hardware, as the product table names it
    reference_gpu: str  # the device whose peak figure sets the budget
    peak_tflops: float  # dense peak at `precision`, TFLOP/s
    precision: str
    latency_ms: float  # ship latency target per frame
    input_size: tuple[int, int]  # (W, H) render resolution
    output_size: tuple[int, int]  # (W, H) display resolution
    memory_gbps: float = 0.0  # the reference device's memory bandwidth, GB/s (1e9 bytes/s)
    memory_source: str = ""  # where that figure comes from
    efficiency: float = ASSUMED_EFFICIENCY

    @property
    def ratio(self) -> float:
        """SR ratio per axis (output / input)."""
        return self.output_size[0] / self.input_size[0]

    @property
    def output_pixels(self) -> int:
        return self.output_size[0] * self.output_size[1]

    @property
    def flops_per_output_pixel(self) -> float:
        """FLOPs a student may spend per output pixel to meet the latency target."""
        return self.peak_tflops * 1e12 * self.efficiency * self.latency_ms * 1e-3 / self.output_pixels


TIERS: dict[str, Tier] = {
    tier.name: tier
    for tier in (
        Tier(
            name="pico",
            teacher="hat_tiny",
            teacher_label="HAT-Tiny",
            teacher_params=3_000_000,
            student_param_cap=400_000,
            hardware="Steam Deck, integrated GPUs, mobile dGPU",
            reference_gpu="Steam Deck APU",
            peak_tflops=3.2,
            precision="FP16",
            latency_ms=2.0,
            input_size=(1280, 720),
            output_size=(1920, 1080),
            memory_gbps=88.0,
            memory_source="Steam Deck: LPDDR5 at 5500 MT/s on four 32-bit channels (Valve's tech specs) = 88 GB/s",
        ),
        Tier(
            name="standard",
            teacher="hat_small",
            teacher_label="HAT-Small",
            teacher_params=5_000_000,
            student_param_cap=1_000_000,
            hardware="RTX 30+, RX 6700+, Arc, M2+",
            reference_gpu="RTX 3060-class",
            peak_tflops=51.0,
            precision="FP16 dense tensor",
            latency_ms=3.0,
            input_size=(1920, 1080),
            output_size=(2560, 1440),
            memory_gbps=360.0,
            memory_source="RTX 3060 12 GB: 15 Gbps GDDR6 on a 192-bit bus (NVIDIA's specifications) = 360 GB/s",
        ),
        Tier(
            name="heavy",
            teacher="hat_heavy",
            teacher_label="HAT-L-derived Heavy",
            teacher_params=17_000_000,
            student_param_cap=2_000_000,
            hardware="RTX 4080+, RX 7900+, M4 Max",
            reference_gpu="RTX 4080-class",
            peak_tflops=195.0,
            precision="FP8 dense tensor",
            latency_ms=4.0,
            input_size=(2560, 1440),
            output_size=(3840, 2160),
            memory_gbps=716.8,
            memory_source="RTX 4080: 22.4 Gbps GDDR6X on a 256-bit bus (NVIDIA's specifications) = 716.8 GB/s",
        ),
    )
}


def get_tier(name: str) -> Tier:
    try:
        return TIERS[name]
    except KeyError:
        raise KeyError(f"unknown tier {name!r}; known tiers: {', '.join(TIERS)}") from None


def format_table() -> str:
    header = (
        "tier", "teacher", "student cap", "target hardware", "peak", "memory", "latency",
        "input -> output", "ratio", "FLOPs/out px",
    )
    rows = [header]
    for t in TIERS.values():
        rows.append((
            t.name,
            f"{t.teacher_label} (~{t.teacher_params / 1e6:.0f}M)",
            f"<= {t.student_param_cap / 1e6:g}M params",
            t.hardware,
            f"{t.peak_tflops:g} TFLOP/s {t.precision} ({t.reference_gpu})",
            f"{t.memory_gbps:g} GB/s",
            f"< {t.latency_ms:g} ms",
            f"{t.input_size[0]}x{t.input_size[1]} -> {t.output_size[0]}x{t.output_size[1]}",
            f"{t.ratio:.3f}x",
            f"{t.flops_per_output_pixel:,.0f}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(
        f"FLOPs/out px = peak x efficiency ({ASSUMED_EFFICIENCY:.0%}) x latency / output pixels"
    )
    lines += [f"memory {t.name}: {t.memory_source}" for t in TIERS.values()]
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m oss_cluster.tiers",
                                     description="Print the tier table: teacher, student cap, target hardware and "
                                                 "peak, latency target, render -> display size, ratio and the "
                                                 "FLOPs-per-output-pixel budget (peak x efficiency x latency / "
                                                 "output pixels).")
    parser.parse_args(argv)
    print(format_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
