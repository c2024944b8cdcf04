"""The HTTP side: a quart-trio app that owns no tasks (REST, health, metrics, OpenAPI)."""
