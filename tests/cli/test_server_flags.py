"""``kubling server --cleanup`` and ``--disable-servicelb`` (the host is never touched here:
the cleanup that removes things runs in ``tests/e2e/test_services.py``, inside the host's
agent slot)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from kubling.cli import cleanup
from tests.cli.test_commands import kubling
from tests.server_fixture import running_server


def test_cleanup_refuses_while_a_server_holds_the_port(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = kubling("server", "--cleanup", "--https-port", str(port),
                         "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "stop the server before --cleanup" in result.stderr
    assert "Traceback" not in result.stderr


def test_mounts_below_a_directory_are_read_from_mountinfo(tmp_path: Path) -> None:
    base = tmp_path / "data dir"
    mountinfo = tmp_path / "mountinfo"
    escaped = str(base).replace(" ", "\\040")
    mountinfo.write_text(
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        f"90 22 0:50 / {escaped}/pods/u1/rootfs rw - overlay kubling-overlay rw\n"
        f"91 90 0:51 / {escaped}/pods/u1/rootfs/dev/shm rw - tmpfs shm rw\n"
        f"92 22 0:52 / {escaped}-other/x rw - tmpfs tmpfs rw\n")
    assert cleanup.mounts_below(base, mountinfo) == [
        f"{base}/pods/u1/rootfs", f"{base}/pods/u1/rootfs/dev/shm"]


def test_disable_servicelb_leaves_load_balancers_pending(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", extra_args=["--disable-servicelb"]) as server:
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "lb-node"}}
        server.kubectl("apply", "-f", "-", input=json.dumps(node))
        status = {"status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.9"}],
                             "conditions": [{"type": "Ready", "status": "True"}]}}
        server.kubectl("patch", "node", "lb-node", "--subresource=status", "--type=merge",
                       "-p", json.dumps(status))
        server.kubectl("create", "service", "loadbalancer", "web", "--tcp=80:8080")
        time.sleep(3)  # what ServiceLB would need, several times over
        row = server.kubectl("get", "service", "web", "--no-headers").stdout.split()
        assert row[3] == "<pending>"
