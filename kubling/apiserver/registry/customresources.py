"""Serving custom resources: CRDs become resource types, with schemas and strategies.

The ``CustomResourceDefinitions`` registry follows the CRD watch cache: each established
CRD adds its served versions to the catalogue (discovery and OpenAPI follow), with a
``CustomResourceStrategy`` built from the version's schema. Deleting a CRD deletes its
objects first (the ``customresourcecleanup`` finalizer), as upstream's
apiextensions-apiserver does inside the API server process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from kubling.api import celrules, crdschema, field, fieldmanager, names, schema, tables
from kubling.api.meta import Object
from kubling.api.printers import custom
from kubling.api.resources import Catalogue, ResourceType
from kubling.apiserver import errors, watchcache
from kubling.apiserver.registry.store import DeleteOptions
from kubling.apiserver.registry.strategy import BUILTIN_SCALE, ScalePaths, Strategy

log = logging.getLogger("kubling.apiserver.crd")

CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"


class CustomResourceStrategy(Strategy):
    """A custom resource's rules: its CRD version's schema, generation always tracked."""

    return_deleted_object = True

    def __init__(self, rt: ResourceType, schema: crdschema.Schema | None,
                 printer_columns: list[dict[str, Any]] | None = None,
                 scale: dict[str, Any] | None = None) -> None:
        super().__init__(rt)
        self.schema = schema
        self._scale = ScalePaths(
            str(scale.get("specReplicasPath") or ".spec.replicas"),
            str(scale.get("statusReplicasPath") or ".status.replicas"),
            str(scale["labelSelectorPath"]) if scale.get("labelSelectorPath") else "",
        ) if isinstance(scale, dict) else BUILTIN_SCALE
        self.tracks_generation = True
        self._printer = custom.printer(printer_columns)

    def printer(self) -> tuple[list[tables.Column], tables.RowFunc]:
        return self._printer

    def scale_paths(self) -> ScalePaths:
        return self._scale

    def field_definition(self) -> str | fieldmanager.Schema | None:
        return fieldmanager.custom_schema(self.schema) if self.schema else None

    def default(self, obj: Object) -> None:
        crdschema.apply_defaults(obj, self.schema)

    def convert(self, obj: Object, api_version: str) -> Object:
        """Conversion strategy ``None``: only ``apiVersion`` changes (upstream's default)."""
        converted = dict(obj)
        converted["apiVersion"] = api_version
        return converted

    def check_decode(self, obj: Object) -> tuple[str | None, list[str]]:
        md = obj.get("metadata")
        if md is not None:
            # ObjectMeta is typed for custom resources too (a name of 5 is a 400).
            problems = [p for p in schema.check_definition(
                {"metadata": md}, "io.k8s.apimachinery.pkg.apis.meta.v1.PartialObjectMetadata")
                if p.kind == "type"]
            message = schema.decode_error_message(self.rt.kind, self.rt.version, problems)
            if message is not None:
                return message, []
        unknown = crdschema.prune(obj, self.schema)
        return None, [f'unknown field "{path}"' for path in unknown]

    def validate(self, obj: Object) -> list[field.FieldError]:
        return self._validate(obj, None)

    def validate_update(self, new: Object, old: Object) -> list[field.FieldError]:
        errs = self._validate(new, old)
        errs.extend(names.validate_object_meta_update(new, old))
        return errs

    def _validate(self, obj: Object, old: Object | None) -> list[field.FieldError]:
        """Metadata, the schema, then the CEL rules (``old`` for transition rules) — the
        rules only when the object has the types they expect, as upstream."""
        errs = names.validate_object_meta(obj, namespaced=self.rt.namespaced,
                                          name_rule=names.DEFAULT_NAME_RULE,
                                          kube_finalizers=False)
        schema_errs = crdschema.validate(obj, self.schema)
        errs.extend(schema_errs)
        if celrules.has_rules(self.schema):
            if any("must be of type" in e.detail for e in schema_errs):
                errs.append(field.FieldError(
                    field.ErrorType.INVALID, "",
                    "some validation rules were not checked because the object was invalid; "
                    "correct the existing errors to complete validation"))
            else:
                errs.extend(celrules.validate(obj, old, self.schema))
        return errs


def _crd_errors(crd: Object) -> list[field.FieldError]:
    """The CRD checks users meet most (upstream's ValidateCustomResourceDefinition)."""
    spec = crd.get("spec") or {}
    names_ = spec.get("names") or {}
    group = spec.get("group") or ""
    errs: list[field.FieldError] = []
    if not group:
        errs.append(field.required("spec.group"))
    elif "." not in group:
        errs.append(field.invalid("spec.group", group, "should be a domain with at least one dot"))
    for key in ("plural", "kind"):
        if not names_.get(key):
            errs.append(field.required(f"spec.names.{key}"))
    expected = f"{names_.get('plural', '')}.{group}"
    if names_.get("plural") and group and crd["metadata"].get("name") != expected:
        errs.append(field.invalid("metadata.name", crd["metadata"].get("name"),
                                  'must be spec.names.plural+"."+spec.group'))
    scope = spec.get("scope")
    if scope not in ("Namespaced", "Cluster"):
        errs.append(field.not_supported("spec.scope", scope, ["Cluster", "Namespaced"]))
    versions = spec.get("versions") or []
    if not versions:
        errs.append(field.invalid("spec.versions", versions, "must have exactly one version "
                                  "marked as storage version"))
    elif sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
        errs.append(field.invalid("spec.versions", versions, "must have exactly one version "
                                  "marked as storage version"))
    for i, version in enumerate(versions):
        if not isinstance(version, dict):
            continue
        schema_ = (version.get("schema") or {}).get("openAPIV3Schema")
        if not schema_:
            errs.append(field.required(f"spec.versions[{i}].schema.openAPIV3Schema",
                                       "schemas are required"))
        else:
            base = f"spec.versions[{i}].schema.openAPIV3Schema"
            structural = crdschema.structural_errors(schema_, base)
            errs.extend(structural)
            if not structural:  # rules of a schema that is not structural are not compiled
                errs.extend(celrules.compile_errors(schema_, base))
    return errs


class CRDStrategy(Strategy):
    """CRDs are accepted and established at once (no separate controller to wait for)."""

    return_deleted_object = True
    kube_finalizers = False

    def default(self, obj: Object) -> None:
        super().default(obj)
        spec = obj.get("spec")
        if isinstance(spec, dict):
            names_ = spec.get("names")
            if isinstance(names_, dict) and names_.get("kind"):
                names_.setdefault("singular", str(names_["kind"]).lower())
                names_.setdefault("listKind", f"{names_['kind']}List")
            spec.setdefault("conversion", {"strategy": "None"})
            spec.setdefault("scope", "Namespaced")

    def prepare_for_create(self, obj: Object) -> None:
        super().prepare_for_create(obj)
        finalizers = obj["metadata"].setdefault("finalizers", [])
        if CLEANUP_FINALIZER not in finalizers:
            finalizers.append(CLEANUP_FINALIZER)
        obj["status"] = self._status(obj, None)

    def prepare_for_update(self, new: Object, old: Object) -> None:
        super().prepare_for_update(new, old)
        new["status"] = self._status(new, old.get("status"))

    @staticmethod
    def _status(obj: Object, old: Any) -> Object:
        spec = obj.get("spec") or {}
        stored = list((old or {}).get("storedVersions") or [])
        current = crdschema.storage_version(obj)
        if current and current not in stored:
            stored.append(current)
        when = obj["metadata"].get("creationTimestamp")
        conditions = [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": when},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": when},
        ]
        if obj["metadata"].get("deletionTimestamp"):
            conditions.append({"type": "Terminating", "status": "True",
                               "reason": "InstanceDeletionInProgress",
                               "message": "CustomResource deletion is in progress",
                               "lastTransitionTime": obj["metadata"]["deletionTimestamp"]})
        return {"acceptedNames": dict(spec.get("names") or {}), "conditions": conditions,
                "storedVersions": stored}

    def validate(self, obj: Object) -> list[field.FieldError]:
        return super().validate(obj) + _crd_errors(obj)

    def validate_update(self, new: Object, old: Object) -> list[field.FieldError]:
        errs = super().validate_update(new, old) + _crd_errors(new)
        for key in ("group",):
            if (new.get("spec") or {}).get(key) != (old.get("spec") or {}).get(key):
                errs.append(field.immutable(f"spec.{key}", (new.get("spec") or {}).get(key)))
        return errs

    def mark_deleting(self, obj: Object) -> None:
        obj["status"] = self._status(obj, obj.get("status"))


