"""genaccel: generative-media acceleration service (jobs, workers, fast pipelines)."""

__version__ = "0.1.0"
