"""RouterConfigs that tests and benchmarks build again and again."""

from __future__ import annotations

from typing import Any

from event_router.config.models import RouterConfig
from event_router.core import RouterContext


def webhook_context(name: str, processor: dict[str, Any], *, port: int = 8080) -> RouterContext:
    """A RouterContext named ``name``: the webhook provider ``hook`` on
    127.0.0.1:``port``/webhook, then ``processor`` (an ``eventProcessor`` mapping)."""
    config = RouterConfig.model_validate(
        {
            "apiVersion": "event-router.vmware.com/v1alpha1",
            "kind": "RouterConfig",
            "metadata": {"name": name},
            "eventProvider": {
                "type": "webhook",
                "name": "hook",
                "webhook": {"bindAddress": f"127.0.0.1:{port}", "path": "/webhook"},
            },
            "eventProcessor": processor,
        }
    )
    return RouterContext(config=config)
