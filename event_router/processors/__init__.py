"""Event processors: one module per type; the registry maps a config ``type`` to its class.

Adding a processor is one new module plus one line here.
"""

from __future__ import annotations

from event_router.core import Processor, load_registered

REGISTRY: dict[str, str] = {
    "knative": "event_router.processors.knative:KnativeProcessor",
    "openfaas": "event_router.processors.openfaas:OpenFaaSProcessor",
    "aws_event_bridge": "event_router.processors.eventbridge:EventBridgeProcessor",
}


def processor_class(type_: str) -> type[Processor]:
    cls: type[Processor] = load_registered(REGISTRY, type_, "eventProcessor.type")
    return cls
