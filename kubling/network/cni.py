"""A CNI runtime: attaches pod sandboxes to the network by running CNI plugins.

This is the part of kubelet/containerd (libcni) that kubling needs, written against the CNI
1.0 specification so that any conforming plugin works, not only the reference ones of the
default configuration:

* a plugin is the executable named by its ``type``, searched in ``bin_dirs``; it gets its
  parameters in ``CNI_*`` environment variables and its configuration on stdin (the list's
  ``name`` and ``cniVersion`` injected, ``runtimeConfig`` holding only the capabilities it
  declares, ``prevResult`` chaining each plugin's result into the next);
* ADD runs the list in order, DEL in reverse order, CHECK in order against the cached
  result; operations on one container never overlap;
* the final ADD result and the configuration it was made with are cached per container, as
  libcni caches them, so DEL after an agent restart, or after the configuration changed,
  still undoes exactly what ADD did, and DEL works with the namespace gone (empty
  ``CNI_NETNS``, which the spec allows).

Plugins run as asyncio subprocesses: the event loop never waits on one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from kubling.network import bridgequirk, netns
from kubling.network.cniconfig import (
    NetworkConfigList,
    ensure_default_config,
    load_network_config,
    write_file_atomically,
)
from kubling.network.cnitypes import DNS, CNIError, Interface, IPConfig, PortMapping, Result, Route

__all__ = [
    "CNI",
    "DEFAULT_BIN_DIRS",
    "DNS",
    "CNIError",
    "IPConfig",
    "Interface",
    "NetworkConfigList",
    "PortMapping",
    "Result",
    "Route",
    "ensure_default_config",
    "load_network_config",
]

log = logging.getLogger(__name__)

DEFAULT_BIN_DIRS: tuple[Path, ...] = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))
_INSTALL_HINT = "apt-get install containernetworking-plugins"
_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_FALLBACK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CACHE_KIND = "kublingCNICacheV1"


@dataclass(frozen=True)
class _Invocation:
    """The parameters every plugin of one operation on one attachment is given."""

    container_id: str
    netns: str
    ifname: str
    cni_args: tuple[tuple[str, str], ...]
    capability_args: Mapping[str, Any]

    def environ(self, command: str, cni_path: str) -> dict[str, str]:
        """The runtime's own environment (plugins run iptables found on PATH) plus CNI_*."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env.setdefault("PATH", _FALLBACK_PATH)
        env.update(CNI_COMMAND=command, CNI_CONTAINERID=self.container_id, CNI_NETNS=self.netns,
                   CNI_IFNAME=self.ifname, CNI_PATH=cni_path,
                   CNI_ARGS=";".join(f"{k}={v}" for k, v in self.cni_args))
        return env


@dataclass(frozen=True)
class _CacheEntry:
    """What ADD left for DEL and CHECK: the list it ran, its parameters, its result."""

    config: NetworkConfigList
    ifname: str
    netns: str
    cni_args: tuple[tuple[str, str], ...]
    capability_args: Mapping[str, Any]
    result: Mapping[str, Any]


