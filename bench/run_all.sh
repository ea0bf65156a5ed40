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
# Session 6 (2026-11-30): the CPU report (issue 19 item 6: every technique alone and every profile,
# then cost scaling with fitted exponents) and service throughput with 1, 2 and 4 workers.
$G bench --matrix bench/cpu-report-sd.yaml --json bench/results/cpu-report-sd.json
$G bench --matrix bench/cpu-report-dit.yaml --json bench/results/cpu-report-dit.json
.venv/bin/python bench/scaling.py --out bench/results/scaling
.venv/bin/python bench/service.py --jobs 200 --probes 20 --workers 1,2,4 --model tiny-sd --steps 2 \
  --json bench/results/service-scaling.json
# On a CUDA machine (not part of this run): python bench/gpu_check.py bench/results/gpu-NAME
