"""``kubectl exec``, ``exec -it`` and ``cp`` end to end: the real kubectl, through the API
server's ``pods/exec`` (an upgrade-aware byte pipe) to the node agent, which runs the
command with ``runc exec`` in the container.

Every case runs over both transports kubectl has: the WebSocket protocol it uses first
(``v5.channel.k8s.io``) and the SPDY/3.1 upgrade it falls back to
(``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false``). One agent-enabled server serves the module
(``tests.agent_fixture``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_fixture import AgentServer, agent_server, wait_for

TRANSPORTS = {"websocket": {}, "spdy": {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    with agent_server(tmp_path_factory.mktemp("exec")) as srv:
        yield srv


@pytest.fixture(params=sorted(TRANSPORTS))
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def kubectl(srv: AgentServer, *args: str, transport: str = "websocket",
            input: str | bytes | None = None, timeout: float = 60,
            text: bool = True) -> subprocess.CompletedProcess[Any]:
    env = {**os.environ, **TRANSPORTS[transport]}
    cmd = ["kubectl", "--kubeconfig", str(srv.kubeconfig), "--cache-dir", str(srv.cache_dir),
           *args]
    return subprocess.run(cmd, input=input, capture_output=True, text=text, timeout=timeout,
                          check=False, env=env)


def get_pod(srv: AgentServer, name: str) -> dict[str, Any]:
    result = srv.kubectl("get", "pod", name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def run_pod(srv: AgentServer, name: str, script: str = "sleep 3600", *,
            phase: str = "Running", **spec: Any) -> str:
    containers = [{"name": "main", "image": "busybox:latest",
                   "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", script]}]
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                         "containers": containers, **spec}}
    srv.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    wait_for(lambda: get_pod(srv, name).get("status", {}).get("phase") == phase, 60,
             f"pod {name} to be {phase}")
    return name


@pytest.fixture(scope="module")
def box(server: AgentServer) -> str:
    return run_pod(server, "box")


# -- exec --------------------------------------------------------------------------------


def test_stdout_and_stderr_stay_apart(server: AgentServer, box: str, transport: str) -> None:
    result = kubectl(server, "exec", box, "--", "sh", "-c", "echo out; echo err >&2",
                     transport=transport)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"


@pytest.mark.parametrize("code", [0, 1, 3])
def test_exit_code_is_kubectls(server: AgentServer, box: str, transport: str,
                               code: int) -> None:
    result = kubectl(server, "exec", box, "--", "sh", "-c", f"exit {code}",
                     transport=transport)
    assert result.returncode == code, result.stderr
    if code:
        assert f"command terminated with exit code {code}" in result.stderr


def test_missing_command_is_127(server: AgentServer, box: str, transport: str) -> None:
    result = kubectl(server, "exec", box, "--", "no-such-command", transport=transport)
    assert result.returncode == 127, result.stderr
    assert 'exec: "no-such-command": executable file not found in $PATH' in result.stderr


def test_command_that_cannot_run_is_126(server: AgentServer, box: str,
                                         transport: str) -> None:
    result = kubectl(server, "exec", box, "--", "/etc/passwd", transport=transport)
    assert result.returncode == 126, result.stderr
    assert "permission denied" in result.stderr


def test_runs_as_the_container(server: AgentServer, box: str) -> None:
    result = kubectl(server, "exec", box, "--", "sh", "-c",
                     "echo $PATH; cat /proc/self/cgroup; hostname")
    assert result.returncode == 0, result.stderr
    path, *rest = result.stdout.splitlines()
    assert "/bin" in path
    assert any("kubling" in line for line in rest[:-1]), rest
    assert rest[-1] == box


def test_stdin_is_streamed_and_closed(server: AgentServer, box: str, transport: str) -> None:
    payload = "".join(f"line {i}\n" for i in range(20000))
    result = kubectl(server, "exec", "-i", box, "--", "sh", "-c", "wc -c; echo done",
                     transport=transport, input=payload)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(len(payload)), "done"]


def test_missing_container_is_refused(server: AgentServer, box: str, transport: str) -> None:
    result = kubectl(server, "exec", box, "-c", "nope", "--", "true", transport=transport)
    assert result.returncode == 1
    assert "container nope is not valid for pod box" in result.stderr


def test_pod_without_a_node_is_refused(server: AgentServer, transport: str) -> None:
    run_pod(server, "nowhere", phase="Pending", nodeSelector={"kubling/none": "x"})
    result = kubectl(server, "exec", "nowhere", "--", "true", transport=transport)
    assert result.returncode == 1
    assert "pod nowhere does not have a host assigned" in result.stderr


def test_container_not_yet_running_is_not_found(server: AgentServer, transport: str) -> None:
    run_pod(server, "waiting", phase="Pending", containers=[{
        "name": "main", "image": "kubling.invalid/none:1", "imagePullPolicy": "Never"}])
    wait_for(lambda: get_pod(server, "waiting").get("status", {}).get("containerStatuses"),
             30, "the container's waiting status")
    result = kubectl(server, "exec", "waiting", "--", "true", transport=transport)
    assert result.returncode == 1
    assert 'unable to upgrade connection: container not found ("main")' in result.stderr


def test_a_client_that_goes_away_ends_the_process(server: AgentServer, box: str,
                                                  transport: str) -> None:
    marker = f"sleep 7{len(transport)}1"
    env = {**os.environ, **TRANSPORTS[transport]}
    process = subprocess.Popen(
        ["kubectl", "--kubeconfig", str(server.kubeconfig), "--cache-dir",
         str(server.cache_dir), "exec", box, "--", "sh", "-c", f"echo started; {marker}"],
        stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "started\n"
        assert marker in kubectl(server, "exec", box, "--", "ps", "-o", "args").stdout
    finally:
        process.kill()
        process.wait(10)
    wait_for(lambda: marker not in kubectl(server, "exec", box, "--", "ps", "-o",
                                           "args").stdout, 10, "the exec'd process to end")


def test_stopped_container_is_not_found(server: AgentServer, transport: str) -> None:
    run_pod(server, "finished", "exit 0", phase="Succeeded")
    result = kubectl(server, "exec", "finished", "--", "true", transport=transport)
    assert result.returncode == 1
    assert "cannot exec into a container in a completed pod" in result.stderr


def test_unknown_pod_is_not_found(server: AgentServer) -> None:
    result = kubectl(server, "exec", "ghost", "--", "true")
    assert result.returncode == 1
    assert 'pods "ghost" not found' in result.stderr


# -- exec -it in a terminal --------------------------------------------------------------


def test_interactive_terminal_in_tmux(server: AgentServer, box: str, transport: str,
                                      tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is needed for the terminal test — run ./install.sh --test")
    session = f"kubling-exec-{os.getpid()}-{transport}"
    env = " ".join(f"{k}={v}" for k, v in TRANSPORTS[transport].items())
    command = (f"{env} kubectl --kubeconfig {server.kubeconfig} --cache-dir "
               f"{server.cache_dir} exec -it {box} -- sh; echo EXITED:$? > {tmp_path}/rc")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30",
                    command], check=True)

    def screen() -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                              capture_output=True, text=True, check=False).stdout

    def keys(*typed: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", session, *typed], check=True)

    try:
        wait_for(lambda: "#" in screen(), 20, "the shell's prompt")
        keys("echo hello-from-$((6*7))", "Enter")
        wait_for(lambda: "hello-from-42" in screen(), 10, "the command's output")
        keys("stty size", "Enter")
        wait_for(lambda: "30 100" in screen(), 10, "the first terminal size")
        subprocess.run(["tmux", "resize-window", "-t", session, "-x", "120", "-y", "40"],
                       check=True)
        time.sleep(0.5)
        keys("stty size", "Enter")
        wait_for(lambda: "40 120" in screen(), 10, f"the new size: {screen()}")
        keys("exit 5", "Enter")
        wait_for(lambda: (tmp_path / "rc").exists(), 10, "kubectl to end")
        assert (tmp_path / "rc").read_text().strip() == "EXITED:5"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False,
                       capture_output=True)


# -- cp ----------------------------------------------------------------------------------


def test_cp_a_directory_in_and_out(server: AgentServer, box: str, transport: str,
                                   tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "deep" / "er").mkdir(parents=True)
    (source / "small.txt").write_text("hello\n")
    (source / "deep" / "random.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (source / "deep" / "er" / "empty").write_bytes(b"")
    remote = f"/tmp/cp-{transport}"
    result = kubectl(server, "cp", str(source), f"{box}:{remote}", transport=transport)
    assert result.returncode == 0, result.stderr
    listing = kubectl(server, "exec", box, "--", "sh", "-c",
                      f"cd {remote} && find . -type f | sort && md5sum deep/random.bin")
    assert "./deep/er/empty" in listing.stdout
    back = tmp_path / "back"
    result = kubectl(server, "cp", f"{box}:{remote}", str(back), transport=transport)
    assert result.returncode == 0, result.stderr
    for path in source.rglob("*"):
        copy = back / path.relative_to(source)
        if path.is_file():
            assert copy.read_bytes() == path.read_bytes(), path
        else:
            assert copy.is_dir(), copy


# -- attach ------------------------------------------------------------------------------


def test_attach_streams_the_containers_output_until_it_exits(server: AgentServer,
                                                             transport: str) -> None:
    name = f"talker-{transport}"
    run_pod(server, name, "sleep 4; for i in 1 2 3; do echo out $i; echo err $i >&2; done; "
                          "sleep 1")
    result = kubectl(server, "attach", name, transport=transport, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["out 1", "out 2", "out 3"]
    assert "err 3" in result.stderr


def test_attach_leaves_the_container_running(server: AgentServer, transport: str) -> None:
    name = f"ticker-{transport}"
    run_pod(server, name, "while true; do echo tick; sleep 0.2; done")
    env = {**os.environ, **TRANSPORTS[transport]}
    process = subprocess.Popen(
        ["kubectl", "--kubeconfig", str(server.kubeconfig), "--cache-dir",
         str(server.cache_dir), "attach", name], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "tick\n"
    finally:
        process.terminate()
        process.wait(10)
    time.sleep(0.5)
    assert get_pod(server, name)["status"]["phase"] == "Running"
    assert kubectl(server, "exec", name, "--", "true").returncode == 0


# -- other kubectl versions --------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.27", "1.30", "1.33"])
def test_other_kubectl_versions(server: AgentServer, box: str, version: str) -> None:
    """1.27 knows only SPDY; 1.30 on try the WebSocket first."""
    kubectl_path = shutil.which("kubectl")
    assert kubectl_path is not None
    binary = Path(kubectl_path).resolve().parent / f"kubectl.{version}"
    assert binary.is_file(), f"{binary} is missing (the Google Cloud SDK ships it)"
    result = server.kubectl("exec", "-i", box, "--", "sh", "-c", "cat; exit 3",
                            input="hi\n", check=False, binary=str(binary))
    assert (result.returncode, result.stdout) == (3, "hi\n"), result.stderr


# -- the WebSocket protocols by hand -----------------------------------------------------


def open_exec(server: AgentServer, pod: str, protocol: str, command: list[str],
              **flags: str) -> Any:
    import websocket

    query = urllib.parse.urlencode([("command", part) for part in command]
                                   + [(name, value) for name, value in flags.items()])
    url = (server.url.replace("https://", "wss://")
           + f"/api/v1/namespaces/default/pods/{pod}/exec?{query}")
    return websocket.create_connection(url, subprotocols=[protocol], timeout=20,
                                       sslopt={"context": server.ssl_context()})


def test_base64_channel_protocol(server: AgentServer, box: str) -> None:
    ws = open_exec(server, box, "v4.base64.channel.k8s.io", ["sh", "-c", "read x; echo $x; exit 2"],
                   stdin="true", stdout="true")
    try:
        assert ws.subprotocol == "v4.base64.channel.k8s.io"
        ws.send("0" + base64.b64encode(b"hello\n").decode())
        frames = []
        while True:
            frame = ws.recv()
            if not frame:
                break
            frames.append(frame)
            if frame.startswith("3"):
                break
    finally:
        ws.close()
    stdout = b"".join(base64.b64decode(f[1:]) for f in frames if f.startswith("1"))
    status = json.loads(base64.b64decode(frames[-1][1:]))
    assert stdout == b"hello\n"
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "2"}]


def test_malformed_websocket_messages_are_dropped(server: AgentServer, box: str) -> None:
    import websocket

    ws = open_exec(server, box, "v5.channel.k8s.io", ["sh", "-c", "cat; echo done"],
                   stdin="true", stdout="true")
    try:
        ws.send_binary(b"")  # no channel byte
        ws.send_binary(b"\x09junk")  # no such channel
        ws.send("text where binary belongs")
        ws.send_binary(b"\x04{not json")  # a resize that does not parse
        ws.send_binary(b"\x00data\n")
        ws.send_binary(b"\xff\x00")  # v5: stdin is closed
        stdout, status = b"", b""
        while not status:
            frame = ws.recv()
            assert frame, stdout
            if frame[:1] == b"\x01":
                stdout += frame[1:]
            elif frame[:1] == b"\x03":
                status = frame[1:]
    except websocket.WebSocketTimeoutException:
        raise AssertionError("the session did not end") from None
    finally:
        ws.close()
    assert stdout == b"data\ndone\n"
    assert json.loads(status) == {"metadata": {}, "status": "Success"}
