"""The registry: one Store per served resource, all sharing the backend and watch caches.

This is where a kind becomes served: the catalogue says it exists, ``kinds.strategy_for``
says how it behaves, and the registry wires the Store to the storage and the cache.
"""

from __future__ import annotations

from kubling import storage
from kubling.api.meta import Object
from kubling.api.resources import Catalogue, ResourceType
from kubling.apiserver import admission, watchcache
from kubling.apiserver.registry import kinds
from kubling.apiserver.registry.store import Store
from kubling.apiserver.registry.strategy import StatusStrategy, Strategy


class Registry:
    def __init__(
        self, catalogue: Catalogue, backend: storage.Backend, caches: watchcache.CacheSet
    ) -> None:
        self.catalogue = catalogue
        self.backend = backend
        self.caches = caches
        self._stores: dict[tuple[str, str, str], Store] = {}
        self._status: dict[tuple[str, str, str], Strategy] = {}
        self._namespaces = catalogue.lookup("", "v1", "namespaces")
        self._overrides: dict[tuple[str, str, str], Strategy] = {}
        self._admission: admission.Chain | None = None

    def set_admission(self, chain: admission.Chain | None) -> None:
        """Pass every create through ``chain`` from now on (the API server sets it once,
        before serving; unit tests of the registry run without one)."""
        self._admission = chain
        self._stores.clear()
        self._status.clear()

    def set_strategy(self, rt: ResourceType, strategy: Strategy | None) -> None:
        """Serve ``rt`` with ``strategy`` (custom resources); None returns to the default."""
        key = (rt.group, rt.version, rt.plural)
        if strategy is None:
            self._overrides.pop(key, None)
        else:
            self._overrides[key] = strategy
        self._stores.pop(key, None)
        self._status.pop(key, None)

    def store(self, rt: ResourceType) -> Store:
        key = (rt.group, rt.version, rt.plural)
        store = self._stores.get(key)
        if store is None:
            store = Store(
                rt,
                self._overrides.get(key) or kinds.strategy_for(rt),
                self.backend,
                self.caches.cache(rt.storage_prefix),
                namespace_state=self._namespace_state,
                fresh=self.caches.catch_up,
                admission_chain=self._admission,
            )
            self._stores[key] = store
        return store

    def status_strategy(self, rt: ResourceType) -> Strategy:
        key = (rt.group, rt.version, rt.plural)
        strategy = self._status.get(key)
        if strategy is None:
            strategy = StatusStrategy(self.store(rt).strategy)
            self._status[key] = strategy
        return strategy

    async def _namespace_state(self, name: str) -> Object | None:
        """The namespace as storage holds it now (a consistent read: a create right after
        the namespace's own creation must see it)."""
        assert self._namespaces is not None
        store = self.store(self._namespaces)
        kv = await store.read(store.key("", name))
        return None if kv is None else store.load(kv)
