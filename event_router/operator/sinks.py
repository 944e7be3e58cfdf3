"""Knative Destination resolution: ``uri`` as given, ``ref`` to an Addressable's
``status.address.url`` (Broker, Knative Service, Channel, any Addressable) or a plain
``v1`` Service to its cluster DNS name.

:func:`resolve` is blocking (kubernetes client); the operator runs it in a thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from event_router.config.models import URIObject
from event_router.operator.kube import request


class SinkError(Exception):
    """The destination cannot be resolved (yet); ``reason`` is the condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Target:
    """What a ``ref`` points at, with its namespace filled in."""

    api_version: str
    kind: str
    name: str
    namespace: str

    def describe(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name} ({self.api_version})"


def uri_string(uri: dict[str, Any]) -> str:
    """The original's object form ``{scheme, host, path?}`` (plus our ``port?``) as a URL,
    by the router's own rule (:meth:`event_router.config.models.URIObject.url`); a
    :class:`SinkError` when the router would not accept it."""
    try:
        return URIObject.model_validate(uri).url()
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'uri'}: {err['msg']}" for err in e.errors()
        )
        raise SinkError("InvalidURI", f"destination.uri: {problems}") from None


def addressable_url(obj: dict[str, Any], target: Target) -> str:
    """``status.address.url`` of an Addressable, or a :class:`SinkError` saying why not."""
    status = obj.get("status") or {}
    address = status.get("address") or {}
    url = address.get("url")
    if not url:
        addresses = status.get("addresses") or []
        url = next((a.get("url") for a in addresses if a.get("url")), None)
    if not url:
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        why = (
            f" (Ready={ready.get('status')}: {ready.get('message') or ready.get('reason')})"
            if ready
            else ""
        )
        raise SinkError(
            "SinkNotReady",
            f"{target.describe()} has no status.address.url yet{why}; "
            "the router starts once it is addressable",
        )
    return str(url)


def service_url(svc: dict[str, Any], target: Target, cluster_domain: str) -> str:
    """A v1 Service's cluster DNS URL; the port is added unless the Service serves 80."""
    ports = [p.get("port") for p in (svc.get("spec") or {}).get("ports") or []]
    host = f"{target.name}.{target.namespace}.svc.{cluster_domain}"
    if not ports or 80 in ports:
        return f"http://{host}"
    return f"http://{host}:{ports[0]}"


class Resolver:
    """Resolves ``ref`` targets with one ApiClient; caches kind -> plural per group/version."""

    def __init__(
        self, api: kubernetes.client.ApiClient, cluster_domain: str = "cluster.local"
    ) -> None:
        self.api = api
        self.cluster_domain = cluster_domain
        self._plurals: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def target(self, ref: dict[str, Any], namespace: str) -> Target:
        return Target(
            api_version=str(ref["apiVersion"]),
            kind=str(ref["kind"]),
            name=str(ref["name"]),
            namespace=str(ref.get("namespace") or namespace),
        )

    def plural(self, api_version: str, kind: str) -> str:
        key = (api_version, kind)
        with self._lock:
            if key in self._plurals:
                return self._plurals[key]
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            data = request(self.api, "GET", path)
        except ApiException as e:
            if e.status == 404:
                raise SinkError(
                    "SinkNotFound",
                    f"destination.ref.apiVersion: {api_version} is not served by this cluster "
                    f"(is the CRD of {kind} installed?)",
                ) from None
            raise
        for res in data.get("resources") or []:
            if res.get("kind") == kind and "/" not in res.get("name", ""):
                with self._lock:
                    self._plurals[key] = res["name"]
                return str(res["name"])
        raise SinkError(
            "SinkNotFound",
            f"destination.ref.kind: {api_version} has no kind {kind!r}",
        )

    def get(self, target: Target) -> dict[str, Any]:
        plural = self.plural(target.api_version, target.kind)
        if target.api_version == "v1":
            path = f"/api/v1/namespaces/{target.namespace}/{plural}/{target.name}"
        else:
            path = (
                f"/apis/{target.api_version}/namespaces/{target.namespace}/{plural}/{target.name}"
            )
        try:
            obj: dict[str, Any] = request(self.api, "GET", path)
        except ApiException as e:
            if e.status == 404:
                raise SinkError("SinkNotFound", f"{target.describe()} not found") from None
            if e.status == 403:
                raise SinkError(
                    "SinkForbidden",
                    f"the operator may not read {target.describe()}: grant get/list/watch on "
                    f"{plural} in its ClusterRole",
                ) from None
            raise
        return obj

    def resolve(self, destination: dict[str, Any], namespace: str) -> tuple[str, Target | None]:
        """The sink URL and the target it came from (None for ``uri``)."""
        if destination.get("uri"):
            return uri_string(destination["uri"]), None
        target = self.target(destination["ref"], namespace)
        obj = self.get(target)
        if target.api_version == "v1" and target.kind == "Service":
            return service_url(obj, target, self.cluster_domain), target
        return addressable_url(obj, target), target
