"""The few cgroupfs facts the runtime needs: where a container's cgroup directories are, how
to remove what runc left, and whether the kernel OOM-killed something in one.

Works on cgroup v1, v2 and the hybrid of both (v1 controllers plus a v2 tree that holds no
controllers), because it reads the hierarchies from the mount table instead of guessing.
Paths are cgroupfs style ("/kubling/burstable/pod<uid>/<ctr>"), relative to each hierarchy's root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Hierarchy", "cgroup_dirs", "hierarchies", "oom_kill_count", "remove_cgroup"]


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy: its mount point and controllers (empty for v2)."""

    mountpoint: Path
    version: int
    controllers: frozenset[str]


def hierarchies(mounts: Path = Path("/proc/self/mounts")) -> list[Hierarchy]:
    """Every cgroup hierarchy mounted in this mount namespace."""
    found: list[Hierarchy] = []
    for line in mounts.read_text().splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] not in ("cgroup", "cgroup2"):
            continue
        mountpoint = Path(fields[1].replace("\\040", " "))
        if fields[2] == "cgroup2":
            found.append(Hierarchy(mountpoint, 2, frozenset()))
        else:
            options = frozenset(fields[3].split(","))
            found.append(Hierarchy(mountpoint, 1, options))
    return found


def cgroup_dirs(path: str) -> list[Path]:
    """The directory of cgroup `path` in each hierarchy (whether or not it exists)."""
    relative = path.strip("/")
    return [h.mountpoint / relative for h in hierarchies()] if relative else []


def remove_cgroup(path: str) -> list[Path]:
    """Remove cgroup `path` and the cgroups below it from every hierarchy, deepest first.
    Returns the directories that could not go (a process still in them): a cgroup with
    tasks cannot be removed, and that is worth reporting rather than hiding."""
    left: list[Path] = []
    for top in cgroup_dirs(path):
        if not top.is_dir():
            continue
        for dirpath, _dirnames, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(dirpath)
            except FileNotFoundError:
                pass
            except OSError:
                left.append(Path(dirpath))
    return left


def oom_kill_count(path: str, *, mounts: Path = Path("/proc/self/mounts")) -> int | None:
    """How many processes the OOM killer killed in cgroup `path`: memory.events' oom_kill
    on v2, memory.oom_control's oom_kill on v1. A v1 kernel older than 4.13 has no such
    line; there memory.failcnt (how often the limit was hit) is the best sign left, which
    the caller pairs with a SIGKILL exit. None if the cgroup is gone."""
    for h in hierarchies(mounts):
        directory = h.mountpoint / path.strip("/")
        if h.version == 1 and "memory" in h.controllers:
            control = _read(directory / "memory.oom_control")
            if control is None:
                continue
            count = _field(control, "oom_kill")
            if count is None:
                failcnt = (_read(directory / "memory.failcnt") or "").strip()
                count = int(failcnt) if failcnt.isdigit() else None
        elif h.version == 2:
            count = _field(_read(directory / "memory.events") or "", "oom_kill")
        else:
            continue
        if count is not None:
            return count
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _field(text: str, key: str) -> int | None:
    """The value of `key` in a flat-keyed cgroup file ("key value" per line)."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None
