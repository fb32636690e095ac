"""kopf's own end-to-end examples against kubling (issue 3: client compatibility).

kopf ships example operators in its sdist and runs them in its CI against k3s
(``tests/e2e/test_examples.py`` there): start the operator in-process with
``kopf.testing.KopfRunner``, ``kubectl apply`` the example object, ``kubectl delete`` it, stop
the operator, then assert on the runner's exit and on its log — no tracebacks, the expected
lines, every handler that succeeded or failed did so exactly once. Examples that bring their
own ``test_*.py`` (09, 10, 11) are run by that test's scenario instead. This module replays
both kinds against one kubling server with simulated nodes, so that the pods some examples
create are scheduled and run as on a real cluster, and also checks what the operators wrote
(status, child pods, events). 12-embedded, which upstream leaves untested, runs as its own
program; 17-admission (a webhook served through a k3d/minikube/ngrok tunnel) is left out.
The examples are vendored, unchanged, in ``kopf_examples/`` (see its README for their origin,
licence and what is left out); those importing ``pykube`` need ``pykube-ng`` (test extras).

What upstream's harness waits for with fixed sleeps, this one waits for by the log line that
marks the step as done, so a run costs seconds rather than the upstream sleeps.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import importlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import kopf
import pytest
from kopf._core.intents import registries  # (upstream's e2e harness does the same)
from kopf.testing import KopfRunner
from kubernetes.config import kube_config

from tests.server_fixture import KublingServer, running_server, wait_for

EXAMPLES = Path(__file__).parent / "kopf_examples"
OBJ = "kopf-example-1"
PREFIX = f"[default/{OBJ}]"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KublingServer]:
    """One server for all examples, with the examples' CRD established, and the kubeconfig
    in ``KUBECONFIG`` for kopf's login and for the examples' own ``pykube`` clients."""
    base = tmp_path_factory.mktemp("kopf-examples")
    with running_server(base / "data", extra_args=["--simulated-nodes", "2"]) as server, \
            pytest.MonkeyPatch.context() as patcher:
        patcher.setenv("KUBECONFIG", str(server.kubeconfig))
        # The official client reads KUBECONFIG once, at import; kopf's fallback login uses it.
        patcher.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(server.kubeconfig))
        server.kubectl("apply", "-f", str(EXAMPLES / "crd.yaml"))
        server.kubectl("wait", "--for=condition=Established",
                       "crd/kopfexamples.kopf.dev", "--timeout=30s")
        yield server


@pytest.fixture(autouse=True)
def isolated_kopf() -> Iterator[None]:
    """Each example registers its handlers into kopf's global default registry; a fresh one
    per run keeps one example's handlers out of the next (as upstream's conftest does).
    ``kopf run`` also reconfigures the root and ``asyncio`` loggers, with a handler on the
    runner's captured stream that is closed once it exits: restore them, so that later tests
    of the session do not log into a closed file."""
    old = kopf.get_default_registry()
    kopf.set_default_registry(registries.SmartOperatorRegistry())
    root, aio = logging.getLogger(), logging.getLogger("asyncio")
    root_handlers, root_level = root.handlers[:], root.level
    aio_handlers, aio_propagate = aio.handlers[:], aio.propagate
    try:
        yield
    finally:
        kopf.set_default_registry(old)
        # Only kopf's own stream handlers go: pytest swaps its capture handlers per phase.
        root.handlers[:] = [h for h in root.handlers if h in root_handlers
                            or type(h).__name__ != "_KopfStreamHandler"]
        root.setLevel(root_level)
        aio.handlers[:], aio.propagate = aio_handlers, aio_propagate


# -- what an example declares (read from its source, as upstream's E2EParser does) -----------

def declared_handlers(example: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(kind, literal kwargs)`` of each top-level ``@kopf.on.X(...)`` / ``@kopf.X(...)``."""
    found: list[tuple[str, dict[str, Any]]] = []
    for node in ast.parse(example.read_text()).body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for deco in node.decorator_list:
            if not (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)):
                continue
            owner = deco.func.value
            on_kopf = isinstance(owner, ast.Name) and owner.id == "kopf"
            on_kopf_on = (isinstance(owner, ast.Attribute) and owner.attr == "on"
                          and isinstance(owner.value, ast.Name) and owner.value.id == "kopf")
            if on_kopf or on_kopf_on:
                kwargs = {kw.arg or "": ast.literal_eval(kw.value) for kw in deco.keywords
                          if kw.arg == "optional"}
                found.append((deco.func.attr, kwargs))
    return found


