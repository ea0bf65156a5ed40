"""Celery workers (distributed shape). They call the same ``pipelines.runner.JobRunner`` as the
embedded dispatcher; the Celery app, tasks and per-worker model cache arrive with the service issue."""
