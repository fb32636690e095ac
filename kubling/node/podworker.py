"""One worker per pod: the kubelet's pod worker, as an asyncio task.

The agent hands every new version of the pod to ``PodWorker.update`` (or ``None`` when the
pod left the API); the worker keeps only the latest and, each time it wakes, brings the node
towards it: the volumes (set up, then refreshed on every sync; a watched configMap or secret
that changes wakes the worker), the sandbox, then the init containers one by one to
success — sidecars (``restartPolicy: Always``) only to started, and kept running — then
every main container, restarting exited ones per ``restartPolicy`` with the
CrashLoopBackOff delay, and writes the pod's status when it changed. A pod whose main
containers finished for good has its sidecars stopped, last first; one past its
``activeDeadlineSeconds`` fails (``DeadlineExceeded``) and is stopped. Ephemeral
containers (``kubectl debug``) are started once each, whenever they appear, and never
restarted (``kubling.node.ephemeral``). A deletion
(``deletionTimestamp``) or a pod gone from the API makes it stop the containers (SIGTERM,
SIGKILL after the grace period), remove them, the volumes and the sandbox, confirm the
deletion with a zero-grace DELETE bound to the pod's uid, and end.

A new pod's first status (containers waiting ``ContainerCreating``, or ``PodInitializing``
behind init containers) is written beside the sandbox and container setup, never delaying
it, so that ``kubectl get pods -w`` shows ``ContainerCreating`` as upstream's does; status
writes are serialised so that an older one never lands after a newer one, and the echo of
the worker's own write does not wake it. With ``shareProcessNamespace`` the sandbox gets
the pod's init (``kubling.node.pause``), removed after the containers.

A container's exit wakes the worker at once: a waiter task per running container sits in
``Runtime.wait`` (it reads conmon's exit file; no runc call). Errors are the pod's, never
the agent's: they end up in the pod's status and events, and the sync is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import glob
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from kubling.api.meta import Object
from kubling.client import events, rest
from kubling.node import (
    containers,
    envvars,
    ephemeral,
    hooks,
    pause,
    podstatus,
    probes,
    securitycontext,
    termination,
)
from kubling.node.backoff import Backoff
from kubling.node.imagepull import ContainerImage, ImageManager, ImagePullFailure
from kubling.node.images import rootfs
from kubling.node.images.store import ImageStore
from kubling.node.podstatus import ContainerView
from kubling.node.runtime import ContainerRuntimeError, ContainerState, Runtime, SpecError
from kubling.node.sandbox import Sandbox, SandboxError, SandboxManager
from kubling.node.volumes import VolumeManager

log = logging.getLogger("kubling.node.podworker")

RESYNC_SECONDS = 10.0
RETRY_SECONDS = 2.0
STOPPED = "stopped"
#: upstream's exit code for a container that could not start (StartError).
START_ERROR_EXIT = 128
#: The least grace a container gets after waiting for its turn (the kubelet's
#: minimumGracePeriodInSeconds), so that a sidecar is never SIGKILLed unwarned.
MINIMUM_GRACE = 2.0
#: First statuses sent at once by one agent (see ``WorkerContext.announce_slots``).
ANNOUNCE_CONCURRENCY = 2
#: The status message and event of a pod past its activeDeadlineSeconds (upstream's words).
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
#: Failures worth one log line, not a traceback: the API is away or said no.
_EXPECTED: tuple[type[BaseException], ...] = (*rest.TRANSPORT_ERRORS, rest.ApiError)


@dataclasses.dataclass
class WorkerContext:
    """What every pod worker of one agent shares."""

    pods: rest.Resource
    runtime: Runtime
    sandboxes: SandboxManager
    images: ImageManager
    store: ImageStore
    recorder: events.EventRecorder
    node_name: str
    node_ip: str
    data_dir: Path
    crash_backoff: Backoff
    volumes: VolumeManager
    #: The cluster DNS address for ClusterFirst pods, None when the cluster has none.
    cluster_dns: Callable[[], Awaitable[str | None]] | None = None
    #: How many first statuses (``PodWorker._announce``) may be in flight at once: a burst
    #: of new pods would otherwise open as many new TLS connections to the API server.
    announce_slots: asyncio.Semaphore = dataclasses.field(
        default_factory=lambda: asyncio.Semaphore(ANNOUNCE_CONCURRENCY))


class PodWorker:
    def __init__(self, ctx: WorkerContext, uid: str, pod: Object,
                 adopted: list[containers.ContainerId]) -> None:
        self.ctx = ctx
        self.uid = uid
        self.pod: Object | None = pod
        self._last_pod: Object = pod
        #: Refused by the node's admission (a forbidden sysctl): no sandbox, no containers.
        self._rejected = False
        #: Each terminated attempt's message, by runtime container id (read once).
        self._termination_messages: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._wake.set()
        self._sandbox: Sandbox | None = None
        self._volumes = ctx.volumes.for_pod(uid, self._pod_dir(), wake=self._wake.set)
        self._views: dict[str, ContainerView] = {}
        self._adopted = {c.name: c for c in sorted(adopted, key=lambda c: c.attempt)}
        self._waiters: dict[str, asyncio.Task[None]] = {}
        #: container name -> (container id, its prober, the prober's task)
        self._probers: dict[str, tuple[str, probes.Prober, asyncio.Task[None]]] = {}
        #: kills asked for by probes, running beside the worker's loop
        self._kills: set[asyncio.Task[None]] = set()
        self._sent: Object | None = None
        #: Serialises status writes (the first one runs beside the sync: ``_announce``).
        self._status_lock = asyncio.Lock()
        self._announcing: asyncio.Task[None] | None = None
        phase = (pod.get("status") or {}).get("phase")
        #: A pod that finished stays finished: its containers are never started again.
        self._terminal: str | None = phase if phase in ("Succeeded", "Failed") else None
        #: Why the node failed the pod (``Evicted`` and its message), if it did.
        self._failure: tuple[str, str] = ("", "")
        #: The pod's startTime (now, for a pod the agent has not written yet): where
        #: ``activeDeadlineSeconds`` counts from.
        self._start_time = _parse((pod.get("status") or {}).get("startTime")) or time.time()
        self._resync = RESYNC_SECONDS

    # -- the loop ---------------------------------------------------------------------

    def update(self, pod: Object | None) -> None:
        """The latest desired state (``None``: the pod is gone from the API).

        The echo of the worker's own status write (nothing but the status changed, and
        to what was sent) is kept without waking the worker: it asks for nothing, and each
        wake is a whole sync. A status someone else changed still wakes it, so that the
        node's view is written back."""
        quiet = (pod is not None and self.pod is not None and pod.get("status") == self._sent
                 and _only_status_changed(self.pod, pod))
        self.pod = pod
        if pod is not None:
            self._last_pod = pod
        if not quiet:
            self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._resync)
                self._wake.clear()
                self._resync = RESYNC_SECONDS
                pod = self.pod
                try:
                    if pod is None or pod["metadata"].get("deletionTimestamp"):
                        await self._terminate(pod)
                        return
                    await self._sync(pod)
                except (asyncio.CancelledError, GeneratorExit):
                    raise
                except Exception as err:  # one pod's trouble never stops the agent
                    log.warning("pod %s: sync failed: %s", self._key(), err,
                                exc_info=not isinstance(err, _EXPECTED))
                    self._resync = RETRY_SECONDS
        finally:
            for task in self._waiters.values():
                task.cancel()
            self._stop_probers()
            for kill in self._kills:
                kill.cancel()
            if self._announcing is not None:
                self._announcing.cancel()

    @property
    def terminating(self) -> bool:
        """Whether the worker is (or is about to be) removing its pod from the node."""
        return self.pod is None or bool(self.pod["metadata"].get("deletionTimestamp"))

    @property
    def last_pod(self) -> Object:
        """The newest version of the pod this worker saw (also once it left the API)."""
        return self._last_pod

    def container_statuses(self) -> list[Object]:
        """Every container's status as the worker knows it now (fresher than the API's)."""
        return [view.to_status() for view in self._views.values()]

    def _key(self) -> str:
        md = self._last_pod["metadata"]
        return f"{md.get('namespace', '')}/{md.get('name', '')}"

    def _later(self, seconds: float) -> None:
        self._resync = max(0.05, min(self._resync, seconds))

    # -- sync -------------------------------------------------------------------------

    async def _sync(self, pod: Object) -> None:
        spec = pod.get("spec") or {}
        self._ensure_views(spec)
        if self._announcing is None and self._is_new(pod):
            self._announce(pod)
        if self._terminal is None and self._sandbox is None and not self._adopted and (
                forbidden := securitycontext.forbidden_sysctl(pod)):
            # The kubelet's admission: rejected before anything is made for the pod.
            self.ctx.recorder.record(pod, events.WARNING, "SysctlForbidden", forbidden)
            self._terminal = "Failed"
            self._failure = ("SysctlForbidden", f"Pod was rejected: {forbidden}")
            self._rejected = True
        if self._rejected:
            await self._write_status(pod)
            return
        if self._terminal is None and self._past_deadline(spec):
            await self._fail(pod, "DeadlineExceeded", DEADLINE_MESSAGE, event_type=events.NORMAL,
                             grace=_grace(spec))
        if self._terminal is None and not await self._set_up_volumes(pod):
            await self._refresh()
            await self._write_status(pod)
            return
        finished = self._terminal is not None or self._completed(spec)
        if self._sandbox is None or (pause.wanted(spec) and not finished
                                     and not pause.alive(self._sandbox)):
            try:
                await self._ensure_sandbox(pod)
            except (SandboxError, pause.PauseError) as err:
                self.ctx.recorder.record(pod, events.WARNING, "FailedCreatePodSandBox",
                                         f"Failed to create pod sandbox: {err}")
                self._later(RETRY_SECONDS * 5)
                await self._write_status(pod)
                return
        await self._refresh()
        if self._terminal is None and not self._completed(spec):
            if await self._sync_init(pod, spec):
                await self._sync_main(pod, spec)
            await self._sync_ephemeral(pod)
            message = await self._volumes.exceeded_limit()
            if message:
                await self._fail(pod, "Evicted", message, event_type=events.WARNING, grace=0)
        if self._terminal is not None or self._completed(spec):
            await self._stop_sidecars(pod, spec)
            if self._sandbox is not None and self._sandbox.pid_ns is not None:
                # A finished pod's init has nothing left to hold together (the kubelet
                # stops a finished pod's sandbox).
                await pause.remove(self.ctx.runtime, self.uid)
                self._sandbox = dataclasses.replace(self._sandbox, pid_ns=None)
        await self._write_status(pod)

    async def _ensure_sandbox(self, pod: Object) -> None:
        """The sandbox, then — for ``shareProcessNamespace`` — the pod's init, whose PID
        namespace the containers join (found again after an agent restart; started again
        when it died, which killed every process of the pod: they restart per policy)."""
        if self._sandbox is None:
            dns = await self.ctx.cluster_dns() if self.ctx.cluster_dns else None
            self._sandbox = await self.ctx.sandboxes.ensure(pod, cluster_dns=dns)
        spec = pod.get("spec") or {}
        if pause.wanted(spec) and self._terminal is None and not self._completed(spec):
            pid_ns = await pause.ensure(self.ctx.runtime, self._sandbox, self.ctx.data_dir)
            self._sandbox = dataclasses.replace(self._sandbox, pid_ns=pid_ns)

    async def _fail(self, pod: Object, reason: str, message: str, *, event_type: str,
                    grace: float) -> None:
        """The node fails the pod for good (the eviction manager's ``Evicted``, the active
        deadline's ``DeadlineExceeded``): an event, the reason in the status, its
        containers stopped (at once for an eviction) and never restarted."""
        self.ctx.recorder.record(pod, event_type, reason, message)
        self._terminal = "Failed"
        self._failure = (reason, message)
        ids = await self._container_ids()
        await self._stop_in_order(pod, ids, grace, pre_stop=grace > 0)
        await self._refresh()

    def _is_new(self, pod: Object) -> bool:
        """The worker's first sync of a pod no agent has written a status for yet."""
        return (self._sent is None and not self._adopted and self._terminal is None
                and not (pod.get("status") or {}).get("containerStatuses"))

    def _past_deadline(self, spec: Object) -> bool:
        """``activeDeadlineSeconds``, counted from the pod's startTime as the kubelet's
        activeDeadlineHandler does; until then the worker wakes when it falls due."""
        deadline = spec.get("activeDeadlineSeconds")
        if not isinstance(deadline, int) or isinstance(deadline, bool) or deadline <= 0:
            return False
        left = self._start_time + deadline - time.time()
        if left > 0:
            self._later(left)
        return left <= 0

    def _completed(self, spec: Object) -> bool:
        """Every main container finished for good (restartPolicy Never, or OnFailure and
        they all succeeded): the pod is done, and its sidecars are to be stopped."""
        policy = spec.get("restartPolicy") or "Always"
        if policy == "Always":
            return False
        mains = [self._views.get(c["name"]) for c in spec.get("containers") or []]
        return bool(mains) and all(
            view is not None and view.is_terminated and (policy == "Never" or view.succeeded)
            for view in mains)

    async def _set_up_volumes(self, pod: Object) -> bool:
        """Set up or refresh the pod's volumes (before the sandbox, as the kubelet waits
        for them first); True once every one is ready. A failure is a FailedMount event and
        is retried on the next sync — sooner when a watched configMap or secret changes."""
        for message in await self._volumes.set_up(pod):
            self.ctx.recorder.record(pod, events.WARNING, "FailedMount", message)
        return self._volumes.ready

    def _ensure_views(self, spec: Object) -> None:
        # Upstream's default waiting reason: PodInitializing in a pod with init containers
        # (what makes ``Init:0/1`` and then ``PodInitializing`` show), else ContainerCreating.
        default = "PodInitializing" if spec.get("initContainers") else "ContainerCreating"
        for init, key in ((True, "initContainers"), (False, "containers")):
            for container in spec.get(key) or []:
                name = container["name"]
                if name not in self._views:
                    view = ContainerView(name=name, image=container.get("image", ""), init=init,
                                         sidecar=init and _is_sidecar(container),
                                         waiting_reason=default)
                    adopted = self._adopted.get(name)
                    if adopted is not None:
                        view.container_id = str(adopted)
                        view.restart_count = adopted.attempt
                    self._views[name] = view
        for container in ephemeral.specs({"spec": spec}):
            name = container["name"]
            if name not in self._views:
                view = ContainerView(name=name, image=container.get("image", ""),
                                     ephemeral=True)
                adopted = self._adopted.get(name)
                if adopted is not None:
                    view.container_id = str(adopted)
                self._views[name] = view

    async def _refresh(self) -> None:
        """Bring each view up to date with its runtime container."""
        for view in self._views.values():
            # Running containers, and adopted ones whose state is not known yet; a
            # terminated or backing-off container does not change under us.
            unknown = view.waiting_reason in ("ContainerCreating", "PodInitializing")
            if not view.container_id or not (view.running or unknown):
                continue
            try:
                state = await self.ctx.runtime.state(view.container_id)
            except ContainerRuntimeError:
                if view.running:
                    view.running_since = None
                    view.terminated = podstatus.terminated(
                        137, reason="Error", message="container disappeared from the runtime")
                continue
            self._apply_state(view, state)
        for view in self._views.values():
            self._sync_prober(view)

    def _apply_state(self, view: ContainerView, state: ContainerState) -> None:
        if state.status == "running":
            view.running_since = state.started_at or datetime.datetime.now(datetime.UTC)
            view.waiting_reason, view.waiting_message, view.terminated = "", "", None
            self._watch(view.container_id)
            if not view.image_ref:
                view.image_ref = self._image_ref_of(view.name)
        elif state.status == STOPPED and state.exit_code is not None:
            reason = "OOMKilled" if state.oom_killed else ""
            view.running_since = None
            view.waiting_reason, view.waiting_message = "", ""
            view.terminated = podstatus.terminated(
                state.exit_code, reason=reason, container_id=view.container_id,
                message=self._termination_message(view, state.exit_code),
                started=state.started_at, finished=state.finished_at)
            if not view.image_ref:
                view.image_ref = self._image_ref_of(view.name)

    def _termination_message(self, view: ContainerView, exit_code: int) -> str:
        """The attempt's termination message (``termination``), read once per attempt."""
        known = self._termination_messages.get(view.container_id)
        if known is not None:
            return known
        parsed = containers.ContainerId.parse(view.container_id)
        spec = next((dict(c) for key in ("containers", "initContainers", "ephemeralContainers")
                     for c in (self._last_pod.get("spec") or {}).get(key) or []
                     if c.get("name") == view.name), None)
        if parsed is None or spec is None:
            return ""
        paths = containers.ContainerPaths(self._pod_dir(), view.name)
        text = termination.message(spec, paths.directory, parsed.attempt, exit_code=exit_code,
                                   log_path=paths.log_path(parsed.attempt))
        self._termination_messages[view.container_id] = text
        return text

    def _image_ref_of(self, name: str) -> str:
        """After an agent restart: the imageID from the marker the container left."""
        marker = containers.ContainerPaths(self._pod_dir(), name).image_id_marker
        try:
            image = self.ctx.store.get(marker.read_text().strip())
        except OSError:
            return ""
        if image is None:
            return ""
        return image.repo_digests[0] if image.repo_digests else image.id

    def _watch(self, container_id: str) -> None:
        if container_id in self._waiters:
            return

        async def wait() -> None:
            with contextlib.suppress(ContainerRuntimeError, TimeoutError):
                await self.ctx.runtime.wait(container_id)
            self._waiters.pop(container_id, None)
            self._wake.set()

        self._waiters[container_id] = asyncio.create_task(wait(), name=f"wait-{container_id}")

    async def _sync_init(self, pod: Object, spec: Object) -> bool:
        """Run the init containers in order; True once every regular one succeeded and
        every sidecar started (upstream's computeInitContainerActions).

        A sidecar lets the next init container start as soon as it is started (its
        postStart returned and its startup probe passed) and is restarted whenever it
        exits, whatever the pod's restartPolicy. Once a main container has run, the pod is
        initialized for good: regular init containers never run again and a restarting
        sidecar no longer holds the main containers back."""
        policy = spec.get("restartPolicy") or "Always"
        initialized = any(self._views[c["name"]].ever_ran for c in spec.get("containers") or []
                          if c["name"] in self._views)
        for container in spec.get("initContainers") or []:
            view = self._views[container["name"]]
            if view.sidecar:
                if not view.running:
                    await self._start_or_back_off(pod, container, view, policy="Always")
                if view.started or initialized:
                    continue
                return False
            if initialized or (view.succeeded and view.is_terminated):
                continue
            if view.running:
                return False
            if view.terminated is not None and policy == "Never":
                self._terminal = "Failed"
                return False
            await self._start_or_back_off(pod, container, view, policy="OnFailure")
            return False
        return True

    async def _sync_main(self, pod: Object, spec: Object) -> None:
        """Start or restart the main containers. In a pod with init containers the status
        is written first when none has started yet, so that ``PodInitializing`` (init done,
        main containers not yet running) is seen, as upstream's status shows it."""
        mains = spec.get("containers") or []
        if spec.get("initContainers") and not any(
                self._views[c["name"]].ever_ran or self._views[c["name"]].container_id
                for c in mains):
            await self._write_status(pod)
        for container in mains:
            await self._sync_container(pod, container, spec)

    async def _sync_ephemeral(self, pod: Object) -> None:
        """Start each ephemeral container once (after a failed pull or a target that is
        not running yet, again on a later sync); one that ran is never started again."""
        for container in ephemeral.specs(pod):
            view = self._views[container["name"]]
            if not (view.running or view.is_terminated or view.container_id):
                await self._start(pod, container, view)

    async def _stop_sidecars(self, pod: Object, spec: Object) -> None:
        """The pod finished (or failed): its running sidecars and ephemeral containers are
        stopped (the kubelet kills every container of a finished pod), sidecars last."""
        running = [view.container_id for view in self._views.values()
                   if view.ephemeral and view.running and view.container_id]
        running += [view.container_id for view in self._views.values()
                    if view.sidecar and view.running and view.container_id]
        if running:
            await self._stop_in_order(pod, running, _grace(spec))
            await self._refresh()

    async def _sync_container(self, pod: Object, container: Object, spec: Object) -> None:
        view = self._views[container["name"]]
        if view.running:
            return
        policy = spec.get("restartPolicy") or "Always"
        if view.terminated is not None and not view.waiting_reason:
            code = view.terminated.get("exitCode")
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                return
        await self._start_or_back_off(pod, container, view, policy=policy)

    async def _start_or_back_off(self, pod: Object, container: Object, view: ContainerView,
                                 *, policy: str) -> None:
        """Start the container's first attempt, or its next one once the crash back-off
        allows it (waiting CrashLoopBackOff until then)."""
        key = f"{self.uid}/{view.name}"
        previous = view.terminated or (view.last_terminated if view.waiting_reason ==
                                       "CrashLoopBackOff" else None)
        if view.terminated is not None:
            # The termination is seen (Error, OOMKilled...) before the restart, as upstream
            # reports what it found before acting on it.
            await self._write_status(pod)
            finished = _parse(view.terminated.get("finishedAt"))
            wait = self.ctx.crash_backoff.remaining(key, since=finished)
            if wait > 0:
                view.last_terminated = view.terminated
                view.terminated = None
                delay = int(self.ctx.crash_backoff.delay(key))
                md = pod["metadata"]
                view.set_waiting("CrashLoopBackOff", f"back-off {_duration(delay)} restarting "
                                 f"failed container={view.name} pod={md['name']}_"
                                 f"{md.get('namespace', '')}({self.uid})")
                self.ctx.recorder.record(pod, events.WARNING, "BackOff",
                                         "Back-off restarting failed container "
                                         f"{view.name} in pod {md['name']}_"
                                         f"{md.get('namespace', '')}({self.uid})")
                self._later(wait)
                return
        elif view.waiting_reason == "CrashLoopBackOff":
            wait = self.ctx.crash_backoff.remaining(key, since=_parse(
                (view.last_terminated or {}).get("finishedAt")))
            if wait > 0:
                self._later(wait)
                return
        if previous is not None:
            self.ctx.crash_backoff.next(key)
            await self._remove_container(view)
            view.last_terminated = previous
            view.terminated = None
            view.restart_count += 1
            await asyncio.to_thread(self._drop_old_log, view.name, view.restart_count - 2)
        await self._start(pod, container, view)

    def _drop_old_log(self, name: str, attempt: int) -> None:
        """Keep the log of the attempt before the current one (``kubectl logs --previous``)
        and no older one, as the kubelet keeps one dead container per container."""
        if attempt < 0:
            return
        paths = containers.ContainerPaths(self._pod_dir(), name)
        log_path = paths.log_path(attempt)
        # The log with its rotated (and gzipped) pieces, and the attempt's termination file.
        doomed = [log_path, termination.message_path(paths.directory, attempt),
                  *log_path.parent.glob(glob.escape(log_path.name) + ".*")]
        for path in doomed:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._termination_messages.pop(
            str(containers.ContainerId(self.uid, name, attempt)), None)

    async def _remove_container(self, view: ContainerView) -> None:
        if not view.container_id:
            return
        parsed = containers.ContainerId.parse(view.container_id)
        await self.ctx.runtime.delete(view.container_id)
        if parsed is not None:
            attempt_dir = containers.ContainerPaths(self._pod_dir(), view.name).attempt_dir(
                parsed.attempt)
            await asyncio.to_thread(rootfs.unmount_rootfs, attempt_dir)
        view.container_id = ""

    def _pod_dir(self) -> Path:
        return self.ctx.data_dir / "pods" / self.uid

    async def _start(self, pod: Object, container: Object, view: ContainerView) -> None:
        """Image, root filesystem, runtime container, start: each failure becomes the
        container's waiting or terminated state and an Event."""
        assert self._sandbox is not None
        try:
            image = await self.ctx.images.ensure(pod, container)
        except ImagePullFailure as err:
            view.set_waiting(err.reason, str(err))
            remaining = self.ctx.images.backoff.remaining(
                f"{self.uid}/{view.name}/{container.get('image')}")
            self._later(remaining or RETRY_SECONDS * 5)
            return
        view.image_ref = image.image_ref
        cid = containers.ContainerId(self.uid, view.name, view.restart_count)
        paths = containers.ContainerPaths(self._sandbox.directory, view.name)
        try:
            env = await self._environment(pod, container)
        except envvars.EnvError as err:
            view.set_waiting("CreateContainerConfigError", str(err))
            self.ctx.recorder.record(pod, events.WARNING, "Failed", f"Error: {err}")
            self._later(RETRY_SECONDS * 5)
            return
        try:
            root = await asyncio.to_thread(self._prepare_rootfs, image, paths, cid.attempt)
            await asyncio.to_thread(termination.prepare, container, paths.directory,
                                    cid.attempt)
            config = containers.container_config(
                pod=pod, container=container, image=image.config, sandbox=self._sandbox,
                container_id=cid, rootfs=root, env=env, volumes=self._volumes.mounted())
            if view.ephemeral and (target := ephemeral.target_of(container)):
                ephemeral.join_pid_namespace(config, target=target,
                                             target_pid=await self._pid_of(target))
        except (containers.ContainerSpecError, rootfs.RootfsError, OSError,
                ephemeral.TargetNotRunningError) as err:
            await asyncio.to_thread(rootfs.unmount_rootfs, paths.attempt_dir(cid.attempt))
            reason = (ephemeral.NO_TARGET if isinstance(err, ephemeral.TargetNotRunningError)
                      else "CreateContainerConfigError")
            view.set_waiting(reason, str(err))
            self.ctx.recorder.record(pod, events.WARNING, "Failed", f"Error: {err}")
            self._later(RETRY_SECONDS * 5)
            return
        try:
            await self.ctx.runtime.create(
                config, log_path=paths.log_path(cid.attempt),
                stdin=bool(container.get("stdin")), stdin_once=bool(container.get("stdinOnce")))
            view.container_id = str(cid)
            self.ctx.recorder.record(pod, events.NORMAL, "Created",
                                     f"Created container {view.name}")
            await self.ctx.runtime.start(str(cid))
        except (ContainerRuntimeError, SpecError) as err:
            message = _start_error_message(err)
            await self.ctx.runtime.delete(str(cid))
            await asyncio.to_thread(rootfs.unmount_rootfs, paths.attempt_dir(cid.attempt))
            view.container_id = ""
            view.running_since = None
            view.waiting_reason, view.waiting_message = "", ""
            view.terminated = podstatus.terminated(START_ERROR_EXIT, reason="StartError",
                                                   message=message)
            self.ctx.recorder.record(pod, events.WARNING, "Failed", f"Error: {message}")
            self._later(0.1)
            return
        self.ctx.recorder.record(pod, events.NORMAL, "Started", f"Started container {view.name}")
        await self._post_start(pod, container, view)
        state = await self.ctx.runtime.state(str(cid))
        self._apply_state(view, state)
        self._sync_prober(view)
        if not view.running:  # it has already exited: the next step must not wait
            self._later(0)

    async def _pid_of(self, name: str) -> int:
        """The running process of the pod's container ``name`` (0 when it has none)."""
        view = self._views.get(name)
        if view is None or not view.running or not view.container_id:
            return 0
        try:
            state = await self.ctx.runtime.state(view.container_id)
        except ContainerRuntimeError:
            return 0
        return state.pid if state.status == "running" else 0

    async def _environment(self, pod: Object, container: Object) -> dict[str, str]:
        """The container's variables (envvars.resolve), with ``TERM=xterm`` under a TTY
        unless the container sets it, as containerd and CRI-O give it; raises EnvError."""
        def warn(message: str) -> None:
            self.ctx.recorder.record(pod, events.WARNING, "InvalidEnvironmentVariableNames",
                                     message)

        facts = envvars.PodFacts(
            pod_ips=self._sandbox.pod_ips if self._sandbox else (), host_ip=self.ctx.node_ip,
            node_name=self.ctx.node_name, allocatable=self.ctx.volumes.host.allocatable)
        env = await envvars.resolve(pod, container, cache=self.ctx.volumes.objects,
                                    facts=facts, warn=warn)
        return {"TERM": "xterm", **env} if container.get("tty") else env

    # -- probes and hooks -------------------------------------------------------------

    def _container_spec(self, name: str) -> Object | None:
        spec = self._last_pod.get("spec") or {}
        for key in ("containers", "initContainers"):
            for container in spec.get(key) or []:
                if container.get("name") == name:
                    return dict(container)
        return None

    def _target(self, container: Object, view: ContainerView) -> probes.Target:
        cid = view.container_id

        async def run(argv: list[str], timeout: float) -> tuple[int, bytes]:
            return await self.ctx.runtime.exec(cid, argv, timeout=timeout)

        pod_ip = self._sandbox.pod_ip if self._sandbox else ""
        return probes.target_for(container, pod_ip or self.ctx.node_ip, run)

    def _sync_prober(self, view: ContainerView) -> None:
        """One prober per running attempt (main containers and sidecars); its verdict
        becomes the view's ``started`` / ``ready``."""
        current = self._probers.get(view.name)
        if current is not None and (not view.running or current[0] != view.container_id):
            current[2].cancel()
            del self._probers[view.name]
            current = None
        if not view.running:
            view.probe_started = view.probe_ready = True
            return
        if current is None:
            container = self._container_spec(view.name)
            if container is None or (view.init and container.get("restartPolicy") != "Always"):
                return
            prober = probes.Prober(container, self._target(container, view),
                                   self._probe_callbacks(view.name, view.container_id))
            if not prober.needed:
                return
            task = asyncio.create_task(prober.run(), name=f"probe-{view.container_id}")
            current = (view.container_id, prober, task)
            self._probers[view.name] = current
        view.probe_started, view.probe_ready = current[1].started, current[1].ready

    def _probe_callbacks(self, name: str, container_id: str) -> probes.Callbacks:
        def failed(kind: str, message: str) -> None:
            self.ctx.recorder.record(self._last_pod, events.WARNING, "Unhealthy", message)

        async def kill(kind: str) -> None:
            view = self._views.get(name)
            message = (f"Init container {name} failed {kind.lower()} probe"
                       if view is not None and view.sidecar else
                       f"Container {name} failed {kind.lower()} probe, will be restarted")
            container = self._container_spec(name) or {}
            probe = container.get(f"{kind.lower()}Probe") or {}
            grace = probe.get("terminationGracePeriodSeconds")
            if grace is None:
                grace = (self._last_pod.get("spec") or {}).get(
                    "terminationGracePeriodSeconds", 30)
            task = asyncio.create_task(self._stop(self._last_pod, container_id, float(grace),
                                                  message=message))
            self._kills.add(task)
            task.add_done_callback(self._kills.discard)

        return probes.Callbacks(changed=self._wake.set, failed=failed, kill=kill)

    def _stop_probers(self) -> None:
        for _, _, task in self._probers.values():
            task.cancel()
        self._probers.clear()

    async def _post_start(self, pod: Object, container: Object, view: ContainerView) -> None:
        """Upstream runs postStart right after the start and reports the container running
        only once it returned; a failed hook kills the container (restarted per policy)."""
        hook = (container.get("lifecycle") or {}).get("postStart")
        if not hook:
            return
        try:
            await hooks.run_hook(hook, self._target(container, view),
                                 timeout=hooks.POST_START_LIMIT)
        except hooks.HookError as err:
            self.ctx.recorder.record(pod, events.WARNING, "FailedPostStartHook", str(err))
            grace = float((pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            await self._stop(pod, view.container_id, grace, message=(
                "FailedPostStartHook"), pre_stop=False)

    async def _pre_stop(self, pod: Object, name: str, container_id: str,
                        grace: float) -> float:
        """Run the container's preStop within the grace period; the grace that is left
        (at least 2 s, as upstream gives the stop signal after a hook)."""
        container = self._container_spec(name) or {}
        hook = (container.get("lifecycle") or {}).get("preStop")
        if not hook or grace <= 0:
            return grace
        view = self._views.get(name)
        if view is None:
            view = ContainerView(name=name, image="", container_id=container_id)
        start = asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(hooks.run_hook(hook, self._target(container, view),
                                                  timeout=grace), grace)
        except hooks.HookError as err:
            self.ctx.recorder.record(pod, events.WARNING, "FailedPreStopHook", str(err))
        except TimeoutError:
            self.ctx.recorder.record(pod, events.WARNING, "FailedPreStopHook",
                                     f"PreStopHook failed: timed out after {grace:g}s")
        spent = asyncio.get_running_loop().time() - start
        return max(grace - spent, 2.0)

    def _prepare_rootfs(self, image: ContainerImage, paths: containers.ContainerPaths,
                        attempt: int) -> Path:
        """The image-id marker (which keeps the image from being pruned), then the overlay;
        runs in a thread (layers may need unpacking)."""
        paths.directory.mkdir(parents=True, exist_ok=True)
        paths.image_id_marker.write_text(image.image.id + "\n")
        self.ctx.store.mark_used(image.image.id)
        layers = self.ctx.store.layer_dirs(image.image)
        return rootfs.mount_rootfs(layers, paths.attempt_dir(attempt))

    # -- status -----------------------------------------------------------------------

    def _announce(self, pod: Object) -> None:
        """A new pod's first status (containers waiting ``ContainerCreating``, or
        ``PodInitializing`` with init containers; PodReadyToStartContainers False), as the
        kubelet writes it before its sandbox is up: sent beside the sandbox and container
        setup, never delaying it, and dropped if a later status went out first."""
        status = self._status(pod)

        async def send() -> None:
            async with self.ctx.announce_slots:
                if self._sent is not None:  # a later status went out while this queued
                    return
                async with self._status_lock:
                    if self._sent is not None:
                        return
                    try:
                        await self._send(pod, status)
                    except _EXPECTED as err:  # the next status write says it all anyway
                        log.info("pod %s: first status not written: %s", self._key(), err)

        self._announcing = asyncio.create_task(send(), name=f"announce-{self.uid}")

    async def _write_status(self, pod: Object) -> None:
        status = self._status(pod)
        async with self._status_lock:
            await self._send(pod, status)

    async def _send(self, pod: Object, status: Object) -> None:
        """Patch ``status`` unless it is what was sent last; callers hold the status lock,
        so writes land in the order their statuses were computed."""
        if status == self._sent:
            return
        md = pod["metadata"]
        await self.ctx.pods.patch(md["name"], {"status": status},
                                  namespace=md.get("namespace", ""), subresource="status")
        self._sent = status

    def _status(self, pod: Object) -> Object:
        spec = pod.get("spec") or {}
        init = [self._views[c["name"]] for c in spec.get("initContainers") or []
                if c["name"] in self._views]
        main = [self._views[c["name"]] for c in spec.get("containers") or []
                if c["name"] in self._views]
        debuggers = [self._views[c["name"]] for c in ephemeral.specs(pod)
                     if c["name"] in self._views]
        status = podstatus.pod_status(
            pod, sandbox_ready=self._sandbox is not None,
            pod_ips=self._sandbox.pod_ips if self._sandbox else (), host_ip=self.ctx.node_ip,
            init=init, main=main, ephemeral=debuggers, terminal_phase=self._terminal,
            reason=self._failure[0], message=self._failure[1])
        if status["phase"] in ("Succeeded", "Failed"):
            self._terminal = status["phase"]
        return status

    # -- termination ------------------------------------------------------------------

    async def _terminate(self, pod: Object | None) -> None:
        """Stop and remove everything of the pod, then confirm its deletion."""
        md = (pod or self._last_pod)["metadata"]
        grace = float(md.get("deletionGracePeriodSeconds") or 0) if pod else 0.0
        if pod is not None and grace == 0 and md.get("deletionGracePeriodSeconds") is None:
            grace = float((pod.get("spec") or {}).get("terminationGracePeriodSeconds") or 30)
        for task in self._waiters.values():
            task.cancel()
        self._waiters.clear()
        self._stop_probers()
        ids = await self._container_ids()
        await self._stop_in_order(pod, ids, grace)
        for cid in ids:
            await self.ctx.runtime.delete(cid)
        await pause.remove(self.ctx.runtime, self.uid)
        await self._volumes.tear_down()
        await self.ctx.sandboxes.remove(self.uid)
        self.ctx.crash_backoff.forget_prefix(f"{self.uid}/")
        self.ctx.images.backoff.forget_prefix(f"{self.uid}/")
        if pod is not None:
            with contextlib.suppress(rest.ApiError):
                await self.ctx.pods.delete(md["name"], namespace=md.get("namespace", ""),
                                           grace_period_seconds=0,
                                           preconditions={"uid": self.uid})

    async def _container_ids(self) -> list[str]:
        """Every runtime container of this pod, including ones this worker never saw, but
        not the pod's init (``kubling.node.pause``), which goes last."""
        states = await self.ctx.runtime.list()
        return [s.id for s in states
                if s.id.startswith(self.uid + "_") and not pause.is_pause(s.id)]

    async def _stop_in_order(self, pod: Object | None, ids: list[str], grace: float, *,
                             pre_stop: bool = True) -> None:
        """Upstream's termination ordering: the other containers stop together; sidecars
        run their preStop at once too, but get the stop signal only after the main
        containers and the sidecars declared after them have exited (last one first)."""
        spec = (pod or self._last_pod).get("spec") or {}
        order = [c["name"] for c in spec.get("initContainers") or [] if _is_sidecar(c)]

        def rank(container_id: str) -> int:
            parsed = containers.ContainerId.parse(container_id)
            return order.index(parsed.name) if parsed and parsed.name in order else -1

        tasks = [asyncio.create_task(self._stop(pod, cid, grace, pre_stop=pre_stop))
                 for cid in ids if rank(cid) < 0]
        for cid in sorted((cid for cid in ids if rank(cid) >= 0), key=rank, reverse=True):
            tasks.append(asyncio.create_task(self._stop(pod, cid, grace, pre_stop=pre_stop,
                                                        after=tuple(tasks))))
        if tasks:
            await asyncio.gather(*tasks)

    async def _stop(self, pod: Object | None, container_id: str, grace: float, *,
                    message: str = "", pre_stop: bool = True,
                    after: tuple[asyncio.Task[None], ...] = ()) -> None:
        """preStop (when the container runs), then — once the ``after`` stops are done, a
        sidecar's turn — the stop signal, SIGKILL after the grace period. ``message``: the
        Killing event's text (default: a deletion's)."""
        parsed = containers.ContainerId.parse(container_id)
        if pod is not None and parsed is not None:
            view = self._views.get(parsed.name)
            if view is not None and view.running:
                self.ctx.recorder.record(pod, events.NORMAL, "Killing",
                                         message or f"Stopping container {parsed.name}")
            if pre_stop:
                with contextlib.suppress(ContainerRuntimeError):
                    state = await self.ctx.runtime.state(container_id)
                    if state.status == "running":
                        grace = await self._pre_stop(pod, parsed.name, container_id, grace)
        if after and grace > 0:
            loop = asyncio.get_running_loop()
            start = loop.time()
            await asyncio.wait(after, timeout=grace)
            grace = max(grace - (loop.time() - start), MINIMUM_GRACE)
        try:
            await self.ctx.runtime.stop(container_id, grace, sig=signal.SIGTERM)
        except (ContainerRuntimeError, TimeoutError) as err:
            log.info("pod %s: stopping %s: %s", self._key(), container_id, err)


def _only_status_changed(old: Object, new: Object) -> bool:
    """The two versions differ in status (and the bookkeeping every write changes) only."""
    if old.get("spec") != new.get("spec"):
        return False
    ignored = ("resourceVersion", "managedFields")
    old_md, new_md = old.get("metadata") or {}, new.get("metadata") or {}
    return ({k: v for k, v in old_md.items() if k not in ignored}
            == {k: v for k, v in new_md.items() if k not in ignored})


def _is_sidecar(container: Object) -> bool:
    """An init container with ``restartPolicy: Always`` (native sidecars, 1.29+)."""
    return container.get("restartPolicy") == "Always"


def _grace(spec: Object) -> float:
    value = spec.get("terminationGracePeriodSeconds")
    return float(value) if isinstance(value, int) and value >= 0 else 30.0


def _parse(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _duration(seconds: int) -> str:
    """Go's time.Duration text for whole seconds: 10s, 1m20s, 5m0s."""
    minutes, rest_ = divmod(seconds, 60)
    return f"{minutes}m{rest_}s" if minutes else f"{rest_}s"


def _start_error_message(err: Exception) -> str:
    """runc's own words, as upstream shows them: the part after the runtime's prefixes."""
    text = str(err)
    marker = "runc create failed: "
    if marker in text:
        text = text.split(marker, 1)[1]
    return text
