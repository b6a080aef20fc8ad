"""Training: the single-process trainer (local.py) whose step and evaluation functions every job reuses."""
