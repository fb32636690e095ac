"""Containers with stdin and a TTY, and ephemeral containers, end to end with the real
kubectl: ``kubectl run -it --rm``, ``kubectl run -i``, ``kubectl attach -it`` (with a
resize, over the WebSocket and over SPDY) and ``kubectl debug`` (interactive with
``--target``, and not). The interactive ones run kubectl in a tmux terminal, as a person
would. One agent-enabled server serves the module (``tests.agent_fixture``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_fixture import AgentServer, agent_server, wait_for
from tests.e2e.test_kubectl_exec import TRANSPORTS, get_pod, kubectl, run_pod

LOCAL = "--image-pull-policy=IfNotPresent"  # busybox is built into the data dir


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    with agent_server(tmp_path_factory.mktemp("debug")) as srv:
        yield srv


class Terminal:
    """A command in a detached tmux session: what is on the screen, keys typed into it,
    and the command's exit code (written to ``rc`` when it returns)."""

    def __init__(self, name: str, command: str, directory: Path) -> None:
        if shutil.which("tmux") is None:
            pytest.fail("tmux is needed for the terminal tests — run ./install.sh --test")
        self.session = f"kubling-debug-{os.getpid()}-{name}"
        self.rc = directory / f"{name}.rc"
        # The shell lingers after the command so that its last screen can still be read.
        subprocess.run(["tmux", "new-session", "-d", "-s", self.session, "-x", "100",
                        "-y", "30", f"{command}; echo EXITED:$? > {self.rc}; sleep 600"],
                       check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.session],
                              capture_output=True, text=True, check=False).stdout

    def keys(self, *typed: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.session, *typed], check=True)

    def type_line(self, line: str) -> None:
        self.keys(line, "Enter")

    def wait_screen(self, text: str, timeout: float = 20) -> None:
        try:
            wait_for(lambda: text in self.screen(), timeout, f"{text!r} on the screen")
        except AssertionError as err:
            raise AssertionError(f"{err}; the screen:\n{self.screen()}") from None

    def resize(self, width: int, height: int) -> None:
        subprocess.run(["tmux", "resize-window", "-t", self.session, "-x", str(width),
                        "-y", str(height)], check=True)

    def exit_code(self, timeout: float = 30) -> str:
        wait_for(self.rc.exists, timeout, f"the command to end: {self.screen()}")
        return self.rc.read_text().strip()

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.session], check=False,
                       capture_output=True)


def kubectl_line(server: AgentServer, transport: str, *args: str) -> str:
    env = " ".join(f"{k}={v}" for k, v in TRANSPORTS[transport].items())
    return (f"{env} kubectl --kubeconfig {server.kubeconfig} --cache-dir {server.cache_dir} "
            + " ".join(args))


def status_of(pod: dict[str, Any], name: str) -> dict[str, Any]:
    for key in ("containerStatuses", "ephemeralContainerStatuses"):
        for entry in pod.get("status", {}).get(key) or []:
            if entry.get("name") == name:
                return dict(entry)
    return {}


def event_messages(server: AgentServer, pod: str) -> list[str]:
    out = server.kubectl("get", "events", "--field-selector", f"involvedObject.name={pod}",
                         "-o", "json").stdout
    return [f"{item['reason']}: {item.get('message', '')}" for item in json.loads(out)["items"]]


# -- kubectl run -i / -it ----------------------------------------------------------------


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_run_it_rm_in_tmux(server: AgentServer, transport: str, tmp_path: Path) -> None:
    name = f"t-{transport}"
    term = Terminal(name, kubectl_line(server, transport, "run", "-it", "--rm",
                                       "--restart=Never", name, "--image=busybox", LOCAL,
                                       "--", "sh"), tmp_path)
    try:
        term.wait_screen("If you don't see a command prompt", 60)
        term.keys("Enter")
        term.wait_screen("#")
        term.type_line("echo hi-$((6*7)) $TERM")
        term.wait_screen("hi-42 xterm")
        term.type_line("exit")
        assert term.exit_code() == "EXITED:0", term.screen()
        assert f'pod "{name}" deleted' in term.screen()
    finally:
        term.close()
    wait_for(lambda: not get_pod(server, name), 30, "the pod to be deleted")


def test_run_i_pipes_stdin_back(server: AgentServer) -> None:
    result = kubectl(server, "run", "-i", "t2", "--image=busybox", LOCAL, "--restart=Never",
                     "--", "cat", input="piped-line-1\npiped-line-2\n", timeout=90)
    assert result.returncode == 0, result.stderr
    assert "piped-line-1\npiped-line-2\n" in result.stdout
    # stdinOnce: the first attach's end closed cat's stdin, so the pod finished.
    wait_for(lambda: get_pod(server, "t2").get("status", {}).get("phase") == "Succeeded", 30,
             "cat to end with its stdin")
    logs = server.kubectl("logs", "t2").stdout
    assert logs == "piped-line-1\npiped-line-2\n"