class CNI:
    """Attach and detach pod sandboxes, configured by the first file of ``conf_dir``.

    The configuration is re-read on every ADD (a few stat calls and one small read), so
    installing another CNI's configuration takes effect for the next pod without a restart,
    as with kubelet.
    """

    def __init__(self, conf_dir: Path, bin_dirs: Sequence[Path] = DEFAULT_BIN_DIRS, *,
                 cache_dir: Path, timeout: float = 60.0) -> None:
        self.conf_dir = Path(conf_dir)
        self.bin_dirs = tuple(Path(d) for d in bin_dirs)
        self.cache_dir = Path(cache_dir)
        self.timeout = timeout
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())

    # -- public API -----------------------------------------------------------------------

    async def network_config(self) -> NetworkConfigList:
        """The configuration list a new ADD would use."""
        return await asyncio.to_thread(load_network_config, self.conf_dir)

    async def add(self, container_id: str, netns_path: Path | str, ifname: str = "eth0", *,
                  pod_namespace: str, pod_name: str, pod_uid: str,
                  port_mappings: Sequence[PortMapping] = (),
                  capability_args: Mapping[str, Any] | None = None) -> Result:
        """Attach the sandbox ``container_id`` living in ``netns_path``; return its addresses.

        On failure the plugins that ran are undone (DEL in reverse order) before the error is
        raised, so a failed ADD leaks neither an address nor a veth.
        """
        _check_container_id(container_id)
        _check_ifname(ifname)
        if not netns.is_netns_path(Path(netns_path)):
            raise CNIError(f"network namespace {netns_path} does not exist", code=4)
        capabilities = dict(capability_args or {})
        if port_mappings:
            capabilities["portMappings"] = [p.to_json() for p in port_mappings]
        call = _Invocation(container_id, str(netns_path), ifname,
                           _pod_args(pod_namespace, pod_name, container_id, pod_uid),
                           capabilities)
        async with self._lock(container_id):
            if await asyncio.to_thread(self._read_cache, container_id) is not None:
                raise CNIError(f"container {container_id} is already attached; DEL it first")
            config = await self.network_config()
            for plugin in config.plugins:  # fail before any plugin has touched the host
                self.find_plugin(_type(plugin))
            started = time.perf_counter()
            result = await self._add_list(config, call)
            await asyncio.to_thread(self._write_cache, container_id,
                                    _CacheEntry(config, ifname, call.netns, call.cni_args,
                                                capabilities, result))
        log.debug("CNI ADD %s: %s in %.1f ms", container_id, result.get("ips"),
                  (time.perf_counter() - started) * 1000)
        return Result.parse(result)

    async def check(self, container_id: str, netns_path: Path | str,
                    ifname: str = "eth0") -> None:
        """Ask every plugin whether the attachment is still as ADD made it; raise if not."""
        _check_container_id(container_id)
        async with self._lock(container_id):
            entry = await asyncio.to_thread(self._read_cache, container_id)
            if entry is None:
                raise CNIError(f"container {container_id} has no cached ADD result to CHECK",
                               code=3)
            if entry.config.disable_check:
                return
            if _version(entry.config.cni_version) < (0, 4, 0):
                raise CNIError(f"cniVersion {entry.config.cni_version} has no CHECK", code=1)
            call = _Invocation(container_id, str(netns_path), ifname, entry.cni_args,
                               entry.capability_args)
            for plugin in entry.config.plugins:
                await self._invoke(plugin, "CHECK", call,
                                   _plugin_stdin(entry.config, plugin, call, entry.result))

    async def delete(self, container_id: str, netns_path: Path | str | None = None,
                     ifname: str = "eth0", *, pod_namespace: str | None = None,
                     pod_name: str | None = None, pod_uid: str | None = None) -> None:
        """Detach the sandbox: run DEL in reverse order and release everything ADD took.

        Idempotent. Uses the configuration and result cached by ADD when there is one (and
        the current configuration otherwise); a missing namespace is passed as an empty
        ``CNI_NETNS``, for which plugins release what they can without entering it.
        """
        _check_container_id(container_id)
        _check_ifname(ifname)
        async with self._lock(container_id):
            entry = await asyncio.to_thread(self._read_cache, container_id)
            config = entry.config if entry else await self.network_config()
            live = netns_path is not None and netns.is_netns_path(Path(netns_path))
            pod_args = entry.cni_args if entry else _pod_args(
                pod_namespace or "", pod_name or "", container_id, pod_uid or "")
            call = _Invocation(container_id, str(netns_path) if live else "", ifname, pod_args,
                               entry.capability_args if entry else {})
            prev = entry.result if entry and _version(config.cni_version) >= (0, 4, 0) else None
            started = time.perf_counter()
            may_leak = await _bridge_may_leak_ipmasq(config, call)
            await self._del_list(config, call, prev)
            if may_leak:
                await bridgequirk.remove_leaked_ipmasq(config.name, container_id,
                                                       _families(prev))
            await asyncio.to_thread(self._remove_cache, container_id)
        log.debug("CNI DEL %s in %.1f ms", container_id, (time.perf_counter() - started) * 1000)

    async def cached_result(self, container_id: str) -> Result | None:
        """The result of the container's last ADD, e.g. to report pod IPs after a restart."""
        _check_container_id(container_id)
        entry = await asyncio.to_thread(self._read_cache, container_id)
        return Result.parse(entry.result) if entry else None

    async def supported_versions(self, plugin_type: str) -> list[str]:
        """The spec versions a plugin accepts (the VERSION command)."""
        call = _Invocation("", "", "", (), {})
        stdin = orjson.dumps({"cniVersion": "1.0.0"})
        answer = await self._invoke({"type": plugin_type}, "VERSION", call, stdin)
        return [str(v) for v in (answer or {}).get("supportedVersions", [])]

    def find_plugin(self, plugin_type: str) -> Path:
        """The executable for ``plugin_type``: the first match in ``bin_dirs``."""
        for directory in self.bin_dirs:
            candidate = directory / plugin_type
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
        searched = " ".join(str(d) for d in self.bin_dirs)
        raise CNIError(f'failed to find plugin "{plugin_type}" in path [{searched}] '
                       f"— {_INSTALL_HINT}", plugin=plugin_type)

    # -- running the list -----------------------------------------------------------------

    async def _add_list(self, config: NetworkConfigList, call: _Invocation) -> dict[str, Any]:
        """ADD each plugin in order, feeding each result to the next as ``prevResult``."""
        prev: dict[str, Any] | None = None
        attempted = 0
        try:
            for plugin in config.plugins:
                attempted += 1
                answer = await self._invoke(plugin, "ADD", call,
                                            _plugin_stdin(config, plugin, call, prev))
                if answer is None:
                    raise CNIError("ADD printed no result", code=6, plugin=_type(plugin))
                prev = answer
        except BaseException as exc:
            # Only the plugins that ran hold anything: DEL just those, in reverse order.
            # Shielded: a cancelled ADD must still be undone.
            ran = replace(config, plugins=config.plugins[:attempted])
            await asyncio.shield(self._rollback(ran, call, prev, exc))
            raise
        assert prev is not None  # a list has at least one plugin
        return prev

    async def _rollback(self, config: NetworkConfigList, call: _Invocation,
                        prev: Mapping[str, Any] | None, cause: BaseException) -> None:
        try:
            await self._del_list(config, call, prev)
        except Exception as exc:
            cause.add_note(f"and undoing the partial ADD failed too: {exc}")

    async def _del_list(self, config: NetworkConfigList, call: _Invocation,
                        prev: Mapping[str, Any] | None) -> None:
        """DEL each plugin in reverse order; the first failure stops it, as in libcni,
        leaving the cache for a retry (DEL is idempotent)."""
        for plugin in reversed(config.plugins):
            await self._invoke(plugin, "DEL", call, _plugin_stdin(config, plugin, call, prev))

    async def _invoke(self, plugin: Mapping[str, Any], command: str, call: _Invocation,
                      stdin: bytes) -> dict[str, Any] | None:
        """Run one plugin; its stdout JSON on success, a CNIError from its error otherwise."""
        kind = _type(plugin)
        executable = self.find_plugin(kind)
        env = call.environ(command, ":".join(str(d) for d in self.bin_dirs))
        proc = await asyncio.create_subprocess_exec(
            executable, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, cwd="/")
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(stdin), self.timeout)
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
            if isinstance(exc, TimeoutError):
                raise CNIError(f"{command} timed out after {self.timeout:g}s",
                               code=11, plugin=kind) from None
            raise
        if proc.returncode != 0:
            raise _plugin_error(kind, command, proc.returncode or 0, stdout, stderr)
        if not stdout.strip():
            return None
        try:
            answer = orjson.loads(stdout)
        except orjson.JSONDecodeError as exc:
            raise CNIError(f"{command} printed invalid JSON", code=6, plugin=kind,
                           details=str(exc)) from exc
        if not isinstance(answer, dict):
            raise CNIError(f"{command} printed a non-object result", code=6, plugin=kind)
        return answer

    # -- the result cache -----------------------------------------------------------------

    def _lock(self, container_id: str) -> asyncio.Lock:
        lock = self._locks.get(container_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[container_id] = lock
        return lock

    def _cache_path(self, container_id: str) -> Path:
        return self.cache_dir / f"{container_id}.json"

    def _write_cache(self, container_id: str, entry: _CacheEntry) -> None:
        document = {
            "kind": _CACHE_KIND, "containerId": container_id, "ifName": entry.ifname,
            "networkName": entry.config.name, "netns": entry.netns,
            "config": entry.config.to_json(), "cniArgs": [list(a) for a in entry.cni_args],
            "capabilityArgs": dict(entry.capability_args), "result": dict(entry.result),
        }
        write_file_atomically(self._cache_path(container_id), orjson.dumps(document))

    def _read_cache(self, container_id: str) -> _CacheEntry | None:
        path = self._cache_path(container_id)
        try:
            doc = orjson.loads(path.read_bytes())
            return _CacheEntry(
                config=NetworkConfigList.from_json(doc["config"], path),
                ifname=str(doc["ifName"]), netns=str(doc.get("netns", "")),
                cni_args=tuple((str(k), str(v)) for k, v in doc.get("cniArgs", [])),
                capability_args=dict(doc.get("capabilityArgs") or {}),
                result=dict(doc["result"]))
        except FileNotFoundError:
            return None
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, CNIError) as exc:
            # A torn cache must not wedge the pod: DEL falls back to the live configuration.
            log.warning("ignoring unreadable CNI cache %s: %s", path, exc)
            return None

    def _remove_cache(self, container_id: str) -> None:
        self._cache_path(container_id).unlink(missing_ok=True)


