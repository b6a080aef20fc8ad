#!/usr/bin/env bash
# Create ./.venv and install oss-cluster with its dev extra into it. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/pip install --quiet --disable-pip-version-check)
"${PIP[@]}" --upgrade pip setuptools wheel
# torch first and pinned, with the torchvision built for it (a mismatched pair fails to import).
"${PIP[@]}" "torch==2.14.1" "torchvision==0.29.1"
# DeepSpeed ships only an sdist whose setup imports torch: build it against the torch above
# instead of letting pip fetch a second torch into an isolated build environment.
"${PIP[@]}" --no-build-isolation "deepspeed>=0.16"
"${PIP[@]}" -e ".[dev]"