# -- kubectl attach -it ------------------------------------------------------------------


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_attach_it_reads_writes_and_resizes(server: AgentServer, transport: str,
                                            tmp_path: Path) -> None:
    name = f"tty-{transport}"
    run_pod(server, name, containers=[{
        "name": "main", "image": "busybox:latest", "imagePullPolicy": "IfNotPresent",
        "command": ["sh"], "stdin": True, "tty": True}])
    term = Terminal(name, kubectl_line(server, transport, "attach", "-it", name), tmp_path)
    try:
        term.wait_screen("If you don't see a command prompt", 30)
        term.keys("Enter")
        term.wait_screen("#")
        term.type_line("echo attached-$((2*21))")
        term.wait_screen("attached-42")
        term.type_line("stty size")
        term.wait_screen("30 100")
        term.resize(120, 40)
        time.sleep(0.5)
        term.type_line("stty size")
        term.wait_screen("40 120")
        term.type_line("exit 3")
        # kubectl attach ends with the container; its own exit status is not the shell's.
        term.exit_code()
    finally:
        term.close()
    wait_for(lambda: status_of(get_pod(server, name), "main").get("state", {})
             .get("terminated", {}).get("exitCode") == 3, 30, "the shell's exit code")
    # A terminal's output still lands in the CRI log (conmon writes it).
    assert "attached-42" in server.kubectl("logs", name).stdout


def test_stdin_stays_open_after_an_attach_without_stdin_once(server: AgentServer) -> None:
    run_pod(server, "keeper", containers=[{
        "name": "main", "image": "busybox:latest", "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", "while read line; do echo got:$line; done; echo eof"],
        "stdin": True}])
    for line in ("one", "two"):
        process = subprocess.Popen(
            ["kubectl", "--kubeconfig", str(server.kubeconfig), "--cache-dir",
             str(server.cache_dir), "attach", "-i", "keeper"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True)
        try:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(f"{line}\n")
            process.stdin.flush()
            assert process.stdout.readline() == f"got:{line}\n"
        finally:
            process.kill()  # a detach: the container's stdin must stay open
            process.wait(10)
    time.sleep(1)
    assert get_pod(server, "keeper")["status"]["phase"] == "Running"
    assert server.kubectl("logs", "keeper").stdout == "got:one\ngot:two\n"


# -- kubectl debug -----------------------------------------------------------------------


WEB = ("mkdir -p /srv && echo served-by-target > /srv/index.html && "
       "exec httpd -f -p 8080 -h /srv")


def test_debug_it_shares_the_targets_processes_and_network(server: AgentServer,
                                                          tmp_path: Path) -> None:
    run_pod(server, "web", WEB)
    term = Terminal("debug", kubectl_line(
        server, "websocket", "debug", "-it", "web", "--image=busybox", LOCAL,
        "--target=main", "-c", "dbg", "--", "sh"), tmp_path)
    try:
        term.wait_screen("If you don't see a command prompt", 60)
        term.keys("Enter")
        term.wait_screen("#")
        term.type_line("ps -o pid,args | grep -c '[h]ttpd -f -p 8080'")
        term.wait_screen("\n1\n")
        term.type_line("wget -qO- localhost:8080")
        term.wait_screen("served-by-target")
        term.type_line("exit")
        assert term.exit_code() == "EXITED:0", term.screen()
    finally:
        term.close()
    wait_for(lambda: "terminated" in status_of(get_pod(server, "web"), "dbg").get("state", {}),
             30, "the debugger to be terminated")
    pod = get_pod(server, "web")
    assert pod["status"]["phase"] == "Running"
    debugger = status_of(pod, "dbg")
    assert debugger["state"]["terminated"]["exitCode"] == 0
    assert debugger["ready"] is False and "started" not in debugger


def test_debug_without_a_terminal_then_logs(server: AgentServer) -> None:
    run_pod(server, "quiet")
    server.kubectl("debug", "quiet", "--image=busybox", LOCAL, "--profile=general", "-c",
                   "probe", "--", "sh", "-c", "echo from-the-debugger; hostname; exit 4")

    def debugger_state() -> dict[str, Any]:
        return dict(status_of(get_pod(server, "quiet"), "probe").get("state") or {})

    wait_for(lambda: "terminated" in debugger_state(), 60, "the debugger to run and end")
    terminated = debugger_state()["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (4, "Error")
    assert server.kubectl("logs", "quiet", "-c", "probe").stdout == (
        "from-the-debugger\nquiet\n")
    time.sleep(2)  # never restarted, and the pod's readiness is its containers' alone
    pod = get_pod(server, "quiet")
    assert status_of(pod, "probe")["restartCount"] == 0
    assert "terminated" in status_of(pod, "probe")["state"]
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert (pod["status"]["phase"], ready["Ready"]) == ("Running", "True")
    messages = event_messages(server, "quiet")
    for message in ("Created: Created container probe", "Started: Started container probe"):
        assert message in messages, messages


def test_a_running_debugger_is_stopped_with_its_pod(server: AgentServer) -> None:
    run_pod(server, "brief")
    server.kubectl("debug", "brief", "--image=busybox", LOCAL, "--profile=general", "-c",
                   "lingerer", "--", "sleep", "3600")
    wait_for(lambda: "running" in (status_of(get_pod(server, "brief"), "lingerer")
                                   .get("state") or {}), 60, "the debugger to run")
    runc = ["runc", "--root", str(server.data_dir / "runtime" / "runc"), "list", "-q"]
    assert any("_lingerer_" in line for line in
               subprocess.run(runc, capture_output=True, text=True, check=True).stdout.split())
    server.kubectl("delete", "pod", "brief", "--grace-period=1", "--timeout=30s")
    assert not any("_lingerer_" in line for line in
                   subprocess.run(runc, capture_output=True, text=True, check=True)
                   .stdout.split())
