"""RouterConfig: models, loading and validation, JSON Schema export."""

from event_router.config.loader import ConfigError, load_config, parse_config
from event_router.config.models import RouterConfig

__all__ = ["ConfigError", "RouterConfig", "load_config", "parse_config"]
