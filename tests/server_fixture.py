"""Start a real ``kubling server`` process for end-to-end tests and talk to it.

The server is a subprocess on a free port with its own data dir; tests drive it with the
real ``kubectl`` (``--cache-dir`` in a temp dir, never ``~/.kube``) and the official
``kubernetes`` Python client. Only the process this module started is ever signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent

#: A node agent owns host-wide things (the kubling0 bridge, the ``ip kubling`` nftables
#: table, port 53 on the node IP, 10.42.0.0/24), so only one agent-enabled server may
#: run on this host at a time. Test processes (CI, a second pytest) take turns on it.
AGENT_LOCK = Path("/run/lock/kubling-test-agent.lock")
AGENT_LOCK_WAIT = 1800.0


class AgentSlot:
    """This host's one agent slot, counted within the process so that a fixture can hold it
    across its server's restarts and its own host cleanup."""

    def __init__(self) -> None:
        self._handle: Any = None
        self._holders = 0

    def acquire(self) -> None:
        if self._holders == 0:
            AGENT_LOCK.parent.mkdir(parents=True, exist_ok=True)
            handle = open(AGENT_LOCK, "a+")
            deadline = time.monotonic() + AGENT_LOCK_WAIT
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        handle.close()
                        raise RuntimeError(f"another agent-enabled kubling server held "
                                           f"{AGENT_LOCK} for {AGENT_LOCK_WAIT:.0f}s") from None
                    time.sleep(0.5)
            self._handle = handle
        self._holders += 1

    def release(self) -> None:
        self._holders -= 1
        if self._holders == 0:
            self._handle.close()
            self._handle = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


AGENT_SLOT = AgentSlot()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` every 0.1 s until it returns something truthy (returned), or fail
    naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class KublingServer:
    """A running ``kubling server`` and the clients that reach it."""

    def __init__(self, data_dir: Path, *, port: int | None = None,
                 extra_args: Sequence[str] = (), agent: bool = False) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.registry_port = free_port()
        #: Without ``agent`` the server runs no node agent (``--disable-agent``): tests
        #: that do not run containers must not touch the host's network or runc.
        self.extra_args = list(extra_args) if agent else ["--disable-agent", *extra_args]
        self.agent = agent
        self._holds_slot = False
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.cache_dir = data_dir.parent / f"{data_dir.name}-kubectl-cache"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "kubeconfig.yaml"

    def start(self, *, timeout: float = 30.0) -> float:
        """Start the process; return seconds until ``/readyz`` answered ok."""
        if self.agent and not self._holds_slot:
            AGENT_SLOT.acquire()
            self._holds_slot = True
        started = time.monotonic()
        log = open(self.log_path, "ab")
        env = dict(os.environ)
        env.pop("KUBECONFIG", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kubling.cli.main", "server", "--data-dir",
             str(self.data_dir), "--https-port", str(self.port), "--bind-address", "127.0.0.1",
             "--registry-port", str(self.registry_port), *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
        )
        log.close()
        deadline = started + timeout
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kubling server exited: {self.read_log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", context=context,
                                            timeout=1) as resp:
                    if resp.status == 200:
                        return time.monotonic() - started
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"kubling server not ready in {timeout}s: {self.read_log()}")

    def _release_agent_slot(self) -> None:
        if self._holds_slot:
            AGENT_SLOT.release()
            self._holds_slot = False

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, *, timeout: float = 15.0) -> int | None:
        if self.process is None:
            self._release_agent_slot()
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        self._release_agent_slot()
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    # -- clients --------------------------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60.0, binary: str = "kubectl") -> subprocess.CompletedProcess[str]:
        cmd = [binary, "--kubeconfig", str(self.kubeconfig), "--cache-dir",
               str(self.cache_dir), *args]
        result = subprocess.run(cmd, input=input, capture_output=True, text=True,
                                timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def kubectl_yaml(self, *args: str) -> Any:
        return yaml.safe_load(self.kubectl(*args, "-o", "yaml").stdout)

    def api_client(self) -> Any:
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig),
                                client_configuration=configuration)
        return client.ApiClient(configuration)

    def ssl_context(self) -> ssl.SSLContext:
        from kubling.client import config

        context = config.ssl_context(config.load_kubeconfig(self.kubeconfig))
        assert context is not None
        return context


@contextlib.contextmanager
def running_server(data_dir: Path, **kwargs: Any) -> Iterator[KublingServer]:
    server = KublingServer(data_dir, **kwargs)
    try:
        server.start()
        yield server
    finally:
        server.stop()
