#!/usr/bin/env bash
# Creates .venv and installs impala_lit with its test tools. Safe to run again.
# TORCH_SPEC picks the torch build: the default is the CPU wheel; on a GPU machine
# use e.g. TORCH_SPEC="torch" to let pip choose a CUDA build.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[dev,procgen,docs]"
# Procgen's packages without their stale numpy<2 pins (why it is safe: requirements-procgen.txt)
.venv/bin/python -m pip install -q --no-deps -r requirements-procgen.txt
echo "impala_lit is installed in .venv"
