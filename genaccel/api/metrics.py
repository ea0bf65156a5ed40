"""``GET /metrics`` in the Prometheus text format (0.0.4), from the store's counters.

Written by hand: it is a dozen lines of text, and the store (not this process) holds the
numbers, so prometheus_client's in-process registry would not help.
"""

from __future__ import annotations

from genaccel.store.base import LATENCY_WINDOW, StoreStats

BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def render_metrics(stats: StoreStats) -> str:
    lines = ["# HELP genaccel_jobs Jobs in the store by state.", "# TYPE genaccel_jobs gauge"]
    lines += [f'genaccel_jobs{{state="{state}"}} {n}' for state, n in sorted(stats.counts.items())]
    lines += ["# HELP genaccel_queue_depth Jobs waiting for a worker.", "# TYPE genaccel_queue_depth gauge",
              f"genaccel_queue_depth {stats.counts.get('queued', 0)}"]
    lines += [f"# HELP genaccel_job_seconds Run time of the last {LATENCY_WINDOW} finished jobs.",
              "# TYPE genaccel_job_seconds histogram"]
    for bound in BUCKETS:
        n = sum(1 for x in stats.latencies if x <= bound)
        lines.append(f'genaccel_job_seconds_bucket{{le="{bound:g}"}} {n}')
    lines += [f'genaccel_job_seconds_bucket{{le="+Inf"}} {len(stats.latencies)}',
              f"genaccel_job_seconds_sum {sum(stats.latencies):.6f}",
              f"genaccel_job_seconds_count {len(stats.latencies)}"]
    lines += [f"# HELP genaccel_worker_busy_seconds Time each worker spent on the last {LATENCY_WINDOW} jobs.",
              "# TYPE genaccel_worker_busy_seconds gauge"]
    lines += [f'genaccel_worker_busy_seconds{{worker="{_label(w)}"}} {s:.6f}' for w, s in sorted(stats.busy_s.items())]
    lines += ["# HELP genaccel_cache_hits Service-cache hits over the recent finished jobs (prompt: text-encoder "
              "calls answered from the prompt-embedding cache; result: identical requests answered at once).",
              "# TYPE genaccel_cache_hits gauge"]
    lines += [f'genaccel_cache_hits{{cache="{name}"}} {hits}' for name, (hits, _) in sorted(stats.caches.items())]
    lines += ["# HELP genaccel_cache_misses Service-cache misses over the recent finished jobs.",
              "# TYPE genaccel_cache_misses gauge"]
    lines += [f'genaccel_cache_misses{{cache="{name}"}} {misses}' for name, (_, misses) in sorted(stats.caches.items())]
    lines += ["# HELP genaccel_cache_hit_ratio hits / (hits + misses) over the recent finished jobs.",
              "# TYPE genaccel_cache_hit_ratio gauge"]
    lines += [f'genaccel_cache_hit_ratio{{cache="{name}"}} {hits / (hits + misses):.4f}'
              for name, (hits, misses) in sorted(stats.caches.items()) if hits + misses]
    return "\n".join(lines) + "\n"
