"""Strategies: the per-kind rules the generic ``Store`` applies (upstream's RESTStrategy).

A strategy is a small stateless value. The Store asks it what to reset on create, what to
carry over on update, how to validate, whether deletion is graceful, and whether the
``metadata.generation`` tracks spec changes. Subresources (``status``) are the same
store with another strategy, built by ``StatusStrategy`` around the parent's.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Protocol

import orjson

from kubling.api import (
    conversion,
    defaults,
    field,
    fieldmanager,
    names,
    schema,
    tables,
    validation,
)
from kubling.api.meta import Object
from kubling.api.resources import ResourceType

# Kinds whose objects carry ``metadata.generation`` bumped on every spec change
# (upstream strategies that set Generation in PrepareForCreate/PrepareForUpdate).
_GENERATION_KINDS = frozenset(
    {
        ("apps", "Deployment"),
        ("apps", "ReplicaSet"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
        ("", "ReplicationController"),
        ("batch", "Job"),
        ("batch", "CronJob"),
        ("networking.k8s.io", "Ingress"),
        ("networking.k8s.io", "NetworkPolicy"),
        ("policy", "PodDisruptionBudget"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
    }
)


_PATH_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _drop_path(obj: Any, path: str) -> None:
    """Delete the field at ``spec.containers[0].foo`` (an unknown field's path)."""
    steps = [(m.group(1), m.group(2)) for m in _PATH_STEP.finditer(path)]
    node = obj
    for i, (name, index) in enumerate(steps):
        last = i == len(steps) - 1
        if name is not None:
            if not isinstance(node, dict) or name not in node:
                return
            if last:
                del node[name]
                return
            node = node[name]
        else:
            if not isinstance(node, list) or int(index) >= len(node):
                return
            node = node[int(index)]


@dataclasses.dataclass(frozen=True, slots=True)
class ScalePaths:
    """JSON paths (``.spec.replicas``) of a scalable kind's replicas and selector.

    ``label_selector`` of None means the built-in way: ``spec.selector`` as a LabelSelector;
    a custom resource's ``labelSelectorPath`` points at an already-serialized selector."""

    spec_replicas: str = ".spec.replicas"
    status_replicas: str = ".status.replicas"
    label_selector: str | None = None


BUILTIN_SCALE = ScalePaths()


def _without(obj: Object, *keys: str) -> Object:
    return {k: v for k, v in obj.items() if k not in keys}


class Transaction(Protocol):
    """What a strategy reserved for one write (a Service's cluster IP, its node ports):
    ``finish(True)`` once the write is stored, ``finish(False)`` when it certainly was not."""

    async def finish(self, success: bool) -> None: ...


class Strategy:
    """Default rules, right for most kinds; subclasses override the few that differ."""

    #: Delete returns the deleted object rather than a ``Status`` (upstream ReturnDeletedObject).
    return_deleted_object = False
    #: An update of a missing object creates it (upstream AllowCreateOnUpdate).
    allow_create_on_update = False

    def __init__(self, rt: ResourceType) -> None:
        self.rt = rt
        self.group = rt.group
        self.kind = rt.kind
        self.has_status = rt.subresource("status") is not None
        self.tracks_generation = (rt.group, rt.kind) in _GENERATION_KINDS
        self.name_rule = names.name_rule_for(rt.group, rt.kind)

    # -- decoding -------------------------------------------------------------------------
    def check_decode(self, obj: Object) -> tuple[str | None, list[str]]:
        """A decode error (wrong types: a 400), and the unknown fields found.

        Built-in kinds are checked against the upstream schema; unknown fields are dropped
        from ``obj`` (as upstream's decoder drops them) and reported.
        """
        problems = schema.check(obj, self.rt.group, self.rt.version, self.rt.kind)
        if not problems:
            return None, []
        message = schema.decode_error_message(self.rt.kind, self.rt.version, problems)
        if message is None:
            for problem in problems:
                if problem.kind == "unknown":
                    _drop_path(obj, problem.path)
        return message, schema.unknown_field_warnings(problems)

    #: The subresource this strategy serves ("" for the main resource), for managedFields.
    subresource = ""

    def field_definition(self) -> str | fieldmanager.Schema | None:
        """The schema server-side apply merges with (list keys, atomic maps)."""
        return schema.definition_for(self.rt.group, self.rt.version, self.rt.kind)

    def reset_fields(self) -> fieldmanager.FieldSet | None:
        """Fields this endpoint ignores, so nobody comes to own them by writing here."""
        return fieldmanager.paths("status") if self.has_status else None

    def scale_paths(self) -> ScalePaths:
        """Where the ``scale`` subresource reads and writes (custom resources say so in
        their CRD; built-in kinds use spec.replicas, status.replicas and spec.selector)."""
        return BUILTIN_SCALE

    def printer(self) -> tuple[list[tables.Column], tables.RowFunc]:
        """The Table columns of this kind (what ``kubectl get`` shows)."""
        return tables.columns_for(self.rt.group, self.rt.kind)

    def convert(self, obj: Object, api_version: str) -> Object:
        """``obj`` in another served version of the same resource."""
        return conversion.convert(obj, self.rt.kind, api_version)

    # -- create ---------------------------------------------------------------------------
    def default(self, obj: Object) -> None:
        """Fill upstream defaults; runs on every decoded body, as upstream's decoder does."""
        defaults.apply_defaults(self.rt.group, self.rt.version, self.rt.kind, obj)

    def prepare_for_create(self, obj: Object) -> None:
        """Reset what a client may not set on create: status, generation."""
        if self.has_status:
            obj.pop("status", None)
            self.initial_status(obj)
        if self.tracks_generation:
            obj["metadata"]["generation"] = 1
        else:
            obj["metadata"].pop("generation", None)

    def initial_status(self, obj: Object) -> None:
        """The status a new object starts with (empty unless the kind says otherwise)."""

    #: Core validation's stricter finalizer names (apiextensions kinds use the generic rule).
    kube_finalizers = True

    def validate(self, obj: Object) -> list[field.FieldError]:
        errors = names.validate_object_meta(
            obj, namespaced=self.rt.namespaced, name_rule=self.name_rule,
            kube_finalizers=self.kube_finalizers,
        )
        errors.extend(validation.validate(self.rt.group, self.rt.kind, obj))
        return errors

    # -- update ---------------------------------------------------------------------------
    def prepare_for_update(self, new: Object, old: Object) -> None:
        """Carry over what the main endpoint may not change, and bump generation."""
        if self.has_status:
            if "status" in old:
                new["status"] = _copy(old["status"])
            else:
                new.pop("status", None)
        if self.tracks_generation:
            generation = old["metadata"].get("generation", 1)
            if self.spec_changed(new, old):
                generation += 1
            new["metadata"]["generation"] = generation
        else:
            new["metadata"].pop("generation", None)

    def spec_changed(self, new: Object, old: Object) -> bool:
        """Whether the desired state changed: everything but metadata and status."""
        return _without(new, "metadata", "status") != _without(old, "metadata", "status")

    def validate_update(self, new: Object, old: Object) -> list[field.FieldError]:
        errors = names.validate_object_meta(
            new, namespaced=self.rt.namespaced, name_rule=self.name_rule,
            kube_finalizers=self.kube_finalizers,
        )
        errors.extend(names.validate_object_meta_update(new, old))
        errors.extend(validation.validate(self.rt.group, self.rt.kind, new))
        errors.extend(validation.validate_update(self.rt.group, self.rt.kind, new, old))
        return errors

    # -- delete ---------------------------------------------------------------------------
    def grace_period(self, obj: Object, requested: int | None) -> int:
        """Seconds of graceful deletion; 0 deletes at once (most kinds)."""
        return 0

    def pending_finalizers(self, obj: Object) -> bool:
        """Whether something must still finish before the object may leave storage."""
        return bool(obj["metadata"].get("finalizers"))

    def mark_deleting(self, obj: Object) -> None:
        """Adjust an object being marked for deletion (e.g. a namespace's phase)."""

    # -- shared pools (upstream BeginCreate / BeginUpdate / AfterDelete) -----------------
    async def begin_create(self, obj: Object, *, dry_run: bool) -> Transaction | None:
        """Reserve what a new, validated object takes from a shared pool, just before it
        is written; the Store finishes the returned transaction with the write's outcome."""
        return None

    async def begin_update(self, new: Object, old: Object, *,
                           dry_run: bool) -> Transaction | None:
        """As ``begin_create``, for an update about to be written over ``old``."""
        return None

    async def after_delete(self, obj: Object) -> None:
        """Give back what a deleted object held; called once its removal is stored."""


class StatusStrategy(Strategy):
    """The ``status`` subresource: only status changes; spec and metadata are kept."""

    subresource = "status"

    def reset_fields(self) -> fieldmanager.FieldSet | None:
        return fieldmanager.paths("spec", "metadata.labels", "metadata.annotations")

    def field_definition(self) -> str | fieldmanager.Schema | None:
        return self.parent.field_definition()

    def __init__(self, parent: Strategy) -> None:
        super().__init__(parent.rt)
        self.parent = parent

    def default(self, obj: Object) -> None:
        self.parent.default(obj)

    def prepare_for_update(self, new: Object, old: Object) -> None:
        status = new.get("status")
        replacement = _copy(old)
        replacement["metadata"]["resourceVersion"] = new["metadata"].get("resourceVersion", "")
        if "managedFields" in new["metadata"]:  # ownership of the status write (apply)
            replacement["metadata"]["managedFields"] = new["metadata"]["managedFields"]
        if status is None:
            replacement.pop("status", None)
        else:
            replacement["status"] = status
        new.clear()
        new.update(replacement)

    def validate_update(self, new: Object, old: Object) -> list[field.FieldError]:
        # Status is written by controllers and agents; upstream's status validation is
        # mostly about the shape, which the schema check already covers.
        return []


def _copy(value: Any) -> Any:
    """A deep copy of decoded JSON: a round trip through orjson is several times faster
    than ``copy.deepcopy`` (every stored object is JSON, so nothing is lost)."""
    return orjson.loads(orjson.dumps(value))
