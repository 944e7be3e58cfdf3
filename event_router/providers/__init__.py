"""Event providers: one module per type; the registry maps a config ``type`` to its class.

Adding a provider is one new module plus one line here.
"""

from __future__ import annotations

import importlib

from event_router.core import Provider

REGISTRY: dict[str, str] = {
    "vcenter": "event_router.providers.vcenter:VCenterProvider",
    "vcsim": "event_router.providers.vcenter:VCenterProvider",  # deprecated alias
    "horizon": "event_router.providers.horizon:HorizonProvider",
    "webhook": "event_router.providers.webhook:WebhookProvider",
}


def provider_class(type_: str) -> type[Provider]:
    try:
        target = REGISTRY[type_]
    except KeyError:
        allowed = ", ".join(sorted(REGISTRY))
        raise ValueError(
            f"eventProvider.type: unknown provider {type_!r} (allowed: {allowed})"
        ) from None
    module, _, name = target.partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module), name)
    return cls
