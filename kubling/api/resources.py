"""The catalogue of built-in resource types: what discovery advertises and the Store serves.

Each entry carries the facts upstream's discovery documents publish for a resource (plural,
singular, kind, scope, verbs, short names, categories, subresources), so that kubectl's
short names (`po`, `deploy`), the `all` category and `kubectl api-resources` behave as on a
real cluster. A new built-in kind is one line here plus one strategy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

#: The verbs a normal resource supports, in upstream's discovery order.
ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
#: Verbs of a `status` or `scale` subresource.
SUBRESOURCE_RW = ("get", "patch", "update")
#: Verbs of action subresources such as `binding` and `eviction`.
CREATE_ONLY = ("create",)


@dataclasses.dataclass(frozen=True, slots=True)
class Subresource:
    """A subresource such as ``status``: served by the parent's store, another strategy."""

    name: str
    kind: str
    verbs: tuple[str, ...]
    group: str = ""  # of ``kind`` when it differs from the parent's (Scale, Eviction)
    version: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class ResourceType:
    """One served group/version/resource, as discovery describes it."""

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    verbs: tuple[str, ...] = ALL_VERBS
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = ()
    #: The apiVersion objects are stored in, when another version of the same resource is
    #: the stored one (``autoscaling/v2`` for ``autoscaling/v1`` HPAs, ``v1`` for
    #: ``events.k8s.io/v1`` Events); empty when this version is stored as it is.
    storage_version: str = ""

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_version(self) -> str:
        """The ``apiVersion`` field value of this resource's objects."""
        return self.group_version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def group_resource(self) -> str:
        """``deployments.apps``: how upstream names a resource in error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def storage_prefix(self) -> str:
        """Key prefix of this resource's objects; shared by every version of it."""
        group = self.storage_version.rpartition("/")[0] if self.storage_version else self.group
        return f"/registry/{group or 'core'}/{self.plural}/"

    def subresource(self, name: str) -> Subresource | None:
        for sub in self.subresources:
            if sub.name == name:
                return sub
        return None


def _status(kind: str) -> Subresource:
    return Subresource("status", kind, SUBRESOURCE_RW)


_SCALE = Subresource("scale", "Scale", SUBRESOURCE_RW, group="autoscaling", version="v1")


def _rt(
    gv: str,
    kind: str,
    plural: str,
    *,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    subresources: tuple[Subresource, ...] = (),
    verbs: tuple[str, ...] = ALL_VERBS,
    storage_version: str = "",
) -> ResourceType:
    group, _, version = gv.rpartition("/")
    return ResourceType(
        group=group,
        version=version,
        kind=kind,
        plural=plural,
        singular=kind.lower(),
        namespaced=namespaced,
        verbs=verbs,
        short_names=short,
        categories=categories,
        subresources=subresources,
        storage_version=storage_version,
    )


_ALL = ("all",)

