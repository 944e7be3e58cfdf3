"""Pure builders: the router config rendered from a RouterConfig, and the child objects of
the ``deployment`` runtime (config Secret, ServiceAccount, Role, RoleBinding, Deployment,
webhook Service, checkpoint ConfigMap).

Everything here is a function of its arguments (plain dicts in, plain dicts out), so the
tests call it directly and the runtimes only apply what it returns.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from event_router.config.loader import CREDENTIALS_DIR_ENV
from event_router.config.models import parse_bind_address
from event_router.operator.certificates import DEPLOYMENT_CA_DIR, CARef
from event_router.operator.crd import GROUP, KIND, VERSION, RouterConfigSpec
from event_router.operator.secrets import AUTH_KEYS, SecretUse, inline_credentials, secret_uses

MANAGED_BY = "event-router-operator"
LABEL_RC = f"{GROUP}/routerconfig"
HASH_ANNOTATION = f"{GROUP}/config-hash"
CONFIG_KEY = "config.yaml"
CONFIG_DIR = "/etc/event-router"
#: where the router pod mounts the referenced Secrets: <dir>/<secret name>/<key>
CREDENTIALS_DIR = "/etc/event-router-credentials"
DEFAULT_METRICS_PORT = 8082
DEFAULT_IMAGE = "ghcr.io/vmware-samples/event-router:0.1.0"


@dataclass(frozen=True)
class RuntimeOptions:
    """Operator-wide settings for the children it builds."""

    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    cluster_domain: str = "cluster.local"
    requests: dict[str, str] = field(default_factory=lambda: {"cpu": "50m", "memory": "64Mi"})
    limits: dict[str, str] = field(default_factory=lambda: {"cpu": "500m", "memory": "256Mi"})
    log_level: str = "info"


@dataclass(frozen=True)
class Owner:
    """The RouterConfig that owns the children."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def _short(name: str, suffix: str, limit: int = 63) -> str:
    """``<name>-<suffix>`` within ``limit`` characters (hash-shortened when longer)."""
    full = f"{name}-{suffix}"
    if len(full) <= limit:
        return full
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - len(digest) - 2
    return f"{name[:keep].rstrip('-')}-{digest}-{suffix}"


def router_name(rc: str) -> str:
    """Deployment, ServiceAccount, Role, RoleBinding and Service name (pod names add ~17)."""
    return _short(rc, "router", 46)


def config_configmap_name(rc: str) -> str:
    return _short(rc, "router-config", 253)


def checkpoint_configmap_name(rc: str) -> str:
    return _short(rc, "checkpoints", 253)


def label_value(rc: str) -> str:
    """The RouterConfig's name as a label value: itself up to 63 characters, else cut and
    made unique with a hash (two long names sharing their first 63 characters must not
    select each other's pods)."""
    if len(rc) <= 63:
        return rc
    digest = hashlib.sha256(rc.encode()).hexdigest()[:8]
    return f"{rc[:54].rstrip('-_.')}-{digest}"


def labels(rc: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "event-router",
        "app.kubernetes.io/instance": label_value(rc),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_RC: label_value(rc),
    }


def selector(rc: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "event-router", LABEL_RC: label_value(rc)}


def _meta(owner: Owner, name: str, *, owned: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner.name),
    }
    if owned:
        meta["ownerReferences"] = [owner.reference()]
    return meta


# --- the rendered router config -----------------------------------------------------------


