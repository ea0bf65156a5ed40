#!/usr/bin/env bash
# The benchmark runs quoted in docs/benchmarks.md, in the order they ran (2 cores, nothing else running).
set -euxo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
unset OMP_NUM_THREADS
G=.venv/bin/genaccel
$G bench --matrix bench/distill-sd.yaml --json bench/results/distill-sd.json
$G bench --json bench/results/reference-default.json
$G bench --matrix bench/sd-caches.yaml --json bench/results/sd-caches.json
$G bench --matrix bench/distill-dit.yaml --json bench/results/distill-dit.json
$G bench --matrix bench/dit-caches.yaml --json bench/results/dit-caches.json
$G bench --matrix bench/dit-density.yaml --json bench/results/dit-density.json
# Session 4 (2026-11-29), in this order: the re-pruned model, batching, the SD-1.5-size comparisons.
$G bench --matrix bench/sd-prune.yaml --json bench/results/sd-prune.json
.venv/bin/python bench/batching.py --model shapes-sd --jobs 4 --steps 50 --rounds 3 --json bench/results/batching.json
.venv/bin/python bench/tome_vs_tomesd.py --size 256 --steps 10 --repeats 3 --json bench/results/tome_vs_tomesd.json
.venv/bin/python bench/tome_vs_tomesd.py --size 512 --steps 10 --repeats 2 --json bench/results/tome_vs_tomesd-512.json
