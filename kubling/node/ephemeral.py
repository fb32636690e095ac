"""Ephemeral containers (``kubectl debug``): what sets them apart from a pod's other
containers on the node.

``kubectl debug`` adds an entry to ``spec.ephemeralContainers`` through the
``pods/ephemeralcontainers`` subresource; the pod worker then starts it once in the pod's
sandbox, beside the running containers, and never restarts it (restartPolicy Never,
whatever the pod's). With ``targetContainerName`` it also joins that container's PID
namespace, as containerd does, so that ``ps`` shows the target's processes: the container
being debugged must therefore be running when the debugger starts.
"""

from __future__ import annotations

import dataclasses

from kubling.api.meta import Object
from kubling.node.runtime import ContainerConfig

#: Upstream's waiting reason for a debugger whose target is not running (the kubelet's
#: ``CreateContainerError``), retried on the next sync.
NO_TARGET = "CreateContainerError"


class TargetNotRunningError(Exception):
    """The target container has no running process whose PID namespace could be joined."""


def specs(pod: Object) -> list[Object]:
    """The pod's ephemeral containers, in the order they were added."""
    return list((pod.get("spec") or {}).get("ephemeralContainers") or [])


def target_of(container: Object) -> str:
    """The container whose PID namespace the debugger shares ('' for none)."""
    return str(container.get("targetContainerName") or "")


def join_pid_namespace(config: ContainerConfig, *, target: str, target_pid: int) -> None:
    """Put the debugger in the target container's PID namespace (``/proc/<pid>/ns/pid``);
    raises TargetNotRunningError when there is no such process."""
    if target_pid <= 0:
        raise TargetNotRunningError(f'container "{target}" is not running: cannot share its '
                                    "process namespace")
    config.namespaces = dataclasses.replace(config.namespaces,
                                            pid=f"/proc/{target_pid}/ns/pid")