class RenderError(ValueError):
    """The spec cannot become a router config (a bind address the router refuses, two
    listeners of the pod on one port); the message starts with the ``spec.`` field path(s).
    The reconciler reports it as ``Ready=False``, reason ``InvalidConfig``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


METRICS_FIELD = "spec.metricsProvider.default.bindAddress"
WEBHOOK_FIELD = "spec.eventProvider.webhook.bindAddress"


def _pod_port(address: str, field: str) -> int:
    """The port of ``address`` (the router pod listens on 0.0.0.0 with it)."""
    try:
        return parse_bind_address(address)[1]
    except ValueError as e:
        raise RenderError(field, f"{e} (got {address!r})") from None


def source_address(spec: RouterConfigSpec) -> str:
    """Where events come from, for ``status.source`` (no credentials)."""
    p = spec.eventProvider
    block = getattr(p, p.type)
    if p.type == "webhook":
        return f"{block.bindAddress}{block.path}"
    return str(block.address)


def render_config(
    name: str,
    namespace: str,
    spec: RouterConfigSpec,
    secrets: dict[str, dict[str, str] | None],
    sink_uri: str | None,
    *,
    runtime: str,
    root_cas: list[str] | None = None,
    mount_credentials: bool = False,
    sink_uris: Mapping[int, str] | None = None,
    dead_letter_uris: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """The router's own config file (the original's shape) for one RouterConfig: inline
    credentials from the Secrets, ``destination.uri`` set to the resolved sink.

    ``runtime="deployment"`` always configures the metrics server on 0.0.0.0 (probes), and
    a webhook provider listens on 0.0.0.0 too (with its port: the Service in front of the pod
    reaches no 127.0.0.1/localhost); the two ports must differ.
    ``runtime="inprocess"`` leaves the metrics server out (many routers share one process)
    and the webhook's address as it is.
    ``root_cas``: the files the router reads its root CAs from (``certificates.rootCAs``).
    ``sink_uri``: the resolved destination of the first (or only) processor; ``sink_uris``
    those of the others by index (``eventProcessors[i]``), ``dead_letter_uris`` the resolved
    ``delivery.deadLetterSink`` URLs by index.
    ``mount_credentials``: keep every ``auth.secretRef`` (the router pod reads the keys from
    the Secrets its Deployment mounts, :data:`CREDENTIALS_DIR`): the result holds no
    credential and goes into a ConfigMap. The Secrets are checked all the same.
    Raises :class:`~event_router.operator.secrets.CredentialsError` and
    :class:`RenderError`.
    """
    # replicas is the operator's (how many pods), not the router's config
    data = spec.model_dump(by_alias=True, exclude_none=True, mode="json", exclude={"replicas"})
    inline = inline_credentials(data, namespace, secrets)
    if not mount_credentials:
        data = inline
    data.pop("certificates", None)
    if root_cas:
        data["certificates"] = {"rootCAs": list(root_cas)}
    listed = "eventProcessors" in data
    processors = data["eventProcessors"] if listed else [data["eventProcessor"]]
    sinks = dict(sink_uris or {})
    if sink_uri is not None:
        sinks.setdefault(0, sink_uri)
    for i, processor in enumerate(processors):
        where = f"spec.eventProcessors[{i}]" if listed else "spec.eventProcessor"
        if processor["type"] == "knative":
            if i not in sinks:
                raise RenderError(f"{where}.knative.destination", "the sink URI is not resolved")
            processor["knative"]["destination"] = {"uri": sinks[i]}
        delivery = processor.get("delivery")
        if delivery and "deadLetterSink" in delivery:
            if i not in (dead_letter_uris or {}):
                raise RenderError(
                    f"{where}.delivery.deadLetterSink", "the dead-letter sink URI is not resolved"
                )
            delivery["deadLetterSink"] = {"uri": (dead_letter_uris or {})[i]}
    if runtime == "deployment":
        metrics = data.get("metricsProvider") or {
            "type": "default",
            "name": "metrics",
            "default": {"bindAddress": f"0.0.0.0:{DEFAULT_METRICS_PORT}"},
        }
        given = metrics["default"]["bindAddress"]
        port = _pod_port(given, METRICS_FIELD)
        metrics["default"]["bindAddress"] = f"0.0.0.0:{port}"
        hook = data["eventProvider"].get("webhook")
        if data["eventProvider"]["type"] == "webhook" and hook is not None:
            hook_port = _pod_port(hook["bindAddress"], WEBHOOK_FIELD)
            if hook_port == port:
                got = (
                    f"got {hook['bindAddress']!r} and {given!r}"
                    if data.get("metricsProvider")
                    else f"got {hook['bindAddress']!r}; without spec.metricsProvider the "
                    f"metrics port is {DEFAULT_METRICS_PORT}"
                )
                raise RenderError(
                    f"{WEBHOOK_FIELD} and {METRICS_FIELD}",
                    f"both use port {port} ({got}); in the router pod both listen on 0.0.0.0, "
                    "so give one of them another port",
                )
            hook["bindAddress"] = f"0.0.0.0:{hook_port}"
        data["metricsProvider"] = metrics
    else:
        data.pop("metricsProvider", None)
    rendered: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "labels": {"namespace": namespace}},
    }
    rendered.update(data)
    return rendered


def metrics_port(rendered: dict[str, Any]) -> int:
    metrics = rendered.get("metricsProvider")
    if not metrics:
        return DEFAULT_METRICS_PORT
    return parse_bind_address(metrics["default"]["bindAddress"])[1]


def config_hash(
    spec: RouterConfigSpec, sink_uri: str | None, secret_versions: dict[str, str]
) -> str:
    """A short hash that changes when the rendered config would: the spec, the sink and
    the resourceVersions of the referenced Secrets (not their contents, so the hash in a
    pod annotation reveals nothing about a password)."""
    # replicas is not the router's config: scaling does not roll the pods
    doc = {
        "spec": spec.model_dump(by_alias=True, mode="json", exclude={"replicas"}),
        "sink": sink_uri,
        "secrets": dict(sorted(secret_versions.items())),
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def referenced_secrets(spec: RouterConfigSpec) -> list[str]:
    return sorted({u.secret for u in secret_references(spec)})


def secret_references(spec: RouterConfigSpec) -> list[SecretUse]:
    """Every ``auth.secretRef`` of the spec with the field that holds it, in document order."""
    return secret_uses(spec.model_dump(by_alias=True, exclude_none=True, mode="json"))


# --- children of the deployment runtime ----------------------------------------------------


def config_configmap(owner: Owner, rendered: dict[str, Any]) -> dict[str, Any]:
    """The router's config file (rendered with ``mount_credentials``: no credential in it,
    only ``auth.secretRef`` names the pod resolves from its mounted Secrets)."""
    if secret_values_present(rendered):
        raise ValueError("refusing to put credentials into a ConfigMap")
    text = yaml.safe_dump(rendered, sort_keys=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(owner, config_configmap_name(owner.name)),
        "data": {CONFIG_KEY: text},
    }


def secret_values_present(rendered: dict[str, Any]) -> bool:
    """Whether any auth block of a rendered config holds credentials inline."""

    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            auth = node.get("auth")
            if isinstance(auth, dict) and set(auth) - {"type", "secretRef"}:
                return True
            return any(walk(v) for v in node.values())
        if isinstance(node, list):
            return any(walk(v) for v in node)
        return False

    return walk(rendered)


def credential_mounts(rendered: dict[str, Any]) -> dict[str, list[str]]:
    """Secret name -> the keys the router needs from it (sorted), from the ``auth.secretRef``
    blocks of a config rendered with ``mount_credentials``."""
    out: dict[str, set[str]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            auth = node.get("auth")
            if isinstance(auth, dict) and isinstance(auth.get("secretRef"), dict):
                keys = AUTH_KEYS[str(auth["type"])][1]
                out.setdefault(str(auth["secretRef"]["name"]), set()).update(keys)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(rendered)
    return {name: sorted(keys) for name, keys in sorted(out.items())}


def _credentials_volume(mounts: dict[str, list[str]]) -> dict[str, Any]:
    """The referenced Secrets, only the keys the router needs, read-only:
    ``<CREDENTIALS_DIR>/<secret>/<key>``."""
    return {
        "name": "credentials",
        "projected": {
            "defaultMode": 0o440,
            "sources": [
                {
                    "secret": {
                        "name": name,
                        "items": [{"key": k, "path": f"{name}/{k}"} for k in keys],
                    }
                }
                for name, keys in mounts.items()
            ],
        },
    }


def service_account(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(owner, router_name(owner.name)),
    }


def leader_elected(rendered: Mapping[str, Any], replicas: int) -> bool:
    """Whether the router pods elect a leader: more than one replica of a polling provider
    (vcenter, horizon; webhook replicas all serve behind the Service)."""
    return replicas > 1 and rendered["eventProvider"]["type"] != "webhook"


def lease_name(rc: str) -> str:
    return router_name(rc)


def lease(owner: Owner) -> dict[str, Any]:
    """Created empty by the operator (the router's Role may only get and update it, by
    name); the router pods campaign for it (event_router/leader.py)."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": _meta(owner, lease_name(owner.name)),
        "spec": {},
    }


