"""Side-by-side benchmarks: a matrix of (model, profile, steps, size, batch) rows measured in one
process, with speed and quality, written as JSON, a markdown table and a PNG plot."""

from genaccel.bench.matrix import BenchMatrix, BenchRow, load_matrix

__all__ = ["BenchMatrix", "BenchRow", "load_matrix"]
