"""Lifecycle hooks: ``postStart`` and ``preStop`` (exec, httpGet, sleep).

They share the probe actions (``probes.run_action``) but not their semantics: a hook has no
timeout of its own (postStart runs until it ends; preStop within the grace period), and a
failure is reported with upstream's messages (``FailedPostStartHook`` / ``FailedPreStopHook``)
by the pod worker.
"""

from __future__ import annotations

import asyncio

from kubling.api.meta import Object
from kubling.node.probes import ProbeError, Target, run_action

#: postStart has no deadline upstream other than the container's; cap it so that a hung hook
#: cannot wedge a pod worker forever.
POST_START_LIMIT = 300.0


class HookError(Exception):
    """The hook failed; the message is what the event says."""


async def run_hook(hook: Object, target: Target, *, timeout: float) -> None:
    """Run one handler, raising HookError with upstream's wording when it fails."""
    if "sleep" in hook:
        await asyncio.sleep(max(0.0, float((hook["sleep"] or {}).get("seconds") or 0)))
        return
    try:
        ok, output = await run_action(hook, target, timeout)
    except ProbeError as err:
        raise HookError(str(err)) from err
    if ok:
        return
    if "exec" in hook:
        argv = list((hook["exec"] or {}).get("command") or [])
        raise HookError(f"Exec lifecycle hook ({argv}) failed - error: command "
                        f"'{' '.join(argv)}' exited with a non-zero code, message: {output!r}")
    if "httpGet" in hook:
        raise HookError(f"HTTP lifecycle hook ({(hook['httpGet'] or {}).get('path', '/')}) "
                        f"failed - error: {output}")
    raise HookError(output)