def role(owner: Owner, *, with_lease: bool = False) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [checkpoint_configmap_name(owner.name)],
            "verbs": ["get", "update", "patch"],
        }
    ]
    if with_lease:
        rules.append(
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": [lease_name(owner.name)],
                "verbs": ["get", "update"],
            }
        )
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(owner, router_name(owner.name)),
        "rules": rules,
    }


def pod_disruption_budget(owner: Owner) -> dict[str, Any]:
    """replicas > 1: a drain or a node upgrade evicts one router pod at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(owner, router_name(owner.name)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(owner.name)}},
    }


def role_binding(owner: Owner) -> dict[str, Any]:
    name = router_name(owner.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(owner, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
    }


def checkpoint_configmap(owner: Owner) -> dict[str, Any]:
    """Created empty by the operator (the router's Role cannot create). Deliberately NOT
    owned by the RouterConfig: deleting and re-creating a RouterConfig resumes from its
    checkpoint instead of losing it (remove it with
    ``kubectl delete configmap -l event-router.vmware.com/routerconfig=<name>``)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(owner, checkpoint_configmap_name(owner.name), owned=False),
        "data": {},
    }


def container_command(
    config_path: str = f"{CONFIG_DIR}/{CONFIG_KEY}", log_level: str = "info"
) -> list[str]:
    return ["event-router", "-config", config_path, "-log-json", "-log-level", log_level]


