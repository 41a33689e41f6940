#!/usr/bin/env bash
# The README's main-job command: creates .venv (if missing), installs lth_jax, and runs
# the embedded default width sweep (random targets; no data, no download).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LTH_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[plots]"
exec "$VENV/bin/python" -m experiments.sweep "$@"