# -- the scenarios ------------------------------------------------------------------------------

class Run:
    """One example's run: kubectl against the cluster, and waiting on the operator's log."""

    def __init__(self, server: KublingServer, caplog: pytest.LogCaptureFixture) -> None:
        self.server = server
        self.caplog = caplog
        #: Names made during the run (a generated pod name), for the expected log lines.
        self.names: dict[str, str] = {}

    def kubectl(self, *args: str) -> str:
        return self.server.kubectl(*args, timeout=30).stdout

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", "-n", "default", *args, "-o", "json"))

    def wait_log(self, patterns: tuple[str, ...] | None, *, delay: float = 30.0) -> None:
        """Wait until every pattern has been logged; ``None`` is upstream's fixed 3-second
        pause, for reactions that log nothing in particular."""
        if patterns is None:
            time.sleep(3.0)
            return
        wait_for(lambda: all(any(re.search(p, m) for m in self.caplog.messages)
                             for p in patterns), delay, f"log lines {patterns!r}")


#: One step of a scenario: an action (or a check of what the operator made), then the log
#: lines that show the operator has reacted (``None``: upstream's pause; ``()``: no wait).
Step = tuple[Callable[[Run], None], tuple[str, ...] | None]


def _obj(*verb: str) -> Callable[[Run], None]:
    def step(run: Run) -> None:
        run.kubectl(*verb, "-f", str(EXAMPLES / "obj.yaml"))
    return step


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scenario:
    """What upstream's E2EConfig (or the example's own test) says about one example, plus
    checks of the objects the operator wrote; ``generic`` adds the checks upstream derives
    from the handlers the example declares."""

    steps: tuple[Step, ...] = ()
    #: kopf starts its resource watches only after login and the startup handlers.
    startup: tuple[str, ...] = ("Starting the watch-stream for (?!customresourcedefinitions)",)
    generic: bool = True
    allow_tracebacks: bool = False
    success_counts: Mapping[str, int] | None = None
    failure_counts: Mapping[str, int] | None = None
    expected: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()


def lifecycle(created: tuple[str, ...] | None = ("Creation is processed",),
              deleted: tuple[str, ...] | None = ("Deleted, really deleted",), *,
              made: Callable[[Run], None] | None = None,
              gone: Callable[[Run], None] | None = None) -> tuple[Step, ...]:
    """Upstream's generic scenario: apply obj.yaml, react, delete it, react; ``made`` and
    ``gone`` check the cluster after each reaction."""
    steps: list[Step] = [(_obj("apply"), created)]
    steps += [(made, ())] if made else []
    steps += [(_obj("delete"), deleted)]
    steps += [(gone, ())] if gone else []
    return tuple(steps)


def _status(run: Run) -> Any:
    return run.get("kopfexample", OBJ).get("status") or {}


def _status_is(field: str, expected: Any) -> Callable[[Run], None]:
    """The handler's result (or the daemon's patch) reached the status subresource."""
    def check(run: Run) -> None:
        wait_for(lambda: _status(run).get(field) == expected, 15,
                 f"status.{field} == {expected!r}; status is {_status(run)!r}")
    return check


def _owned_pods(run: Run) -> list[Any]:
    return [pod for pod in run.get("pods")["items"]
            if any(ref["kind"] == "KopfExample" and ref["name"] == OBJ and ref.get("controller")
                   for ref in pod["metadata"].get("ownerReferences") or [])]


def _child_runs(run: Run) -> None:
    """02-children: the adopted pod is the one in status, scheduled and running."""
    children = wait_for(lambda: _status(run).get("create_fn", {}).get("children"), 15,
                        "status.create_fn.children")
    pod = wait_for(lambda: next((p for p in _owned_pods(run)
                                 if p["status"].get("phase") == "Running"), None), 30,
                   "the child pod running on a simulated node")
    assert children == [pod["metadata"]["uid"]]
    assert pod["spec"]["nodeName"]


def _children_collected(run: Run) -> None:
    wait_for(lambda: not _owned_pods(run), 60, "the garbage collector to remove the child pod")


def _events(*expected: tuple[str, str]) -> Callable[[Run], None]:
    """kopf.event/info/warn/exception were posted as core/v1 Events on the object."""
    def check(run: Run) -> None:
        def posted() -> set[tuple[str, str]]:
            items = run.get("events", "--field-selector", f"involvedObject.name={OBJ}")["items"]
            return {(e["type"], e["reason"]) for e in items
                    if e["involvedObject"]["kind"] == "KopfExample"}
        wait_for(lambda: set(expected) <= posted(), 15, f"events {expected!r}")
    return check


