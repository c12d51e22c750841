#!/usr/bin/env bash
# The test suite: sets up .venv if missing, then lint, type check and pytest (slow end-to-end tests last).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
echo "[test] ruff" && ruff check rlvr_ray tests bench
echo "[test] mypy" && mypy
echo "[test] pytest (fast)" && python -m pytest -m "not slow" -q "$@"
echo "[test] pytest (slow, end to end)" && python -m pytest -m slow -q --durations=0 "$@"
