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
# The dashboard's browser test drives Debian's chromium (Playwright uses it as is; nothing is downloaded).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo -n); fi
    if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then
        "${SUDO[@]}" apt-get update -qq && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "bootstrap: chromium is missing and cannot be installed here (needs apt-get as root or sudo);" \
             "the dashboard browser test will fail until it is installed" >&2
    fi
fi
