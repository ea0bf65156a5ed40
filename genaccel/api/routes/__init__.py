"""The API's routers: ``jobs`` (jobs, events, artifacts), ``catalogue`` (models, profiles),
``operations`` (health, metrics)."""
