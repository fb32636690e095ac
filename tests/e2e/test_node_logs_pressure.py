"""Container log rotation and node pressure on a real node agent.

Rotation: with ``--container-log-max-size 64Ki --container-log-max-files 3`` a container
that writes a numbered line every few milliseconds gets its log rotated by the agent (the
kubelet's naming and compression, conmon asked to reopen), and a ``kubectl logs -f``
started before the first rotation keeps following across every one without a gap.

Pressure: ``--eviction-hard nodefs.available<100%`` is met on any disk with data on it, so
the node reports DiskPressure with the kubelet's reason, the node lifecycle controller
taints it, and a new pod that does not tolerate the taint stays Pending with the
scheduler's FailedScheduling wording. Each part runs its own agent-enabled server (the
agent's lock makes them take turns with every other agent test).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_fixture import AgentServer, agent_server, wait_for
from tests.server_fixture import KublingServer

MAX_FILES = 3
ROTATED = re.compile(r"^0\.log\.\d{8}-\d{6}(\.gz)?$")
#: A line of about 100 bytes, numbered, every ~2 ms: a 64Ki log fills in well under the
#: agent's 10 s monitoring period, so several rotations happen within a minute.
WRITER = ('i=0; pad=$(printf "%080d" 0); '
          'while true; do echo "seq $i $pad"; i=$((i+1)); usleep 2000; done')


def apply_pod(srv: KublingServer, name: str, script: str, **spec: Any) -> None:
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                    "name": "main", "image": "busybox:latest",
                    "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", script]}],
                    **spec}}
    srv.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def pod(srv: KublingServer, name: str) -> dict[str, Any]:
    result = srv.kubectl("get", "pod", name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def log_dir(srv: AgentServer, name: str) -> Path:
    uid = pod(srv, name)["metadata"]["uid"]
    return srv.data_dir / "pods" / uid / "logs" / "main"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # compressed or removed by a rotation meanwhile
        return 0


@pytest.fixture(scope="module")
def rotating(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    with agent_server(tmp_path_factory.mktemp("logrotate"), extra_args=(
            "--container-log-max-size", "64Ki",
            "--container-log-max-files", str(MAX_FILES))) as srv:
        yield srv


def test_a_fast_writer_log_is_rotated_and_followed_without_a_gap(
        rotating: AgentServer) -> None:
    srv = rotating
    apply_pod(srv, "chatty", WRITER)
    wait_for(lambda: pod(srv, "chatty").get("status", {}).get("phase") == "Running", 60,
             "pod chatty to run")
    directory = log_dir(srv, "chatty")
    wait_for(lambda: "seq 1 " in srv.kubectl("logs", "chatty", check=False).stdout, 20,
             "the first lines")
    # To a file: a pipe nobody reads fills up and stalls kubectl, and the stream with it.
    followed = srv.data_dir.parent / "followed.txt"
    with followed.open("wb") as sink:
        follower = subprocess.Popen(
            ["kubectl", "--kubeconfig", str(srv.kubeconfig), "--cache-dir",
             str(srv.cache_dir), "logs", "-f", "chatty"], stdout=sink, stderr=subprocess.STDOUT)

    def seen() -> list[int]:
        return [int(line.split()[1]) for line in followed.read_text().splitlines()
                if line.startswith("seq ") and len(line.split()) == 3]

    try:
        assert not [p for p in directory.iterdir() if ROTATED.match(p.name)], \
            "rotated before kubectl logs -f started; the test proves nothing"
        peak = 0

        def rotated_files() -> list[str]:
            nonlocal peak
            names = sorted(p.name for p in directory.iterdir())
            peak = max(peak, sum(_size(directory / n) for n in names))
            return [n for n in names if ROTATED.match(n)]

        # Two rounds at least: a compressed file exists only after the second rotation.
        wait_for(lambda: any(n.endswith(".gz") for n in rotated_files()), 60,
                 "a compressed rotated log")
        first_compressed = time.monotonic()
        while time.monotonic() - first_compressed < 12:  # one more round
            names = rotated_files()
            assert len(names) + 1 <= MAX_FILES, names
            time.sleep(0.5)
        names = rotated_files()
        plain = [n for n in names if not n.endswith(".gz")]
        assert len(plain) == 1, names  # the newest rotated one stays uncompressed
        assert (directory / "0.log").exists()
        assert len(names) + 1 <= MAX_FILES
        # Bounded: never far above MaxFiles x (64Ki + what 10 s of writing adds).
        assert peak < MAX_FILES * 1024 * 1024, peak
        current = srv.kubectl("logs", "chatty").stdout.splitlines()
        last_now = int(current[-1].split()[1])
        # It keeps following into the newest file.
        wait_for(lambda: max(seen(), default=-1) >= last_now, 10,
                 f"kubectl logs -f to show seq {last_now}")
    finally:
        follower.terminate()
        follower.wait(timeout=10)
    numbers = seen()
    assert numbers[0] == 0, numbers[:5]
    assert numbers == list(range(len(numbers))), \
        "a gap or a repeat in what kubectl logs -f showed"
    # Without -f, kubectl logs reads the current file only, as upstream's does.
    assert int(current[0].split()[1]) > 0


def test_disk_pressure_taints_the_node_and_keeps_new_pods_pending(tmp_path: Path) -> None:
    with agent_server(tmp_path, extra_args=("--eviction-hard", "nodefs.available<100%")) as srv:
        def disk_pressure() -> dict[str, Any]:
            node = json.loads(srv.kubectl("get", "nodes", "-o", "json").stdout)["items"][0]
            return next(c for c in node["status"]["conditions"]
                        if c["type"] == "DiskPressure")

        wait_for(lambda: disk_pressure()["status"] == "True", 30, "DiskPressure=True")
        condition = disk_pressure()
        assert (condition["reason"], condition["message"]) == (
            "KubeletHasDiskPressure", "kubelet has disk pressure")

        def taints() -> list[dict[str, Any]]:
            node = json.loads(srv.kubectl("get", "nodes", "-o", "json").stdout)["items"][0]
            return list(node["spec"].get("taints") or [])

        wait_for(lambda: any(t["key"] == "node.kubernetes.io/disk-pressure" for t in taints()),
                 30, "the disk-pressure taint")
        assert {"key": "node.kubernetes.io/disk-pressure", "effect": "NoSchedule"} in [
            {k: t[k] for k in ("key", "effect")} for t in taints()]
        described = srv.kubectl("describe", "node").stdout
        assert "node.kubernetes.io/disk-pressure:NoSchedule" in described
        memory = next(c for c in json.loads(srv.kubectl("get", "nodes", "-o", "json").stdout)
                      ["items"][0]["status"]["conditions"] if c["type"] == "MemoryPressure")
        assert (memory["status"], memory["reason"]) == ("False", "KubeletHasSufficientMemory")

        node_name = json.loads(srv.kubectl("get", "nodes", "-o", "json").stdout)[
            "items"][0]["metadata"]["name"]
        wait_for(lambda: "NodeHasDiskPressure" in srv.kubectl(
            "get", "events", "--field-selector", "involvedObject.kind=Node").stdout, 20,
            "the NodeHasDiskPressure event")
        events = json.loads(srv.kubectl("get", "events", "-o", "json", "--field-selector",
                                        "reason=NodeHasDiskPressure").stdout)["items"]
        assert [(e["type"], e["message"], e["source"]["component"]) for e in events] == [
            ("Normal", f"Node {node_name} status is now: NodeHasDiskPressure", "kubelet")]

        apply_pod(srv, "waiting", "sleep 3600")

        def failed_scheduling() -> str:
            return srv.kubectl("get", "events", "--field-selector",
                               "involvedObject.name=waiting,reason=FailedScheduling",
                               check=False).stdout

        wait_for(lambda: "untolerated taint" in failed_scheduling(), 30, "FailedScheduling")
        assert ("node(s) had untolerated taint {node.kubernetes.io/disk-pressure: }"
                in " ".join(failed_scheduling().split()))
        assert pod(srv, "waiting")["status"]["phase"] == "Pending"
