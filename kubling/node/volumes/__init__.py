"""Pod volumes on the node: one module per kind behind ``plugin.Volume``, the atomic writer
they share, the watch-based configMap/secret cache and the token manager; the pod worker
uses the ``VolumeManager``."""

from kubling.node.volumes.manager import Mounted, PodVolumes, VolumeManager, referenced
from kubling.node.volumes.plugin import VolumeError

__all__ = ["Mounted", "PodVolumes", "VolumeError", "VolumeManager", "referenced"]
