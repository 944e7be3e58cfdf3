"""How the router (not the operator) reaches the Kubernetes API: in-cluster service account
first, else ``KUBECONFIG`` (or ``~/.kube/config``). Used for ConfigMap checkpoints and for
resolving a Knative ``destination.ref`` when the router runs standalone."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import kubernetes.client

ENV_NAMESPACE = "EVENT_ROUTER_NAMESPACE"
SERVICEACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class NoKubernetes(Exception):
    """Neither an in-cluster service account nor a kubeconfig is available."""


def api_client() -> kubernetes.client.ApiClient:
    import kubernetes.client
    import kubernetes.config

    cfg = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=cfg)
    except kubernetes.config.ConfigException:
        # read KUBECONFIG now: the library's default is fixed at its import
        path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        if not os.path.isfile(path):
            raise NoKubernetes(
                "no in-cluster service account and no kubeconfig "
                f"(KUBECONFIG={os.environ.get('KUBECONFIG', '<unset>')})"
            ) from None
        kubernetes.config.load_kube_config(config_file=path, client_configuration=cfg)
    return kubernetes.client.ApiClient(cfg)


def own_namespace(environ: Mapping[str, str] | None = None) -> str | None:
    """``EVENT_ROUTER_NAMESPACE``, else the pod's service-account namespace, else None."""
    env = os.environ if environ is None else environ
    namespace = env.get(ENV_NAMESPACE, "").strip()
    if not namespace and SERVICEACCOUNT_NAMESPACE.is_file():
        namespace = SERVICEACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip()
    return namespace or None
