#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv. Safe to run again: it only
# reinstalls when pyproject.toml changed. Usage: scripts/setup.sh [extra, e.g. dev]
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"

pick_python() {
  for py in "${GENACCEL_PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$py" ] || continue
    if command -v "$py" >/dev/null 2>&1 &&
       "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  echo "genaccel needs Python >= 3.11; set GENACCEL_PYTHON to one" >&2; return 1
}

# Speech (genaccel/refdata/speech.py) drives Debian's libespeak-ng in process: install it when it
# is missing and apt-get can. Without it the speech models and their tests are unavailable.
if ! ldconfig -p 2>/dev/null | grep -q libespeak-ng && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng; } \
    >/dev/null 2>&1 || echo "setup: could not install espeak-ng; speech will be unavailable" >&2
fi

if [ ! -x .venv/bin/python ]; then
  "$(pick_python)" -m venv .venv
fi
py=.venv/bin/python

# torch: keep whatever build is importable (e.g. a CUDA one); otherwise install the pinned
# release. GENACCEL_TORCH_INDEX may point pip at a CPU-only index on machines whose default
# index would serve a CUDA build.
if ! "$py" -c 'import torch' >/dev/null 2>&1; then
  echo "setup: installing torch==2.13.0" >&2
  if [ -n "${GENACCEL_TORCH_INDEX:-}" ]; then
    "$py" -m pip install -q "torch==2.13.0" --index-url "$GENACCEL_TORCH_INDEX"
  else
    "$py" -m pip install -q "torch==2.13.0"
  fi
fi

target="."
[ -n "$extra" ] && target=".[$extra]"
stamp=".venv/.genaccel-installed-${extra:-base}"
want="$(sha256sum pyproject.toml | cut -c1-16) $extra"
if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp"; then
  echo "setup: installing genaccel $target" >&2
  "$py" -m pip install -q -e "$target"
  echo "$want" > "$stamp"
fi