BUILTIN: tuple[ResourceType, ...] = (
    # core/v1
    _rt(
        "v1",
        "Namespace",
        "namespaces",
        namespaced=False,
        short=("ns",),
        subresources=(_status("Namespace"), Subresource("finalize", "Namespace", ("update",))),
        verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
    ),
    _rt(
        "v1",
        "Pod",
        "pods",
        short=("po",),
        categories=_ALL,
        subresources=(
            _status("Pod"),
            Subresource("binding", "Binding", CREATE_ONLY),
            Subresource("ephemeralcontainers", "Pod", SUBRESOURCE_RW),
            Subresource("eviction", "Eviction", CREATE_ONLY, group="policy", version="v1"),
        ),
    ),
    _rt(
        "v1",
        "Service",
        "services",
        short=("svc",),
        categories=_ALL,
        subresources=(_status("Service"),),
        verbs=("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"),
    ),
    _rt("v1", "Endpoints", "endpoints", short=("ep",)),
    _rt("v1", "ConfigMap", "configmaps", short=("cm",)),
    _rt("v1", "Secret", "secrets"),
    _rt(
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        short=("sa",),
        subresources=(
            Subresource("token", "TokenRequest", CREATE_ONLY, group="authentication.k8s.io",
                        version="v1"),
        ),
    ),
    _rt("v1", "Event", "events", short=("ev",)),
    _rt("v1", "Node", "nodes", namespaced=False, short=("no",), subresources=(_status("Node"),)),
    _rt(
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        namespaced=False,
        short=("pv",),
        subresources=(_status("PersistentVolume"),),
    ),
    _rt(
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        short=("pvc",),
        subresources=(_status("PersistentVolumeClaim"),),
    ),
    _rt("v1", "LimitRange", "limitranges", short=("limits",)),
    _rt(
        "v1",
        "ResourceQuota",
        "resourcequotas",
        short=("quota",),
        subresources=(_status("ResourceQuota"),),
    ),
    _rt(
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        short=("rc",),
        categories=_ALL,
        subresources=(_status("ReplicationController"), _SCALE),
    ),
    _rt("v1", "PodTemplate", "podtemplates"),
    # apps/v1
    _rt(
        "apps/v1",
        "Deployment",
        "deployments",
        short=("deploy",),
        categories=_ALL,
        subresources=(_status("Deployment"), _SCALE),
    ),
    _rt(
        "apps/v1",
        "ReplicaSet",
        "replicasets",
        short=("rs",),
        categories=_ALL,
        subresources=(_status("ReplicaSet"), _SCALE),
    ),
    _rt(
        "apps/v1",
        "StatefulSet",
        "statefulsets",
        short=("sts",),
        categories=_ALL,
        subresources=(_status("StatefulSet"), _SCALE),
    ),
    _rt(
        "apps/v1",
        "DaemonSet",
        "daemonsets",
        short=("ds",),
        categories=_ALL,
        subresources=(_status("DaemonSet"),),
    ),
    _rt("apps/v1", "ControllerRevision", "controllerrevisions"),
    # batch/v1
    _rt("batch/v1", "Job", "jobs", categories=_ALL, subresources=(_status("Job"),)),
    _rt(
        "batch/v1",
        "CronJob",
        "cronjobs",
        short=("cj",),
        categories=_ALL,
        subresources=(_status("CronJob"),),
    ),
    # networking.k8s.io/v1
    _rt(
        "networking.k8s.io/v1",
        "Ingress",
        "ingresses",
        short=("ing",),
        subresources=(_status("Ingress"),),
    ),
    _rt("networking.k8s.io/v1", "IngressClass", "ingressclasses", namespaced=False),
    _rt("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", short=("netpol",)),
    # discovery.k8s.io/v1
    _rt("discovery.k8s.io/v1", "EndpointSlice", "endpointslices"),
    # rbac.authorization.k8s.io/v1
    _rt("rbac.authorization.k8s.io/v1", "Role", "roles"),
    _rt("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
    _rt("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", namespaced=False),
    _rt(
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        namespaced=False,
    ),
    # storage.k8s.io/v1
    _rt("storage.k8s.io/v1", "StorageClass", "storageclasses", namespaced=False, short=("sc",)),
    _rt("storage.k8s.io/v1", "CSIDriver", "csidrivers", namespaced=False),
    _rt("storage.k8s.io/v1", "CSINode", "csinodes", namespaced=False),
    _rt(
        "storage.k8s.io/v1",
        "VolumeAttachment",
        "volumeattachments",
        namespaced=False,
        subresources=(_status("VolumeAttachment"),),
    ),
    # coordination.k8s.io/v1
    _rt("coordination.k8s.io/v1", "Lease", "leases"),
    # events.k8s.io/v1: the same objects as core events, another schema
    _rt("events.k8s.io/v1", "Event", "events", short=("ev",), storage_version="v1"),
    # policy/v1
    _rt(
        "policy/v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        short=("pdb",),
        subresources=(_status("PodDisruptionBudget"),),
    ),
    # scheduling.k8s.io/v1
    _rt(
        "scheduling.k8s.io/v1", "PriorityClass", "priorityclasses", namespaced=False, short=("pc",)
    ),
    # autoscaling: v2 is preferred and stored; v1 is served by conversion
    _rt(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        short=("hpa",),
        categories=_ALL,
        subresources=(_status("HorizontalPodAutoscaler"),),
    ),
    _rt(
        "autoscaling/v1",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        short=("hpa",),
        categories=_ALL,
        subresources=(_status("HorizontalPodAutoscaler"),),
        storage_version="autoscaling/v2",
    ),
    # node.k8s.io/v1
    _rt("node.k8s.io/v1", "RuntimeClass", "runtimeclasses", namespaced=False),
    # certificates.k8s.io/v1
    _rt(
        "certificates.k8s.io/v1",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        namespaced=False,
        short=("csr",),
        subresources=(
            _status("CertificateSigningRequest"),
            Subresource("approval", "CertificateSigningRequest", SUBRESOURCE_RW),
        ),
    ),
    # admissionregistration.k8s.io/v1
    _rt(
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        namespaced=False,
        categories=("api-extensions",),
    ),
    _rt(
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        namespaced=False,
        categories=("api-extensions",),
    ),
    _rt(
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
        namespaced=False,
        categories=("api-extensions",),
        subresources=(_status("ValidatingAdmissionPolicy"),),
    ),
    _rt(
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
        namespaced=False,
        categories=("api-extensions",),
    ),
    # authentication.k8s.io/v1 and authorization.k8s.io/v1: create-only reviews, never stored
    _rt("authentication.k8s.io/v1", "SelfSubjectReview", "selfsubjectreviews",
        namespaced=False, verbs=CREATE_ONLY),
    _rt("authorization.k8s.io/v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews",
        namespaced=False, verbs=CREATE_ONLY),
    _rt("authorization.k8s.io/v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews",
        namespaced=False, verbs=CREATE_ONLY),
    _rt("authorization.k8s.io/v1", "SubjectAccessReview", "subjectaccessreviews",
        namespaced=False, verbs=CREATE_ONLY),
    _rt("authorization.k8s.io/v1", "LocalSubjectAccessReview", "localsubjectaccessreviews",
        verbs=CREATE_ONLY),
    # apiextensions.k8s.io/v1
    _rt(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        namespaced=False,
        short=("crd", "crds"),
        categories=("api-extensions",),
        subresources=(_status("CustomResourceDefinition"),),
    ),
)

#: Preferred version per group, in the order upstream's discovery lists groups.
GROUP_ORDER: tuple[str, ...] = (
    "",
    "apiregistration.k8s.io",
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "node.k8s.io",
    "discovery.k8s.io",
)


class Catalogue:
    """Lookup of served resource types by group/version/plural and by kind."""

    def __init__(self, types: tuple[ResourceType, ...] = BUILTIN) -> None:
        self._types: list[ResourceType] = []
        self._by_gvr: dict[tuple[str, str, str], ResourceType] = {}
        self._by_gvk: dict[tuple[str, str, str], ResourceType] = {}
        self._listeners: list[Callable[[], None]] = []
        for rt in types:
            self.add(rt)

    def add(self, rt: ResourceType) -> None:
        self._types.append(rt)
        self._by_gvr[(rt.group, rt.version, rt.plural)] = rt
        self._by_gvk[(rt.group, rt.version, rt.kind)] = rt
        self._changed()

    def remove(self, rt: ResourceType) -> None:
        """Stop serving ``rt`` (a custom resource whose CRD went away or changed)."""
        if rt in self._types:
            self._types.remove(rt)
        if self._by_gvr.get((rt.group, rt.version, rt.plural)) == rt:
            del self._by_gvr[(rt.group, rt.version, rt.plural)]
        if self._by_gvk.get((rt.group, rt.version, rt.kind)) == rt:
            del self._by_gvk[(rt.group, rt.version, rt.kind)]
        self._changed()

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever the set of served types changes (discovery, OpenAPI)."""
        self._listeners.append(callback)

    def _changed(self) -> None:
        for callback in self._listeners:
            callback()

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(self._types)

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_gvr.get((group, version, plural))

    def by_kind(self, group: str, version: str, kind: str) -> ResourceType | None:
        return self._by_gvk.get((group, version, kind))

    def group_versions(self) -> dict[str, list[str]]:
        """Each served group's versions, preferred first (the higher stable version)."""
        groups: dict[str, list[str]] = {}
        for rt in self._types:
            versions = groups.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
        for versions in groups.values():
            versions.sort(key=_version_priority)
        order = {g: i for i, g in enumerate(GROUP_ORDER)}
        return dict(sorted(groups.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes version ordering: GA before beta before alpha, higher numbers first."""
    import re

    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (3, 0, 0)
    major = int(m.group(1))
    level = {"": 0, None: 0, "beta": 1, "alpha": 2}[m.group(2)]
    minor = int(m.group(3) or 0)
    return (level, -major, -minor)
