"""The service proxy: Services and EndpointSlices programmed into one nftables table.

``ServiceProxy`` (``proxier``) watches the API and keeps table ``ip kubling`` current;
``build_state`` (``model``) and ``render`` (``ruleset``) are the pure parts, usable without
a cluster; ``cleanup`` removes the table for ``kubling server --cleanup``.
"""

from kubling.network.proxy.model import Endpoint, ProxyState, ServicePort, build_state
from kubling.network.proxy.nft import NftError, cleanup
from kubling.network.proxy.proxier import ServiceProxy
from kubling.network.proxy.ruleset import Inventory, Ruleset, build, render

__all__ = ["Endpoint", "Inventory", "NftError", "ProxyState", "Ruleset", "ServicePort",
           "ServiceProxy", "build", "build_state", "cleanup", "render"]
