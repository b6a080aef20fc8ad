"""The research dashboard: every run, its curves, strips and clips, the tiers, sweeps, spend and claims.

`python -m oss_cluster.dashboard build|serve` (see __main__.py); collect.py gathers the data from storage,
site.py writes and serves the static site (static/: the pages, served by the project itself).
"""