def _plugin_stdin(config: NetworkConfigList, plugin: Mapping[str, Any], call: _Invocation,
                  prev: Mapping[str, Any] | None) -> bytes:
    """One plugin's configuration as the spec derives it from the list."""
    conf = dict(plugin)
    conf["cniVersion"] = config.cni_version
    conf["name"] = config.name
    wanted = plugin.get("capabilities") or {}
    runtime = {k: v for k, v in call.capability_args.items() if wanted.get(k) is True}
    if runtime:
        conf["runtimeConfig"] = runtime
    if prev is not None:
        conf["prevResult"] = prev
    return orjson.dumps(conf)


async def _bridge_may_leak_ipmasq(config: NetworkConfigList, call: _Invocation) -> bool:
    """Whether this DEL is one the reference bridge cannot unmasquerade (see bridgequirk):
    it needs the pod's interface, so an absent namespace or interface means a leak."""
    if not bridgequirk.masquerades(config.plugins):
        return False
    if not call.netns:
        return True
    return not await asyncio.to_thread(netns.has_interface, Path(call.netns), call.ifname)


def _plugin_error(kind: str, command: str, returncode: int, stdout: bytes,
                  stderr: bytes) -> CNIError:
    """The spec's error object ({code, msg, details} on stdout), or whatever was printed."""
    try:
        doc = orjson.loads(stdout)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and doc.get("msg"):
        return CNIError(str(doc["msg"]), code=int(doc.get("code") or 0),
                        details=str(doc.get("details") or ""), plugin=kind)
    text = (stderr or stdout).decode(errors="replace").strip()
    return CNIError(f"{command} failed with exit status {returncode}", details=text,
                    plugin=kind)


