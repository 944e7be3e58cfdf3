"""event-router: vSphere and Horizon events as CloudEvents, delivered to serverless functions."""

__version__ = "0.1.0"
