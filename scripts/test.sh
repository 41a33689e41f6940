#!/usr/bin/env bash
# The README's test command: creates .venv (if missing), installs lth_jax[test], runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LTH_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[test]"
exec "$VENV/bin/python" -m pytest -n 2 -q tests "$@"
