"""Root CAs by reference: ``spec.certificates.rootCAs`` names PEM bundles in ConfigMaps of
the RouterConfig's namespace; the router's own config wants file paths
(``certificates.rootCAs: [/path/ca.pem]``).

* :func:`ca_refs` / :func:`collect_pems` (pure): which ConfigMap keys a spec needs, and
  their PEM text, or a :class:`CertificatesError` naming the ConfigMap, key and field;
* the deployment runtime mounts the keys read-only (a projected volume, see
  :func:`event_router.operator.resources.deployment`) at :data:`DEPLOYMENT_CA_DIR`
  (:func:`deployment_paths`);
* the in-process runtime writes them into a private temp dir (:class:`CAStage`) that is
  removed when the router stops using it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from event_router.operator.crd import RouterConfigSpec

log = logging.getLogger(__name__)

#: where the router pod sees its root CAs (not under the config Secret's read-only mount)
DEPLOYMENT_CA_DIR = "/etc/event-router-ca"
PEM_MARKER = "-----BEGIN CERTIFICATE-----"


@dataclass(frozen=True)
class CARef:
    """``spec.certificates.rootCAs[index].configMapRef``."""

    index: int
    configmap: str
    key: str

    @property
    def field(self) -> str:
        return f"certificates.rootCAs[{self.index}].configMapRef"

    @property
    def file_name(self) -> str:
        return f"ca-{self.index}.pem"


class CertificatesError(Exception):
    """A referenced ConfigMap is missing, lacks the key, or the key holds no certificate."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def ca_refs(spec: RouterConfigSpec) -> list[CARef]:
    certs = spec.certificates
    if certs is None:
        return []
    return [CARef(i, r.configMapRef.name, r.configMapRef.key) for i, r in enumerate(certs.rootCAs)]


def configmap_text(obj: dict[str, Any] | None) -> dict[str, str] | None:
    """A ConfigMap's ``data`` and (UTF-8 decodable) ``binaryData`` as text; None if absent."""
    if obj is None:
        return None
    out: dict[str, str] = {}
    for key, value in (obj.get("binaryData") or {}).items():
        try:
            out[key] = base64.b64decode(value, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            continue
    out.update(obj.get("data") or {})
    return out


def collect_pems(
    namespace: str, refs: list[CARef], configmaps: dict[str, dict[str, str] | None]
) -> list[str]:
    """The PEM text of each reference, in order. ``configmaps`` maps a ConfigMap name to
    its :func:`configmap_text`, or to None when it does not exist."""
    pems: list[str] = []
    for ref in refs:
        data = configmaps.get(ref.configmap)
        where = f"ConfigMap {namespace}/{ref.configmap} (referenced by {ref.field})"
        if data is None:
            raise CertificatesError(
                "CertificatesMissing",
                f"{where} not found; create it with key {ref.key} holding the PEM CA bundle",
            )
        if ref.key not in data:
            has = ", ".join(sorted(data)) or "none"
            raise CertificatesError(
                "CertificatesMissing", f"{where} lacks key {ref.key} (has: {has})"
            )
        if PEM_MARKER not in data[ref.key]:
            raise CertificatesError(
                "CertificatesInvalid",
                f"{where}: key {ref.key} is not a PEM certificate bundle "
                f"(allowed: {PEM_MARKER} blocks)",
            )
        pems.append(data[ref.key])
    return pems


def deployment_paths(refs: list[CARef]) -> list[str]:
    """The files the router pod reads (its projected volume maps each key to one file)."""
    return [f"{DEPLOYMENT_CA_DIR}/{r.file_name}" for r in refs]


class CAStage:
    """Private temp files of the in-process routers' root CAs.

    One directory (mode 0700) per RouterConfig and content: ``stage`` is idempotent for the
    same PEMs, ``prune`` removes a RouterConfig's other directories once its router no longer
    uses them, ``remove``/``close`` remove everything of one RouterConfig / of all."""

    def __init__(self) -> None:
        self._base: Path | None = None

    @property
    def base(self) -> Path:
        if self._base is None:
            self._base = Path(tempfile.mkdtemp(prefix="event-router-ca-"))
        return self._base

    def _key_dir(self, key: tuple[str, str]) -> Path:
        return self.base / f"{key[0]}_{key[1]}"

    def stage(self, key: tuple[str, str], pems: list[str]) -> list[str]:
        if not pems:
            return []
        digest = hashlib.sha256("\0".join(pems).encode()).hexdigest()[:16]
        directory = self._key_dir(key) / digest
        paths = [directory / f"ca-{i}.pem" for i in range(len(pems))]
        if not all(p.is_file() for p in paths):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            for path, pem in zip(paths, pems, strict=True):
                path.write_text(pem)
                path.chmod(0o600)
        return [str(p) for p in paths]

    def prune(self, key: tuple[str, str], keep: list[str]) -> None:
        """Remove this RouterConfig's staged dirs except those holding ``keep``."""
        key_dir = self._key_dir(key) if self._base is not None else None
        if key_dir is None or not key_dir.is_dir():
            return
        keep_dirs = {Path(p).parent for p in keep}
        for child in key_dir.iterdir():
            if child not in keep_dirs:
                shutil.rmtree(child, ignore_errors=True)
        if not keep_dirs:
            shutil.rmtree(key_dir, ignore_errors=True)

    def remove(self, key: tuple[str, str]) -> None:
        self.prune(key, [])

    def close(self) -> None:
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None
