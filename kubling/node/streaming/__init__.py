"""The kubelet's streaming server: ``exec``, ``attach`` and ``portForward`` on the node
agent's HTTPS listener, as the API server proxies them for ``kubectl``.

- ``remotecommand``: the exec/attach session (options, exit status, the copy loop),
  independent of the wire;
- ``wschannel``: the WebSocket channel protocols (``v4``/``v5.channel.k8s.io``);
- ``spdy``: SPDY/3.1 framing and a server session (the raw ``Upgrade: SPDY/3.1`` and the
  port-forward tunnel over WebSocket both speak it);
- ``spdychannel``: exec/attach over SPDY streams named by ``streamType``;
- ``portforward``: data/error stream pairs per request id, copied to a port in the pod's
  network namespace (``nsdial``);
- ``upgrade``: taking an HTTP connection over once the 101 is sent;
- ``handlers``: which wire and subprotocol a request gets;
- ``targets``: the pod, the running container and the network namespace a request means.
"""

from __future__ import annotations


class StreamingError(Exception):
    """A streaming request the kubelet refuses before upgrading: ``code`` is the HTTP
    status, the message the kubelet's plain-text words (the API server relays them, and
    kubectl shows ``unable to upgrade connection: <message>``)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
