"""Small blocking helpers over the kubernetes client: server-side apply of any object,
get-or-None, status patches and Events. The operator calls them via ``asyncio.to_thread``.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets as _random
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from event_router.timefmt import rfc3339

FIELD_MANAGER = "event-router-operator"

#: kind -> (path prefix, plural) for the objects the operator writes
_KINDS: dict[tuple[str, str], tuple[str, str]] = {
    ("v1", "Secret"): ("/api/v1", "secrets"),
    ("v1", "ConfigMap"): ("/api/v1", "configmaps"),
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "Event"): ("/api/v1", "events"),
    ("rbac.authorization.k8s.io/v1", "Role"): ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): (
        "/apis/rbac.authorization.k8s.io/v1",
        "rolebindings",
    ),
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments"),
    ("coordination.k8s.io/v1", "Lease"): ("/apis/coordination.k8s.io/v1", "leases"),
    ("policy/v1", "PodDisruptionBudget"): ("/apis/policy/v1", "poddisruptionbudgets"),
    ("event-router.vmware.com/v1alpha1", "RouterConfig"): (
        "/apis/event-router.vmware.com/v1alpha1",
        "routerconfigs",
    ),
}


def request(
    api: kubernetes.client.ApiClient,
    method: str,
    path: str,
    *,
    body: Any = None,
    query: list[tuple[str, Any]] | None = None,
    content_type: str = "application/json",
    timeout: float = 30.0,
) -> Any:
    """One API request; the decoded JSON answer, or :class:`ApiException` (status >= 400)."""
    params = api.param_serialize(
        method,
        path,
        query_params=query or [],
        header_params={"Accept": "application/json", "Content-Type": content_type},
        body=body,
        auth_settings=["BearerToken"],
    )
    resp = api.call_api(*params, _request_timeout=timeout)
    resp.read()
    if resp.status >= 400:
        raise ApiException(http_resp=resp)
    return json.loads(resp.data) if resp.data else None


def object_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    prefix, plural = _KINDS[(api_version, kind)]
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


class Kube:
    """One ApiClient, used from worker threads (urllib3's pool is thread-safe)."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.api = api
        self.core = kubernetes.client.CoreV1Api(api)

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        return request(self.api, method, path, body=body, query=query, content_type=content_type)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self._call("GET", object_path(api_version, kind, namespace, name))
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return obj

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply (force: this operator owns these fields)."""
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        out: dict[str, Any] = self._call(
            "PATCH",
            path,
            body=obj,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )
        return out

    def delete_owned(
        self, api_version: str, kind: str, namespace: str, name: str, owner_uid: str
    ) -> bool:
        """Delete the object if it exists and ``owner_uid`` owns it; True when deleted."""
        obj = self.get(api_version, kind, namespace, name)
        refs = (obj or {}).get("metadata", {}).get("ownerReferences") or []
        if not any(ref.get("uid") == owner_uid for ref in refs):
            return False
        try:
            self._call("DELETE", object_path(api_version, kind, namespace, name))
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    def create_if_absent(self, obj: dict[str, Any]) -> bool:
        """Create unless it exists; True when created."""
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], meta["namespace"])
        try:
            self._call("POST", path, body=obj, query=[("fieldManager", FIELD_MANAGER)])
        except ApiException as e:
            if e.status == 409:
                return False
            raise
        return True

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        path = object_path("event-router.vmware.com/v1alpha1", "RouterConfig", namespace, name)
        self._call(
            "PATCH",
            path + "/status",
            body={"status": status},
            query=[("fieldManager", FIELD_MANAGER)],
            content_type="application/merge-patch+json",
        )

    def event(
        self,
        involved: dict[str, Any],
        *,
        type_: str,
        reason: str,
        message: str,
    ) -> None:
        """A core/v1 Event about ``involved`` (a RouterConfig body)."""
        meta = involved["metadata"]
        now = rfc3339(dt.datetime.now(dt.UTC), 0)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{_random.token_hex(8)}",
                "namespace": meta["namespace"],
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", "event-router.vmware.com/v1alpha1"),
                "kind": involved.get("kind", "RouterConfig"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": FIELD_MANAGER,
        }
        self._call("POST", object_path("v1", "Event", meta["namespace"]), body=body)
