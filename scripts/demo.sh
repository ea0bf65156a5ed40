#!/usr/bin/env bash
# Set up, then render on the embedded default (no Redis, no server, offline built-in model) and
# print where the images are. Arguments go to `genaccel render`; without any, a default prompt.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
bash scripts/setup.sh
[ $# -gt 0 ] || set -- "a blue circle on a white background" --num-outputs 2
exec .venv/bin/genaccel render "$@"
