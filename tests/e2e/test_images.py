"""The images a running ``kubling server`` serves: its embedded registry takes a push
from skopeo (a client we did not write) into the node's store at once; air-gap archives
dropped in ``<data-dir>/images/import/`` are imported at start and survive a restart;
``kubling image`` sees and edits the same store while the server runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubling.node.images import build
from tests.server_fixture import REPO, KublingServer, free_port, running_server


def kubling_image(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubling.cli.main", "image", *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=120, check=False, cwd=REPO,
    )


@pytest.fixture(scope="module")
def busybox_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is not installed — run ./install.sh --test")
    tmp = tmp_path_factory.mktemp("busybox")
    build.build_image("busybox", tmp / "layout", name="docker.io/library/busybox:latest")
    build.write_archive(tmp / "layout", tmp / "busybox.tar")
    return tmp / "busybox.tar"


@pytest.fixture
def server(tmp_path: Path, busybox_archive: Path) -> Iterator[KublingServer]:
    data = tmp_path / "data"
    (data / "images" / "import").mkdir(parents=True)
    shutil.copy(busybox_archive, data / "images" / "import" / "busybox.tar")
    with running_server(data, extra_args=["--disable-scheduler", "--controllers", ""]) as s:
        yield s


def wait_for(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def listed(data_dir: Path) -> str:
    return kubling_image(data_dir, "ls").stdout


def test_air_gap_import_at_start_survives_restart(server: KublingServer) -> None:
    wait_for(lambda: "docker.io/library/busybox" in listed(server.data_dir))
    assert "imported" in server.read_log() or "busybox" in server.read_log()
    server.stop()
    server.start()
    out = listed(server.data_dir)
    assert ["docker.io/library/busybox", "latest"] in [line.split()[:2] for line in out.splitlines()]
    state = json.loads((server.data_dir / "images" / "import" / ".imported.json").read_text())
    assert "busybox.tar" in state, "the unchanged archive is not imported again"


def test_push_to_the_embedded_registry_makes_the_image_available(
    server: KublingServer, busybox_archive: Path
) -> None:
    port = server.registry_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=5) as resp:
        assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    push = subprocess.run(
        ["skopeo", "copy", "--dest-tls-verify=false",
         f"oci-archive:{busybox_archive}", f"docker://127.0.0.1:{port}/mon-app:dev"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert push.returncode == 0, push.stderr
    out = listed(server.data_dir)
    assert [f"localhost:{port}/mon-app", "dev"] in [line.split()[:2] for line in out.splitlines()]
    # and it reads back through the registry, as another node would pull it
    inspect = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://127.0.0.1:{port}/mon-app:dev"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["Architecture"] in ("amd64", "arm64")
    # removed from the CLI while the server runs: the registry stops serving the tag
    rm = kubling_image(server.data_dir, "rm", f"localhost:{port}/mon-app:dev")
    assert rm.returncode == 0, rm.stderr
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/mon-app/manifests/dev",
                                 method="HEAD")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 404


def test_registry_port_in_use_and_disabled(tmp_path: Path) -> None:
    import socket

    holder = socket.socket()
    holder.bind(("0.0.0.0", 0))
    holder.listen()
    busy = holder.getsockname()[1]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "kubling.cli.main", "server", "--data-dir",
             str(tmp_path / "d"), "--https-port", str(free_port()), "--registry-port", str(busy)],
            capture_output=True, text=True, timeout=30, check=False, cwd=REPO,
        )
    finally:
        holder.close()
    assert result.returncode == 1
    assert f"port {busy} is in use" in result.stderr and "--registry-port" in result.stderr
    with running_server(tmp_path / "d2", extra_args=["--disable-registry"]) as s:
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{s.registry_port}/v2/", timeout=2)


def test_image_cli_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not an archive at all" * 100)
    result = kubling_image(tmp_path, "import", str(bad))
    assert result.returncode == 1 and "bad.tar" in result.stderr
    assert "Traceback" not in result.stderr
    result = kubling_image(tmp_path, "rm", "nothere:1")
    assert result.returncode == 1 and "not found" in result.stderr
    result = kubling_image(tmp_path, "import", str(tmp_path / "missing.tar"))
    assert result.returncode == 1 and "no such file" in result.stderr
    result = kubling_image(tmp_path, "pull", "Bad Name")
    assert result.returncode == 1 and "invalid reference format" in result.stderr
    assert "Traceback" not in result.stderr
