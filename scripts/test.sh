#!/usr/bin/env bash
# Install what the tests need and run the whole suite (lint, types, pytest). Extra arguments go
# to pytest, e.g. scripts/test.sh -k batch
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
bash scripts/setup.sh dev

# Tests marked `redis` need a server on 127.0.0.1:6379: start one when none answers.
if command -v redis-server >/dev/null 2>&1 && ! (redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG); then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
fi

# Tests marked `browser` drive Debian's Chromium headless (never a browser build downloaded by
# Playwright): install it when it is missing and apt-get can. Without it they skip, or fail under CI.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
    >/dev/null 2>&1 || echo "test.sh: could not install chromium; browser tests will skip (fail under CI)" >&2
fi

.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
