"""Cluster DNS: the Kubernetes DNS specification served from informers, with forwarding.

``ClusterDNS`` (``server``) ties together the zone built from Services and EndpointSlices
(``records``), the query logic (``resolver``), the UDP/TCP transports (``transport``) and
the upstream forwarder with its answer cache (``forwarder``, ``cache``).
"""

from kubling.network.dns.server import ClusterDNS

__all__ = ["ClusterDNS"]
