"""RouterConfig: models, loading and validation, JSON Schema export."""

from event_router.config.models import RouterConfig

__all__ = ["RouterConfig"]
