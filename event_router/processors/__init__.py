"""Event processors: one module per type; the registry maps a config ``type`` to its class.

Adding a processor is one new module plus one line here.
"""

from __future__ import annotations

import importlib

from event_router.core import Processor

REGISTRY: dict[str, str] = {
    "knative": "event_router.processors.knative:KnativeProcessor",
    "openfaas": "event_router.processors.openfaas:OpenFaaSProcessor",
    "aws_event_bridge": "event_router.processors.eventbridge:EventBridgeProcessor",
}


def processor_class(type_: str) -> type[Processor]:
    try:
        target = REGISTRY[type_]
    except KeyError:
        allowed = ", ".join(sorted(REGISTRY))
        raise ValueError(
            f"eventProcessor.type: unknown processor {type_!r} (allowed: {allowed})"
        ) from None
    module, _, name = target.partition(":")
    cls: type[Processor] = getattr(importlib.import_module(module), name)
    return cls
