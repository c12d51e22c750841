#!/usr/bin/env bash
# The main job: sets up .venv if missing, then `python -m rlvr_ray.main [ARGS]` (local Ray + MLflow store).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
exec python -m rlvr_ray.main "$@"
