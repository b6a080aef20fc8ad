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
# System packages the tests drive, from Debian: chromium for the dashboard's browser test (Playwright uses it as
# is; nothing is downloaded), and on x86-64 qemu-user, whose emulated AVX2 CPU (no VNNI) the INT8 tests run
# ONNX Runtime on.
MISSING=()
command -v chromium >/dev/null 2>&1 || MISSING+=(chromium)
if [ "$(uname -m)" = x86_64 ] && ! command -v qemu-x86_64 >/dev/null 2>&1; then MISSING+=(qemu-user); fi
if [ ${#MISSING[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo -n); fi
    if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then
        "${SUDO[@]}" apt-get update -qq && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${MISSING[@]}" >/dev/null
    else
        echo "bootstrap: ${MISSING[*]} missing and cannot be installed here (needs apt-get as root or sudo);" \
             "the tests that need them will fail or skip until they are installed" >&2
    fi
fi