class CustomResourceDefinitions:
    """Keeps the catalogue and the registry in step with the stored CRDs."""

    def __init__(self, catalogue: Catalogue, registry: Any) -> None:
        self.catalogue = catalogue
        self.registry = registry
        self._served: dict[str, list[ResourceType]] = {}
        self._crds: dict[str, Object] = {}
        self._cleanups: dict[str, asyncio.Task[None]] = {}

    def start(self, cache: watchcache.ResourceCache) -> None:
        for item in list(cache.items.values()):
            self._sync(item.obj)
        cache.listeners.append(self._on_event)

    async def stop(self) -> None:
        for task in self._cleanups.values():
            task.cancel()
        for task in self._cleanups.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _on_event(self, event: watchcache.WatchEvent) -> None:
        if event.type == "DELETED":
            self._remove(event.obj.obj["metadata"]["name"])
        else:
            self._sync(event.obj.obj)

    def _sync(self, crd: Object) -> None:
        name = crd["metadata"]["name"]
        self._remove(name)
        self._crds[name] = crd
        types = crdschema.resource_types(crd)
        for rt in types:
            self.catalogue.add(rt)
            schema = crdschema.openapi_schema(crd, rt.version)
            version = crdschema.version_of(crd, rt.version) or {}
            columns = version.get("additionalPrinterColumns")
            scale = (version.get("subresources") or {}).get("scale")
            self.registry.set_strategy(rt, CustomResourceStrategy(
                rt, schema, columns if isinstance(columns, list) else None,
                scale if isinstance(scale, dict) else None))
        self._served[name] = types
        if crd["metadata"].get("deletionTimestamp") and name not in self._cleanups:
            self._cleanups[name] = asyncio.get_running_loop().create_task(
                self._cleanup(name), name=f"crd-cleanup-{name}")

    def _remove(self, name: str) -> None:
        self._crds.pop(name, None)
        for rt in self._served.pop(name, []):
            self.catalogue.remove(rt)
            self.registry.set_strategy(rt, None)

    def schema_for(self, group: str, version: str, kind: str) -> Mapping[str, Any] | None:
        """The OpenAPI schema of a custom kind (for /openapi and kubectl explain)."""
        for crd in self._crds.values():
            spec = crd.get("spec") or {}
            if spec.get("group") == group and (spec.get("names") or {}).get("kind") == kind:
                return crdschema.openapi_schema(crd, version)
        return None

    async def _cleanup(self, name: str) -> None:
        """Delete every object of a CRD being deleted, then release the CRD."""
        try:
            while True:
                crd = self._crds.get(name)
                types = self._served.get(name) or []
                if crd is None or not types:
                    return
                store = self.registry.store(types[0])
                remaining = list(store.cache.items.values())
                for item in remaining:
                    with contextlib.suppress(errors.APIError):
                        await store.delete(item.namespace, item.obj["metadata"]["name"],
                                           DeleteOptions())
                if not store.cache.items:
                    break
                await asyncio.sleep(0.2)
            await self._release(name)
        finally:
            self._cleanups.pop(name, None)

    async def _release(self, name: str) -> None:
        rt = self.catalogue.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        assert rt is not None
        store = self.registry.store(rt)

        async def drop(crd: Object) -> Object:
            crd["metadata"]["finalizers"] = [
                f for f in crd["metadata"].get("finalizers") or [] if f != CLEANUP_FINALIZER]
            return crd

        with contextlib.suppress(errors.APIError):
            await store.guaranteed_update("", name, drop)