def _ca_volume(ca_refs: list[CARef]) -> dict[str, Any]:
    """A projected volume with one file per ``certificates.rootCAs`` entry (paths as in
    :func:`event_router.operator.certificates.deployment_paths`)."""
    return {
        "name": "root-cas",
        "projected": {
            "defaultMode": 0o444,
            "sources": [
                {
                    "configMap": {
                        "name": r.configmap,
                        "items": [{"key": r.key, "path": r.file_name}],
                    }
                }
                for r in ca_refs
            ],
        },
    }


def deployment(
    owner: Owner,
    rendered: dict[str, Any],
    hash_: str,
    options: RuntimeOptions,
    ca_refs: list[CARef] | None = None,
    replicas: int = 1,
) -> dict[str, Any]:
    name = router_name(owner.name)
    elected = leader_elected(rendered, replicas)
    port = metrics_port(rendered)
    mounts = credential_mounts(rendered)
    pod_labels = labels(owner.name)
    ports = [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    if rendered["eventProvider"]["type"] == "webhook":
        _, hook_port = parse_bind_address(rendered["eventProvider"]["webhook"]["bindAddress"])
        ports.append({"name": "webhook", "containerPort": hook_port, "protocol": "TCP"})

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "metrics"},
            "periodSeconds": period,
            "timeoutSeconds": 3,
            "failureThreshold": failures,
        }

    container = {
        "name": "router",
        "image": options.image,
        "imagePullPolicy": options.image_pull_policy,
        "command": container_command(log_level=options.log_level),
        "env": [
            {
                "name": "EVENT_ROUTER_CHECKPOINT_CONFIGMAP",
                "value": checkpoint_configmap_name(owner.name),
            },
            {
                "name": "EVENT_ROUTER_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            {  # the Lease identity and the stall report's key
                "name": "EVENT_ROUTER_POD_NAME",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
            },
        ]
        + ([{"name": "EVENT_ROUTER_LEASE", "value": lease_name(owner.name)}] if elected else [])
        + ([{"name": CREDENTIALS_DIR_ENV, "value": CREDENTIALS_DIR}] if mounts else []),
        "ports": ports,
        "startupProbe": probe("/healthz", 2, 30),
        "livenessProbe": probe("/healthz", 10, 3),
        "readinessProbe": probe("/readyz", 5, 2),
        "resources": {"requests": dict(options.requests), "limits": dict(options.limits)},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ]
        + (
            [{"name": "root-cas", "mountPath": DEPLOYMENT_CA_DIR, "readOnly": True}]
            if ca_refs
            else []
        )
        + (
            [{"name": "credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True}]
            if mounts
            else []
        ),
    }
    pod_spec_extra: dict[str, Any] = {}
    if replicas > 1:
        # one pod per node where there are nodes enough (a one-node cluster still runs them)
        pod_spec_extra["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector(owner.name)},
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(owner, name),
        "spec": {
            "replicas": replicas,
            # one replica: never two routers on one checkpoint (the old pod goes first).
            # Several: a new pod starts (a standby, or a webhook server) before an old one
            # goes; the Lease keeps one leader, a leader stopping hands the Lease over
            "strategy": (
                {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
                if replicas > 1
                else {"type": "Recreate"}
            ),
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector(owner.name)},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {HASH_ANNOTATION: hash_},
                },
                "spec": {
                    "serviceAccountName": name,
                    "automountServiceAccountToken": True,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    # fsGroup: the kubelet gives the mounted Secrets' files (mode 0440, owned
                    # by root) the pod's group, so user 65532 can read them and nobody else.
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    **pod_spec_extra,
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "config",
                            "configMap": {
                                "name": config_configmap_name(owner.name),
                                "defaultMode": 0o444,
                            },
                        },
                        {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
                    ]
                    + ([_ca_volume(ca_refs)] if ca_refs else [])
                    + ([_credentials_volume(mounts)] if mounts else []),
                },
            },
        },
    }


