"""event-router: vSphere and Horizon events as CloudEvents, delivered to Knative, OpenFaaS or EventBridge."""

__version__ = "0.1.0"
