"""Credentials by reference: which Secrets a RouterConfig needs, whether each Secret
consents to it, and how they become the router's inline ``auth`` blocks.

**Consent.** Whoever may create a RouterConfig could otherwise make the operator (which
reads every referenced Secret) send any Secret of the namespace to a server of her choice
(a confused deputy). So a Secret is usable only when it says so itself, in the annotation
:data:`CONSENT_ANNOTATION`: ``*`` (every RouterConfig of its namespace) or a comma-separated
list of RouterConfig names. Only who may edit the Secret can add it.

Pure functions; the operator fetches the Secrets and hands their decoded ``data`` in.
Messages name the Secret, the key and the field that needs it, never a value.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from event_router.config.models import AUTH_BLOCKS, CREDENTIAL_KEYS

#: the Secret keys each auth type needs, and the router's sub-object they fill
AUTH_KEYS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    t: (AUTH_BLOCKS[t], keys) for t, keys in CREDENTIAL_KEYS.items()
}


@dataclass(frozen=True)
class SecretUse:
    """One ``auth`` of the spec that reads a Secret."""

    field: str  #: e.g. ``eventProvider.vcenter.auth``
    auth_type: str
    secret: str  #: Secret name, same namespace


#: the annotation by which a Secret lets RouterConfigs of its namespace use it
CONSENT_ANNOTATION = "event-router.vmware.com/routerconfigs"
#: how much of a refusing annotation's value a message quotes
_QUOTE_LIMIT = 80


def consents(annotations: dict[str, str] | None, routerconfig: str) -> bool:
    """Whether a Secret with these annotations lets RouterConfig ``routerconfig`` (same
    namespace) use it: the annotation's value is ``*`` or lists the name (comma-separated,
    blanks around names ignored)."""
    value = (annotations or {}).get(CONSENT_ANNOTATION)
    if value is None:
        return False
    names = {n.strip() for n in value.split(",")}
    return "*" in names or routerconfig in names


def consent_error(
    use: SecretUse, namespace: str, routerconfig: str, annotations: dict[str, str] | None
) -> CredentialsError:
    """``CredentialsNotPermitted`` for a Secret that does not consent: names the Secret, the
    field, and the annotation that would fix it (never a value of the Secret's data)."""
    value = (annotations or {}).get(CONSENT_ANNOTATION)
    if value is None:
        why = f"has no annotation {CONSENT_ANNOTATION}"
    else:
        shown = value if len(value) <= _QUOTE_LIMIT else value[:_QUOTE_LIMIT] + "…"
        why = f"its annotation {CONSENT_ANNOTATION}={shown!r} does not list {routerconfig}"
    return CredentialsError(
        "CredentialsNotPermitted",
        f"Secret {namespace}/{use.secret} (referenced by {use.field}.secretRef.name) does not "
        f"allow RouterConfig {routerconfig} to use it: {why}. If it may, annotate the Secret: "
        f"kubectl annotate secret {use.secret} -n {namespace} "
        f"{CONSENT_ANNOTATION}={routerconfig} (a comma-separated list of RouterConfig names, "
        "or * for every RouterConfig of the namespace)",
        use.secret,
    )


class CredentialsError(Exception):
    """A referenced Secret is missing or lacks a key; ``reason`` is the condition reason."""

    def __init__(self, reason: str, message: str, secret: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.secret = secret


def _walk(node: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else key
            if key == "auth" and isinstance(value, dict):
                found.append((sub, value))
            else:
                found.extend(_walk(value, sub))
    return found


def secret_uses(spec: dict[str, Any]) -> list[SecretUse]:
    """Every ``auth`` in a (validated) spec dict that names a Secret, in document order."""
    uses = []
    for field, auth in _walk(spec, ""):
        ref = auth.get("secretRef")
        if isinstance(ref, dict) and ref.get("name"):
            uses.append(SecretUse(field=field, auth_type=str(auth["type"]), secret=ref["name"]))
    return uses


def decode(secret_data: dict[str, str] | None) -> dict[str, str]:
    """A Secret's base64 ``data`` as text (undecodable values are left out)."""
    out: dict[str, str] = {}
    for key, value in (secret_data or {}).items():
        try:
            out[key] = base64.b64decode(value, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            continue
    return out


def auth_block(
    use: SecretUse, namespace: str, secrets: dict[str, dict[str, str] | None]
) -> dict[str, Any]:
    """The router's inline auth for one use. ``secrets`` maps a Secret name to its decoded
    data, or to None when the Secret does not exist."""
    block, keys = AUTH_KEYS[use.auth_type]
    data = secrets.get(use.secret)
    if data is None:
        raise CredentialsError(
            "CredentialsMissing",
            f"Secret {namespace}/{use.secret} (referenced by {use.field}.secretRef.name) "
            f"not found; create it with keys {', '.join(keys)}",
            use.secret,
        )
    missing = [k for k in keys if not data.get(k)]
    if missing:
        has = ", ".join(sorted(data)) or "none"
        raise CredentialsError(
            "CredentialsInvalid",
            f"Secret {namespace}/{use.secret} (referenced by {use.field}.secretRef.name) "
            f"lacks key(s) {', '.join(missing)} needed by auth type {use.auth_type} "
            f"(needs: {', '.join(keys)}; has: {has})",
            use.secret,
        )
    out: dict[str, Any] = {"type": use.auth_type}
    if block is not None:
        out[block] = {k: data[k] for k in keys}
    return out


def inline_credentials(
    spec: dict[str, Any], namespace: str, secrets: dict[str, dict[str, str] | None]
) -> dict[str, Any]:
    """A deep copy of ``spec`` with every ``auth.secretRef`` replaced by the router's inline
    block (``basicAuth``, ``activeDirectoryAuth``, ``awsAccessKeyAuth``)."""

    def convert(node: Any, path: str) -> Any:
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, value in node.items():
                sub = f"{path}.{key}" if path else key
                if key == "auth" and isinstance(value, dict):
                    ref = value.get("secretRef")
                    if isinstance(ref, dict):
                        use = SecretUse(sub, str(value["type"]), str(ref.get("name")))
                        out[key] = auth_block(use, namespace, secrets)
                    else:
                        out[key] = {"type": value["type"]}
                else:
                    out[key] = convert(value, sub)
            return out
        if isinstance(node, list):
            return [convert(v, path) for v in node]
        return node

    result: dict[str, Any] = convert(spec, "")
    return result