def _labelled_pod_and_events(run: Run) -> None:
    """99-all-at-once: the labelled child pod is owned by the example; create_1's events."""
    wait_for(lambda: any(p["metadata"].get("labels", {}).get("application") == "kopf-example-10"
                         for p in _owned_pods(run)), 15, "the labelled child pod")
    _events(("Normal", "AnyReason"), ("Warning", "SomeReason"))(run)


def _create_pod(run: Run) -> None:
    """10-builtins' own test creates a ``kopf-pod-`` pod (with pykube there, kubectl here)."""
    out = run.server.kubectl("create", "-n", "default", "-o", "name", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "kopf-pod-", "namespace": "default"},
        "spec": {"containers": [{"name": "the-only-one", "image": "busybox",
                                 "command": ["sh", "-x", "-c", "sleep 1"]}]},
    })).stdout
    run.names["pod"] = out.strip().removeprefix("pod/")


def _delete_pod(run: Run) -> None:
    run.kubectl("delete", "pod", "-n", "default", run.names["pod"])


SCENARIOS: dict[str, Scenario] = {
    "01-minimal": Scenario(steps=lifecycle(made=_status_is("create_fn",
                                                           {"message": "hello world"}))),
    "02-children": Scenario(steps=lifecycle(made=_child_runs, gone=_children_collected),
                            needs=("pykube",)),
    "03-exceptions": Scenario(
        steps=lifecycle(), allow_tracebacks=True,
        success_counts={"eventual_success_with_a_few_messages": 1},
        failure_counts={"eventual_failure_with_tracebacks": 1,
                        "instant_failure_with_traceback": 1,
                        "instant_failure_with_only_a_message": 1}),
    "04-events": Scenario(steps=lifecycle(made=_events(
        ("SomeType", "SomeReason"), ("Normal", "SomeReason"), ("Warning", "SomeReason"),
        ("Error", "SomeReason")))),
    "05-handlers": Scenario(steps=lifecycle()),
    "06-peering": Scenario(steps=lifecycle()),
    "07-subhandlers": Scenario(steps=lifecycle()),
    "08-events": Scenario(steps=lifecycle(created=("'normal_event_fn' succeeded",), deleted=None),
                          allow_tracebacks=True, success_counts={"normal_event_fn": 2}),
    "09-testing": Scenario(
        steps=((_obj("create"), ("Something was logged here",)), (_obj("delete"), ())),
        generic=False,
        expected=(f"{PREFIX} Creation is in progress:", f"{PREFIX} Something was logged here.")),
    "10-builtins": Scenario(
        steps=((_create_pod, ("Pod killing happens in 30s",)),
               (_delete_pod, ("Pod killing is cancelled",))),
        generic=False, needs=("pykube",),
        expected=("[default/{pod}] Creation is in progress:",
                  "[default/{pod}] === Pod killing happens in 30s.",
                  "[default/{pod}] Deletion is in progress:",
                  "[default/{pod}] === Pod killing is cancelled!")),
    "11-filtering-handlers": Scenario(
        steps=((_obj("create"), ("Creation is processed", "Field daemon is satisfied")),
               (lambda run: run.kubectl("patch", "-f", str(EXAMPLES / "obj.yaml"),
                                        "--type=merge", "-p", '{"spec":{"field":"changed"}}'),
                ("Field change is satisfied",)),
               (_obj("delete"), ("Deleted, really deleted",))),
        generic=False,
        expected=tuple(f"{PREFIX} {line}" for line in (
            "Label is matching.", "Label is present.", "Label is absent.",
            "Label callback matching.", "Annotation is matching.", "Annotation is present.",
            "Annotation is absent.", "Filter satisfied.", "Field value is satisfied.",
            "Field presence is satisfied.", "Field change is satisfied.",
            "Field daemon is satisfied.")),
        unexpected=tuple(f"{PREFIX} {line}" for line in (
            "Annotation callback mismatch.", "Filter not satisfied.",
            "Field value is not satisfied.", "Field presence is not satisfied."))),
    "13-hooks": Scenario(
        steps=lifecycle(created=None, deleted=None),
        success_counts={"startup_fn_simple": 1, "startup_fn_retried": 1, "cleanup_fn": 1},
        needs=("pykube",)),
    "14-daemons": Scenario(steps=lifecycle(
        created=("=> Ping from a sync daemon", "=> Ping from an async daemon"),
        made=_status_is("message", "Failed 3 times."),
        # The sync daemon sees its stop flag and exits; the async one is cancelled.
        deleted=("'background_async' is cancelled", "'background_sync' has exited"))),
    "15-timers": Scenario(steps=lifecycle(created=None, deleted=None)),
    "16-indexing": Scenario(steps=lifecycle(created=None, deleted=None), success_counts={}),
    "99-all-at-once": Scenario(
        steps=lifecycle(made=_labelled_pod_and_events),
        allow_tracebacks=True,
        success_counts={"create_1": 1, "create_2": 1, "create_pod": 1, "delete": 1,
                        "startup_fn_simple": 1, "startup_fn_retried": 1, "cleanup_fn": 1},
        needs=("pykube",)),
}


