"""A container's environment from its spec, resolved as the kubelet's
``makeEnvironmentVariables`` does.

Order and precedence, as upstream: first every ``envFrom`` source in order (each key of the
ConfigMap or Secret, with ``prefix``; keys that are not valid variable names are skipped
and reported in one ``InvalidEnvironmentVariableNames`` event per source), then ``env`` in
order, each one overriding what came before. A literal ``value`` may refer to variables
defined before it with ``$(NAME)`` (left as written when undefined, ``$$`` for a ``$``);
values from ``envFrom`` and ``valueFrom`` are never expanded. ``valueFrom`` reads a
ConfigMap or Secret key, a ``fieldRef`` or a ``resourceFieldRef``. A missing source or key
that is not ``optional`` is an ``EnvError`` whose text the container's
``CreateContainerConfigError`` shows (``configmap "x" not found``, ``couldn't find key y
in ConfigMap ns/x``). ConfigMaps and Secrets are read from the agent's watch cache.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence

from kubling.api.meta import Object
from kubling.node.volumes import downwardapi, secret, sources

_EXPANSION = re.compile(r"\$\$|\$\(([^)]*)\)")
_ENV_VAR_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


class EnvError(Exception):
    """The environment cannot be made; the message is the container's waiting message."""


@dataclasses.dataclass(frozen=True)
class PodFacts:
    """What the node knows about the pod beyond its spec."""

    pod_ips: Sequence[str]
    host_ip: str
    node_name: str
    allocatable: Mapping[str, str]


def expand(text: str, values: Mapping[str, str]) -> str:
    """``$(VAR)`` becomes VAR's value when defined (left as written otherwise), ``$$`` a
    literal ``$``: Kubernetes' expansion rules."""
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return values.get(match.group(1), match.group(0))
    return _EXPANSION.sub(one, text)


def is_env_var_name(name: str) -> bool:
    """Upstream's IsEnvVarName, which the kubelet applies to ``envFrom`` keys."""
    return bool(_ENV_VAR_NAME.fullmatch(name)) and not name.startswith("..") and name != "."


class _Objects:
    """The sources one resolution reads, each fetched once (as upstream's local maps)."""

    def __init__(self, cache: sources.ObjectCache, namespace: str) -> None:
        self.cache = cache
        self.namespace = namespace
        self._seen: dict[sources.Ref, Object | None] = {}

    async def get(self, kind: str, name: str, *, optional: bool) -> Object | None:
        ref = sources.Ref(kind, self.namespace, name)
        if ref not in self._seen:
            try:
                self._seen[ref] = await self.cache.get(ref)
            except sources.SourceNotFound as err:
                if optional:
                    return None
                raise EnvError(str(err)) from err
            except sources.SourceUnavailable as err:
                raise EnvError(str(err)) from err
        return self._seen[ref]


async def resolve(pod: Object, container: Object, *, cache: sources.ObjectCache,
                  facts: PodFacts, warn: Callable[[str], None]) -> dict[str, str]:
    """The container's variables in order; ``warn`` receives the text of each
    InvalidEnvironmentVariableNames event. Raises EnvError."""
    namespace = pod["metadata"].get("namespace") or "default"
    objects = _Objects(cache, namespace)
    env: dict[str, str] = {}
    for env_from in container.get("envFrom") or []:
        prefix = env_from.get("prefix") or ""
        for field, kind, label in (("configMapRef", "configmap", "configMap"),
                                   ("secretRef", "secret", "secret")):
            ref = env_from.get(field)
            if not ref:
                continue
            obj = await objects.get(kind, ref.get("name", ""),
                                    optional=bool(ref.get("optional")))
            if obj is None:
                continue
            data = _values(kind, obj)
            invalid = sorted(prefix + k for k in data if not is_env_var_name(prefix + k))
            env.update((prefix + k, v) for k, v in data.items()
                       if is_env_var_name(prefix + k))
            if invalid:
                warn(f"Keys [{', '.join(invalid)}] from the EnvFrom {label} {namespace}/"
                     f"{ref.get('name', '')} were skipped since they are considered invalid "
                     "environment variable names.")
    for var in container.get("env") or []:
        name = var["name"]
        if var.get("value"):
            env[name] = expand(str(var["value"]), env)
        elif var.get("valueFrom"):
            value = await _value_from(pod, container, var["valueFrom"], objects, facts)
            if value is None:
                continue  # an optional source or key that is absent: no variable
            env[name] = value
        else:
            env[name] = ""
    return env


def _values(kind: str, obj: Object) -> dict[str, str]:
    if kind == "configmap":
        return {k: str(v) for k, v in (obj.get("data") or {}).items()}
    return {k: v.decode(errors="replace") for k, v in secret.secret_data(obj).items()}


async def _value_from(pod: Object, container: Object, source: Object, objects: _Objects,
                      facts: PodFacts) -> str | None:
    try:
        if source.get("fieldRef"):
            return downwardapi.field_value(
                pod, source["fieldRef"].get("fieldPath", ""), pod_ips=facts.pod_ips,
                host_ip=facts.host_ip, node_name=facts.node_name)
        if source.get("resourceFieldRef"):
            ref = source["resourceFieldRef"]
            return downwardapi.resource_value(
                pod, ref.get("containerName") or container["name"], ref.get("resource", ""),
                ref.get("divisor"), allocatable=facts.allocatable)
    except downwardapi.FieldError as err:
        raise EnvError(str(err)) from err
    for field, kind, label in (("configMapKeyRef", "configmap", "ConfigMap"),
                               ("secretKeyRef", "secret", "Secret")):
        ref = source.get(field)
        if not ref:
            continue
        optional = bool(ref.get("optional"))
        obj = await objects.get(kind, ref.get("name", ""), optional=optional)
        if obj is None:
            return None
        key = ref.get("key", "")
        data = _values(kind, obj)
        if key not in data:
            if optional:
                return None
            raise EnvError(f"couldn't find key {key} in {label} {objects.namespace}/"
                           f"{ref.get('name', '')}")
        return data[key]
    raise EnvError(f"env valueFrom {sorted(source)} is not supported")
