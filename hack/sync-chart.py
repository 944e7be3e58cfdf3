#!/usr/bin/env python3
"""Keep charts/event-router/ in step with its sources: one source of truth.

The chart's CRDs, the RBAC rules it renders, its alert rules and its dashboard are copies:

    manifests/crd.yaml         -> crds/routerconfigs.event-router.vmware.com.yaml
    manifests/peering.yaml     -> crds/kopf-peering.yaml
    manifests/rbac.yaml        -> files/rbac.yaml   (templates/rbac.yaml reads it)
    monitoring/alerts.yaml     -> files/alerts.yaml (the PrometheusRule)
    monitoring/dashboard.json  -> files/dashboard.json

(paths under charts/event-router/)

``hack/sync-chart.py`` writes them; ``hack/sync-chart.py --check`` exits 1 naming each copy
that differs from its source (tests/unit/test_chart_sync.py runs it). Edit the sources, never
the copies. The Deployment's defaults live in values.yaml; tests/integration/test_helm.py
proves the default render equals ``kubectl kustomize manifests/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "event-router"

COPIES: dict[str, str] = {
    "manifests/crd.yaml": "crds/routerconfigs.event-router.vmware.com.yaml",
    "manifests/peering.yaml": "crds/kopf-peering.yaml",
    "manifests/rbac.yaml": "files/rbac.yaml",
    "monitoring/alerts.yaml": "files/alerts.yaml",
    "monitoring/dashboard.json": "files/dashboard.json",
}


def expected(source: str) -> bytes:
    """The copy's content: the source's bytes, under a header for YAML (JSON has no comments)."""
    body = (REPO / source).read_bytes()
    if source.endswith(".json"):
        return body
    header = f"# Copied from {source} by hack/sync-chart.py; edit that file, not this one.\n"
    return header.encode() + body


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when a copy differs")
    args = p.parse_args(argv)
    stale = []
    for source, copy in COPIES.items():
        want = expected(source)
        path = CHART / copy
        if path.exists() and path.read_bytes() == want:
            continue
        if args.check:
            stale.append(f"charts/event-router/{copy} differs from {source}")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(want)
        print(f"wrote charts/event-router/{copy} (from {source})")
    if stale:
        print("\n".join(stale), file=sys.stderr)
        print("run hack/sync-chart.py to update the chart", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
