"""Subresources: ``status``, ``scale``, ``binding``, ``eviction``, pod
``ephemeralcontainers`` and namespace ``finalize``.

Each is the parent's Store with another strategy or a small translation (a Scale is a
view of the parent's ``spec.replicas``), never a separate code path to storage.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from kubling.api import meta
from kubling.api.meta import Object
from kubling.api.resources import ResourceType
from kubling.apiserver import (
    authn,
    authz,
    ephemeralcontainers,
    errors,
    eviction,
    negotiation,
    nodeproxy,
    resourceproxy,
)
from kubling.apiserver.handlers import (
    ResourceHandlers,
    _dry_run,
    field_manager,
    json_response,
    label_selector_string,
)
from kubling.apiserver.registry import kinds
from kubling.apiserver.registry.registry import Registry
from kubling.apiserver.registry.store import DeleteOptions, Store
from kubling.apiserver.registry.strategy import BUILTIN_SCALE, ScalePaths, Strategy
from kubling.apiserver.requestinfo import RequestInfo


def _path(path: str) -> list[str]:
    return [p for p in path.strip().lstrip(".").split(".") if p]


def _get(obj: Any, path: str) -> Any:
    for step in _path(path):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(step)
    return obj


def _set(obj: Object, path: str, value: Any) -> None:
    steps = _path(path)
    for step in steps[:-1]:
        child = obj.get(step)
        if not isinstance(child, dict):
            child = {}
            obj[step] = child
        obj = child
    obj[steps[-1]] = value


def scale_of(obj: Object, paths: ScalePaths = BUILTIN_SCALE) -> Object:
    """The autoscaling/v1 Scale view of a scalable object, read through its scale paths."""
    md = obj["metadata"]
    if paths.label_selector is None:
        selector = label_selector_string(_get(obj, ".spec.selector"))
    else:
        found = _get(obj, paths.label_selector) if paths.label_selector else None
        selector = found if isinstance(found, str) else ""
    replicas = _get(obj, paths.spec_replicas)
    current = _get(obj, paths.status_replicas)
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: md[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                       "creationTimestamp") if k in md},
        "spec": {"replicas": replicas if isinstance(replicas, int) else 0},
        "status": {
            "replicas": current if isinstance(current, int) else 0,
            "selector": selector,
        },
    }


class APIHandlers(ResourceHandlers):
    """Resource handlers plus the subresources of every kind."""

    def __init__(self, registry: Registry, authorizer: authz.Authorizer, *,
                 kubelet: nodeproxy.KubeletConnector | None = None) -> None:
        super().__init__(registry, authorizer)
        self.kubelet = kubelet

    async def _subresource(self, request: web.Request, info: RequestInfo, rt: ResourceType,
                           store: Store) -> web.StreamResponse:
        if rt.group == "" and rt.plural == "pods" and info.subresource == "log" and info.name:
            return await self._pod_log(request, info, store)
        if rt.group == "" and rt.plural == "pods" and info.name and \
                info.subresource in nodeproxy.STREAM_PATHS:
            return await self._pod_stream(request, info, store)
        if rt.group == "" and info.subresource == "proxy" and info.name and \
                rt.plural in ("pods", "services", "nodes"):
            return await self._proxy(request, info, rt, store)
        sub = rt.subresource(info.subresource)
        if sub is None or not info.name:
            raise errors.path_not_found()
        if info.verb not in sub.verbs:
            raise errors.method_not_supported(rt.group, f"{rt.plural}/{sub.name}", info.verb)
        namespace = info.namespace if rt.namespaced else ""
        if sub.name == "status":
            strategy = self.registry.status_strategy(rt)
            return await self._object_part(request, info, rt, store, namespace, strategy)
        if sub.name == "ephemeralcontainers":
            strategy = ephemeralcontainers.EphemeralContainersStrategy(rt)
            return await self._object_part(request, info, rt, store, namespace, strategy)
        if sub.name == "scale":
            return await self._scale(request, info, rt, store, namespace)
        if sub.name == "binding":
            return await self._binding(request, info, store, namespace)
        if sub.name == "eviction":
            return await self._eviction(request, info, store, namespace)
        if sub.name == "finalize":
            return await self._finalize(request, info, rt, store)
        raise errors.path_not_found()

    async def _pod_log(self, request: web.Request, info: RequestInfo,
                       store: Store) -> web.StreamResponse:
        """``pods/log``: streamed from the pod's node agent (``nodeproxy``)."""
        if info.verb != "get":
            raise errors.method_not_supported("", "pods/log", info.verb)
        nodes = self.registry.catalogue.lookup("", "v1", "nodes")
        assert nodes is not None
        return await nodeproxy.pod_log(request, pods=store, nodes=self.registry.store(nodes),
                                       namespace=info.namespace, name=info.name,
                                       connector=self.kubelet)

    async def _pod_stream(self, request: web.Request, info: RequestInfo,
                          store: Store) -> web.StreamResponse:
        """``pods/exec``, ``pods/attach``, ``pods/portforward``: authorized as ``create``
        (a WebSocket client must use GET, which the dispatcher authorized as ``get``: it
        needs ``create`` too, as upstream's AuthorizePodWebsocketUpgradeCreatePermission
        asks), then relayed to the pod's node agent."""
        resource = f"pods/{info.subresource}"
        if info.verb not in ("get", "create"):
            raise errors.method_not_supported("", resource, info.verb)
        if info.verb == "get":
            create = dataclasses.replace(info, verb="create")
            user = request[authn.USER_KEY]
            decision = await self.authorizer.authorize(user, create)
            if not decision.allowed:
                raise errors.APIError(
                    403, "Forbidden",
                    f'pods "{info.name}" is forbidden: {authz.forbidden_message(user, create)}',
                    details={"name": info.name, "kind": "pods"})
        nodes = self.registry.catalogue.lookup("", "v1", "nodes")
        assert nodes is not None
        return await nodeproxy.pod_stream(request, pods=store, nodes=self.registry.store(nodes),
                                          namespace=info.namespace, name=info.name,
                                          subresource=info.subresource,
                                          connector=self.kubelet)

    async def _proxy(self, request: web.Request, info: RequestInfo, rt: ResourceType,
                     store: Store) -> web.StreamResponse:
        """``pods/proxy``, ``services/proxy``, ``nodes/proxy``: the request goes on to the
        pod, a ready endpoint of the service, or the node's agent (``resourceproxy``)."""
        path = resourceproxy.proxied_path(request.raw_path, info.name)
        context = None
        if rt.plural == "pods":
            scheme, target = await resourceproxy.pod_location(store, info.namespace, info.name)
        elif rt.plural == "services":
            endpoints = self.registry.catalogue.lookup("", "v1", "endpoints")
            assert endpoints is not None
            scheme, target = await resourceproxy.service_location(
                store, self.registry.store(endpoints), info.namespace, info.name)
        else:
            parsed = resourceproxy.split_scheme_name_port(info.name)
            if parsed is None:
                raise errors.bad_request(f'invalid node request "{info.name}"')
            host, kubelet_port = nodeproxy.kubelet_address(await store.get("", parsed[1]))
            scheme = parsed[0] or "https"
            target = resourceproxy.join_host_port(host, parsed[2] or str(kubelet_port))
            if scheme == "https":
                if self.kubelet is None:
                    raise errors.internal("this API server has no client certificate for "
                                          "node agents")
                context = self.kubelet.context(skip_verify=False)
        return await resourceproxy.forward(request, scheme, target, path, context=context)

    async def _object_part(self, request: web.Request, info: RequestInfo, rt: ResourceType,
                           store: Store, namespace: str,
                           strategy: Strategy) -> web.StreamResponse:
        """``status``, ``ephemeralcontainers``: the parent's kind in and out, and a strategy
        that takes only its part of the request's object (upstream's status-like REST)."""
        if info.verb == "get":
            return self._respond(request, store, await store.get(namespace, info.name), 200)
        if info.verb == "update":
            obj, warnings = await self._read_object(request, rt, store.strategy)
            self._check_namespace(rt, obj, namespace)
            updated, _ = await store.update(namespace, info.name, obj, strategy=strategy,
                                            manager=field_manager(request, "UpdateOptions"),
                                            dry_run=_dry_run(request.query))
            return self._respond(request, store, updated, 200, warnings)
        media = negotiation.parse_media_type(request.headers.get("Content-Type", "")).type
        if media == negotiation.APPLY_PATCH:  # server-side apply of the part (ApplyStatus)
            return await self._server_side_apply(request, info, store, namespace, strategy)
        transform, warnings = await self._patch_transform(request, rt, store.strategy)

        async def apply(current: Object) -> Object:
            patched: Object = transform(current)
            return patched

        updated = await store.guaranteed_update(namespace, info.name, apply, strategy=strategy,
                                                manager=field_manager(request, "PatchOptions"),
                                                dry_run=_dry_run(request.query))
        return self._respond(request, store, updated, 200, warnings)

    async def _scale(self, request: web.Request, info: RequestInfo, rt: ResourceType,
                     store: Store, namespace: str) -> web.StreamResponse:
        paths = store.strategy.scale_paths()
        if info.verb == "get":
            return json_response(scale_of(await store.get(namespace, info.name), paths))
        scale_rt = ResourceType("autoscaling", "v1", "Scale", "scale", "scale", rt.namespaced)
        if info.verb == "update":
            scale, _ = await self._read_object(request, scale_rt)
            transform = None
        else:
            transform, _ = await self._patch_transform(request, scale_rt)

        def new_scale(current: Object) -> Object:
            if transform is None:
                return scale
            patched: Object = transform(scale_of(current, paths))
            return patched

        async def apply(current: Object) -> Object:
            wanted = new_scale(current)
            replicas = (wanted.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise errors.invalid("autoscaling", "Scale", info.name, [
                    _replicas_error(replicas)
                ])
            _set(current, paths.spec_replicas, replicas)
            rv = (wanted.get("metadata") or {}).get("resourceVersion")
            if rv:
                current["metadata"]["resourceVersion"] = rv
            else:
                current["metadata"].pop("resourceVersion", None)
            return current

        options = "UpdateOptions" if info.verb == "update" else "PatchOptions"
        updated = await store.guaranteed_update(namespace, info.name, apply,
                                                dry_run=_dry_run(request.query),
                                                manager=field_manager(request, options),
                                                subresource="scale")
        return json_response(scale_of(updated, paths))

    async def _binding(self, request: web.Request, info: RequestInfo, store: Store,
                       namespace: str) -> web.StreamResponse:
        binding_rt = ResourceType("", "v1", "Binding", "bindings", "binding", True)
        binding, _ = await self._read_object(request, binding_rt)
        target = binding.get("target") or {}
        node = target.get("name") if isinstance(target, dict) else None
        if not node:
            raise errors.invalid("", "Binding", info.name, [
                _field_required("target.name")
            ])

        async def bind(pod: Object) -> Object:
            spec = pod.setdefault("spec", {})
            if spec.get("nodeName"):
                raise errors.conflict("", "pods/binding", info.name,
                                      f'pod {info.name} is already assigned to node '
                                      f'"{spec["nodeName"]}"')
            if pod["metadata"].get("deletionTimestamp"):
                raise errors.conflict("", "pods/binding", info.name,
                                      f"pod {info.name} is being deleted, cannot be assigned "
                                      "to a host")
            spec["nodeName"] = node
            status = pod.setdefault("status", {})
            conditions = [c for c in status.get("conditions") or []
                          if c.get("type") != "PodScheduled"]
            conditions.append({"type": "PodScheduled", "status": "True",
                               "lastProbeTime": None,
                               "lastTransitionTime": meta.now()})
            status["conditions"] = conditions
            return pod

        # Binding writes spec.nodeName and the PodScheduled condition together: a strategy
        # that lets both through, as upstream's binding REST does.
        await store.guaranteed_update(namespace, info.name, bind,
                                      strategy=_BindingStrategy(store.rt),
                                      dry_run=_dry_run(request.query))
        return json_response(_success(), status=201)

    async def _eviction(self, request: web.Request, info: RequestInfo, store: Store,
                        namespace: str) -> web.StreamResponse:
        eviction_rt = ResourceType("policy", "v1", "Eviction", "evictions", "eviction", True)
        body, _ = await self._read_object(request, eviction_rt)
        opts = body.get("deleteOptions") or {}
        grace = opts.get("gracePeriodSeconds") if isinstance(opts, dict) else None
        dry_run = _dry_run(request.query)
        pod = await store.get(namespace, info.name)
        pdb_type = self.registry.catalogue.lookup("policy", "v1", "poddisruptionbudgets")
        if pdb_type is not None:
            await eviction.check_budget(self.registry.store(pdb_type), pod, dry_run=dry_run)
        await store.delete(namespace, info.name,
                           DeleteOptions(grace_period_seconds=grace, dry_run=dry_run))
        return json_response(_success(), status=201)

    async def _finalize(self, request: web.Request, info: RequestInfo, rt: ResourceType,
                        store: Store) -> web.StreamResponse:
        obj, _ = await self._read_object(request, rt)
        updated, _ = await store.update("", info.name, obj,
                                        strategy=kinds.NamespaceFinalizeStrategy(rt),
                                        dry_run=_dry_run(request.query))
        return self._respond(request, store, updated, 200)


class _BindingStrategy(kinds.PodStrategy):
    def prepare_for_update(self, new: Object, old: Object) -> None:
        """Binding changes exactly ``spec.nodeName`` and the scheduling condition."""

    def validate_update(self, new: Object, old: Object) -> list[Any]:
        return []


def _success() -> Object:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "code": 201}


def _replicas_error(value: Any) -> Any:
    from kubling.api import field

    return field.invalid("spec.replicas", value, "must be greater than or equal to 0")


def _field_required(path: str) -> Any:
    from kubling.api import field

    return field.required(path)
