# One image for both entry points: `event-router` (the router; standalone or the pods the
# operator deploys) and `event-router-operator` (the kopf operator).
#   docker build -t ghcr.io/vmware-samples/event-router:0.1.0 .
# Pinned base: a patch-release tag, bumped deliberately; for a byte-reproducible build also
# pin its digest: --build-arg PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/event-router
COPY pyproject.toml README.md ./
COPY event_router ./event_router
RUN /opt/event-router/bin/pip install --no-compile . \
 && /opt/event-router/bin/python -m compileall -q /opt/event-router/lib

FROM ${PYTHON_IMAGE}
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