def _pod_args(namespace: str, name: str, container_id: str,
              uid: str) -> tuple[tuple[str, str], ...]:
    """CNI_ARGS as kubelet sets them; IgnoreUnknown so plugins that know none still run."""
    pairs = (("K8S_POD_NAMESPACE", namespace), ("K8S_POD_NAME", name),
             ("K8S_POD_INFRA_CONTAINER_ID", container_id), ("K8S_POD_UID", uid),
             ("IgnoreUnknown", "1"))
    for key, value in pairs:
        if ";" in value or "=" in value:
            raise ValueError(f"{key} {value!r} cannot be passed in CNI_ARGS")
    return pairs


def _check_container_id(container_id: str) -> None:
    if not _CONTAINER_ID.match(container_id):
        raise ValueError(f"container ID {container_id!r} must match {_CONTAINER_ID.pattern}")


def _check_ifname(ifname: str) -> None:
    if (not ifname or len(ifname) > 15 or ifname in (".", "..")
            or any(c in ifname for c in "/:") or any(c.isspace() for c in ifname)):
        raise ValueError(f"interface name {ifname!r} is not valid")


def _type(plugin: Mapping[str, Any]) -> str:
    return str(plugin.get("type", ""))


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        return (0,)


def _families(result: Mapping[str, Any] | None) -> list[int]:
    """IP families of a result's addresses; both when unknown, to leave nothing behind."""
    if not result:
        return [4, 6]
    families = {6 if ":" in str(ip.get("address", "")) else 4 for ip in result.get("ips") or ()}
    return sorted(families) or [4, 6]
