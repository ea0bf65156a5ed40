"""Pipelines: model registry, tiny offline builders, one adapter per modality, the job runner."""
