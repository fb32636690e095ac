"""Admission: the plugins a create passes between authorization and storage.

Upstream runs a chain of admission plugins on every write; kubling's defaulting already
covers the ones that need nothing but the object (``kubling.api.defaults``), so this chain
holds only the plugins that must look at the cluster, such as ServiceAccount (the pod's
account must exist; its token volume is mounted). The generic ``Store`` calls the chain on
create after the namespace check, before anything is reserved or written, so a rejection
leaves no trace. A plugin may change the object (mutating) and may refuse it by raising
an ``errors.APIError`` (validating).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

from kubling.api.meta import Object
from kubling.api.resources import ResourceType

CREATE = "CREATE"


@dataclasses.dataclass(frozen=True, slots=True)
class Attributes:
    """What a plugin knows of the request besides the object (upstream's Attributes)."""

    resource: ResourceType
    namespace: str
    name: str
    operation: str = CREATE
    dry_run: bool = False


class Plugin(Protocol):
    def handles(self, resource: ResourceType, operation: str) -> bool: ...

    async def admit(self, obj: Object, attributes: Attributes) -> None: ...


class Chain:
    """The plugins in order; each one that handles the request sees the previous result."""

    def __init__(self, plugins: Sequence[Plugin] = ()) -> None:
        self.plugins = tuple(plugins)

    async def admit(self, obj: Object, attributes: Attributes) -> None:
        for plugin in self.plugins:
            if plugin.handles(attributes.resource, attributes.operation):
                await plugin.admit(obj, attributes)
