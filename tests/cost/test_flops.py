"""The FLOPs counter counts every operation: torch's formulas for convolutions and matrix products, resampling
taps, pooling windows, pointwise and reduction operations, the CPU attention kernel; data movement is free."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from oss_cluster.cost.flops import OpCounter, step_costs, step_flops


def count(fn, *args):
    with OpCounter() as counter, torch.no_grad():
        fn(*args)
    return counter


def test_convolution_matches_torch_and_pointwise_ops_count_their_outputs():
    x, conv = torch.rand(1, 3, 8, 10), torch.nn.Conv2d(3, 4, 3, padding=1)
    with FlopCounterMode(display=False) as reference, torch.no_grad():
        conv(x)
    assert count(conv, x).total == reference.get_total_flops()  # bias add included in torch's conv op
    assert count(lambda t: torch.sigmoid(t) * 2 + 1, x).total == 3 * x.numel()
    assert count(lambda t: t.sum(dim=1), x).total == x.numel()
    assert count(lambda t: torch.cat([t, t[:, :, 1:]], 2).view(-1).clone(), x).total == 0  # data movement


def test_resampling_and_pooling_count_their_taps():
    x, grid = torch.rand(1, 2, 6, 6), torch.rand(1, 5, 7, 2) * 2 - 1
    out = 2 * 5 * 7
    assert count(lambda: F.grid_sample(x, grid, mode="bilinear", align_corners=False)).total == 2 * 4 * out
    assert count(lambda: F.grid_sample(x, grid, mode="bicubic", align_corners=False)).total == 2 * 16 * out
    assert count(lambda: F.grid_sample(x, grid, mode="nearest", align_corners=False)).total == 0
    assert count(lambda: F.avg_pool2d(x, 3, stride=1)).total == 9 * 2 * 4 * 4


def test_cpu_attention_is_counted():
    q = k = v = torch.rand(1, 2, 16, 8)
    with FlopCounterMode(display=False) as reference, torch.no_grad():
        F.scaled_dot_product_attention(q, k, v)
    counted = count(F.scaled_dot_product_attention, q, k, v)
    assert counted.by_op and counted.total >= 2 * 2 * 2 * 16 * 16 * 8  # QK^T and AV
    assert reference.get_total_flops() in (0, counted.total)  # torch's table misses the CPU kernel


def test_student_step_counts_more_than_its_convolutions():
    """The accumulation the students run at output resolution is counted, not only their convolutions."""
    total = step_flops("student_pico", (24, 32), (36, 48))
    assert total > 0
    from oss_cluster.cost.flops import step_inputs
    from oss_cluster.models import build_model

    model, inputs = build_model("student_pico").eval(), step_inputs((24, 32), (36, 48))
    with OpCounter() as counter, torch.no_grad():  # the step only, not making its inputs
        model(*inputs)
    assert counter.total == pytest.approx(total)
    assert counter.by_op["aten.grid_sampler_2d"] > 0 and counter.total > counter.by_op["aten.convolution"] * 1.2


def test_flops_command_prints_training_flops_with_the_warm_up():
    done = subprocess.run([sys.executable, "-m", "oss_cluster.cost", "flops", "--model", "student_pico", "--crop", "24",
                           "--window", "2", "--ratio", "1.5"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "16 warm-up frames" in done.stdout and "training FLOPs per window" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "oss_cluster.cost", "flops", "--warmup", "often"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--warmup 'often'" in bad.stderr


def test_bytes_moved_count_reads_and_writes_and_views_move_nothing():
    x = torch.rand(1, 8, 16, 16)
    weight = torch.rand(8, 8, 3, 3)
    with OpCounter() as counter:
        x.view(1, 8, 256).permute(0, 2, 1)  # views: nothing moves
    assert counter.bytes == 0
    with OpCounter() as counter:
        y = F.conv2d(x, weight, padding=1)  # reads x and the weights, writes y
        torch.add(y, y)  # reads y once (the same tensor twice), writes the sum
    assert counter.bytes == 4 * (x.numel() + weight.numel() + y.numel()) + 4 * 2 * y.numel()


def test_step_costs_compulsory_bytes_are_the_step_inputs_and_outputs():
    costs = step_costs("student_pico", (18, 32), (27, 48))
    render, output = 18 * 32, 27 * 48
    # lr 3 + depth 1 + motion 2 + previous depth 1 per render pixel, jitter 2, history 4 in and 4 out, colour 3 out
    assert costs["io_bytes"] == 4 * (7 * render + 2 + (4 + 4 + 3) * output)
    assert costs["graph_bytes"] > 10 * costs["io_bytes"]  # the graph as written moves far more than it must
    assert costs["flops"] == step_flops("student_pico", (18, 32), (27, 48))