def _remove_leftover_object(server: KublingServer) -> None:
    """A previous run that failed may leave the object behind with kopf's finalizer; strip it
    and delete, as the examples' own tests do before they start."""
    obj = str(EXAMPLES / "obj.yaml")
    server.kubectl("patch", "-f", obj, "--type=merge", "-p", '{"metadata":{"finalizers":[]}}',
                   check=False)
    server.kubectl("delete", "-f", obj, "--ignore-not-found", "--wait=true", check=False)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_kopf_example(name: str, cluster: KublingServer,
                      caplog: pytest.LogCaptureFixture) -> None:
    scenario = SCENARIOS[name]
    for module in scenario.needs:  # pykube-ng is in the test extras: missing is a failure
        importlib.import_module(module)
    _remove_leftover_object(cluster)
    example = EXAMPLES / name / "example.py"

    settings = kopf.OperatorSettings()
    settings.execution.default_backoff = 1  # upstream: no lengthy sleeps on simulated retries
    settings.watching.server_timeout = 10  # upstream: no lingering watch threads at exit
    run = Run(cluster, caplog)
    with KopfRunner(["run", "--all-namespaces", "--standalone", "--verbose", str(example)],
                    timeout=60, settings=settings) as runner:
        run.wait_log(scenario.startup)
        for action, reacted in scenario.steps:
            action(run)
            run.wait_log(reacted)

    output = runner.output
    assert runner.exception is None, output[-4000:]
    assert runner.exit_code == 0, output[-4000:]
    for line in (line.format(**run.names) for line in scenario.expected):
        assert line in output, f"{line!r} not logged:\n{output[-4000:]}"
    for line in scenario.unexpected:
        assert line not in output, f"{line!r} logged"

    if scenario.generic:
        handlers = declared_handlers(example)
        kinds = {kind for kind, _ in handlers}
        mandatory_delete = any(kind == "delete" and not kwargs.get("optional")
                               for kind, kwargs in handlers)
        if mandatory_delete:
            assert f"{PREFIX} Adding the finalizer" in output
            assert f"{PREFIX} Deletion is in progress:" in output
        if "create" in kinds:
            assert f"{PREFIX} Creation is in progress:" in output
        if kinds & {"create", "update", "delete"}:
            assert f"{PREFIX} Deleted, really deleted" in output
        if not scenario.allow_tracebacks:
            assert "Traceback (most recent call last):" not in output, output[-4000:]

        succeeded = collections.Counter(re.findall(r"'(.+?)' succeeded", output))
        if scenario.success_counts is not None:
            assert {n: c for n, c in succeeded.items() if n in scenario.success_counts} \
                == scenario.success_counts
        else:
            assert set(succeeded.values()) == {1}, succeeded
        failed = collections.Counter(re.findall(
            r"'(.+?)' failed (?:permanently|with an exception and will stop)", output))
        if scenario.failure_counts is not None:
            assert {n: c for n, c in failed.items() if n in scenario.failure_counts} \
                == scenario.failure_counts
        else:
            assert not failed, failed


def test_kopf_embedded_example(cluster: KublingServer) -> None:
    """12-embedded runs kopf in a thread of its own app (upstream leaves it untested,
    ``test_nothing.py``, as app-specific): its ``main()`` creates and deletes three objects
    with pykube while the embedded operator greets each, then stops the operator."""
    importlib.import_module("pykube")  # pykube-ng, in the test extras
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    result = subprocess.run([sys.executable, str(EXAMPLES / "12-embedded" / "example.py")],
                            capture_output=True, text=True, timeout=60, env=env, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    for step in range(3):
        assert f"Hello, kopf-example-{step}!" in output, output[-4000:]
        assert f"Good bye, kopf-example-{step}!" in output, output[-4000:]
    assert "Exiting the main app." in output
    assert "Traceback (most recent call last):" not in output, output[-4000:]
