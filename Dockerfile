# One image for both entry points: `event-router` (the router; standalone or the pods the
# operator deploys) and `event-router-operator` (the kopf operator).
#   DOCKER_BUILDKIT=1 docker build -t ghcr.io/vmware-samples/event-router:0.1.0 .
# Base: any Debian bookworm with python3 and python3-venv. The default is Docker's Python
# image; `make image` (hack/image.sh) passes a base it bootstraps from Debian's packages.
# Behind a TLS-intercepting proxy, give pip the proxy's CA as a build secret (it is mounted
# only for the pip step, and never part of a layer):
#   docker build --secret id=build-ca,src=/etc/ssl/certs/ca-certificates.crt ...
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python3 -m venv /opt/event-router
COPY pyproject.toml README.md ./
COPY event_router ./event_router
RUN --mount=type=secret,id=build-ca \
    set -e; \
    if [ -s /run/secrets/build-ca ]; then export PIP_CERT=/run/secrets/build-ca; fi; \
    /opt/event-router/bin/pip install --no-compile .; \
    /opt/event-router/bin/pip uninstall -y -q pip setuptools; \
    /opt/event-router/bin/python -m compileall -q /opt/event-router/lib

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="event-router" \
      org.opencontainers.image.description="vSphere/Horizon events as CloudEvents to Knative, OpenFaaS, AWS EventBridge; and its Kubernetes operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/event-router /opt/event-router
ENV PATH=/opt/event-router/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# non-root (65532 = "nonroot"); the pods also run with a read-only root filesystem
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT []
CMD ["event-router", "-version"]
