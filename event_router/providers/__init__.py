"""Event providers: one module per type; the registry maps a config ``type`` to its class.

Adding a provider is one new module plus one line here.
"""

from __future__ import annotations

from event_router.core import Provider, load_registered

REGISTRY: dict[str, str] = {
    "vcenter": "event_router.providers.vcenter:VCenterProvider",
    "vcsim": "event_router.providers.vcenter:VCenterProvider",  # deprecated alias
    "horizon": "event_router.providers.horizon:HorizonProvider",
    "webhook": "event_router.providers.webhook:WebhookProvider",
}


def provider_class(type_: str) -> type[Provider]:
    cls: type[Provider] = load_registered(REGISTRY, type_, "eventProvider.type")
    return cls
