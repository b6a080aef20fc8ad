"""Cost of the multi-cycle Heavy training: price catalog, plan, estimate, actuals from runs, memo.

    python -m oss_cluster.cost estimate [--plan cost/heavy_multicycle.yaml] [--spot]
    python -m oss_cluster.cost report [--runs ./oss-runs]
    python -m oss_cluster.cost memo --out memo.md
    python -m oss_cluster.cost flops --model hat_heavy --crop 96 --window 4 --ratio 2
"""
