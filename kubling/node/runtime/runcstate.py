"""A container's state read from runc's own state directory, without running runc.

``runc state`` is a Go program: every call costs about 8 ms of CPU, and the agent asks for
a container's state several times while a pod starts (five calls a pod measured with
``bench/pod_startup_bench.py``) — more CPU than anything else it does per pod. runc keeps
what it answers in ``<root>/<id>/state.json`` and decides the status from the init
process, so the same answer can be read here:

- no state directory: runc does not know the container (None);
- the init process is gone, a zombie, or another process with its PID (its start time in
  ``/proc/<pid>/stat`` differs from ``init_process_start``): ``stopped``;
- its ``exec.fifo`` still exists (``runc start`` has not run yet): ``created``;
- otherwise ``running`` (kubling never pauses containers).

The file is runc's internal format (stable across 1.0 to 1.2); anything unexpected in it
raises ``StateFormatError`` so that the caller can ask runc itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["StateFormatError", "read_state"]


class StateFormatError(Exception):
    """state.json is not what this reader knows; ask ``runc state`` instead."""


def read_state(runc_root: Path, container_id: str) -> dict[str, Any] | None:
    """``runc state``'s answer (``id``, ``pid``, ``status``, ``created``), or None if runc
    has no such container."""
    directory = runc_root / container_id
    try:
        raw = (directory / "state.json").read_bytes()
    except FileNotFoundError:
        return None if not directory.exists() else _unreadable("state.json is missing")
    except OSError as err:
        raise StateFormatError(str(err)) from None
    try:
        state = json.loads(raw)
        pid = int(state["init_process_pid"])
        start = int(state["init_process_start"])
        created = str(state["created"])
    except (ValueError, KeyError, TypeError) as err:
        raise StateFormatError(f"unexpected state.json: {err}") from None
    if _alive_since(pid, start):
        status = "created" if (directory / "exec.fifo").exists() else "running"
    else:
        status, pid = "stopped", 0
    return {"id": container_id, "pid": pid, "status": status, "created": created}


def _unreadable(why: str) -> dict[str, Any]:
    raise StateFormatError(why)


def _alive_since(pid: int, start: int) -> bool:
    """Whether ``pid`` is still the process that started at ``start`` (clock ticks after
    boot) and has not exited."""
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3 of proc(5)); fields[19] the start time (field 22).
    return fields[0] not in ("Z", "X", "x") and int(fields[19]) == start