def webhook_service(owner: Owner, rendered: dict[str, Any]) -> dict[str, Any] | None:
    """A ClusterIP Service in front of the webhook provider (None for other providers)."""
    if rendered["eventProvider"]["type"] != "webhook":
        return None
    _, port = parse_bind_address(rendered["eventProvider"]["webhook"]["bindAddress"])
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(owner, router_name(owner.name)),
        "spec": {
            "selector": selector(owner.name),
            "ports": [{"name": "webhook", "port": port, "targetPort": "webhook"}],
        },
    }


def children(
    owner: Owner,
    rendered: dict[str, Any],
    hash_: str,
    options: RuntimeOptions,
    ca_refs: list[CARef] | None = None,
    replicas: int = 1,
) -> list[dict[str, Any]]:
    """Every owned child of the deployment runtime, in apply order (the Lease, when there
    is one, is created beforehand: apply must not reset what the routers wrote in it)."""
    out = [
        config_configmap(owner, rendered),
        service_account(owner),
        role(owner, with_lease=leader_elected(rendered, replicas)),
        role_binding(owner),
        deployment(owner, rendered, hash_, options, ca_refs, replicas),
    ]
    svc = webhook_service(owner, rendered)
    if svc is not None:
        out.append(svc)
    if replicas > 1:
        out.append(pod_disruption_budget(owner))
    return out
