#!/usr/bin/env bash
# The benchmark runs quoted in docs/benchmarks.md, in the order they ran (2 cores, nothing else running).
set -euxo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
unset OMP_NUM_THREADS
G=.venv/bin/genaccel
$G bench --matrix bench/distill-sd.yaml --json bench/results/distill-sd.json
$G bench --matrix bench/sd-prune.yaml --json bench/results/sd-prune.json
$G bench --json bench/results/reference-default.json
$G bench --matrix bench/sd-caches.yaml --json bench/results/sd-caches.json
$G bench --matrix bench/distill-dit.yaml --json bench/results/distill-dit.json
$G bench --matrix bench/dit-caches.yaml --json bench/results/dit-caches.json
$G bench --matrix bench/dit-density.yaml --json bench/results/dit-density.json
