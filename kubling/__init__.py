"""kubling: a small, complete Kubernetes in Python."""

__version__ = "0.1.0"
#: The Kubernetes version whose API kubling serves (what `/version` reports).
KUBERNETES_VERSION = "1.32.0"
