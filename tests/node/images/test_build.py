"""The offline image builder, end to end: real builds from this machine's Debian packages,
checked by an independent client (skopeo) and by running the images' programs in a
chroot. One build of the three recipes is shared by the module; a second build checks
that the digests are reproducible."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kubling.node.images.build import (
    DEFAULT_PATH,
    IMAGES,
    BuildError,
    BuiltImage,
    Layer,
    Package,
    Recipe,
    build_image,
    write_archive,
)

# Real builds and real processes: a few seconds each, bounded so a hang fails quickly.
pytestmark = pytest.mark.timeout(120)

NAMES = {
    "busybox": "docker.io/library/busybox:latest",
    "nginx": "docker.io/library/nginx:latest",
    "python": "docker.io/library/python:3.11",
}


@dataclass(frozen=True)
class Built:
    layout: Path
    images: dict[str, BuiltImage]
    seconds: dict[str, float]


def _build_all(layout: Path) -> Built:
    images: dict[str, BuiltImage] = {}
    seconds: dict[str, float] = {}
    for recipe in IMAGES:
        start = time.monotonic()
        images[recipe] = build_image(recipe, layout)
        seconds[recipe] = time.monotonic() - start
    return Built(layout, images, seconds)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The three images, built once into one layout for the whole module."""
    return _build_all(tmp_path_factory.mktemp("images") / "layout")


def _blob(layout: Path, digest: str) -> bytes:
    data = (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def _manifest(built: Built, recipe: str) -> dict[str, Any]:
    return dict(json.loads(_blob(built.layout, built.images[recipe].manifest_digest)))


def _config(built: Built, recipe: str) -> dict[str, Any]:
    return dict(json.loads(_blob(built.layout, _manifest(built, recipe)["config"]["digest"])))


def _skopeo(*args: str) -> str:
    assert shutil.which("skopeo"), "skopeo is not installed — apt-get install skopeo"
    result = subprocess.run(["skopeo", *args], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


# --- the layout ------------------------------------------------------------------------


def test_layout_index_tags_every_image(built: Built) -> None:
    layout = json.loads((built.layout / "oci-layout").read_text())
    assert layout == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((built.layout / "index.json").read_text())
    tagged = {m["annotations"]["org.opencontainers.image.ref.name"]: m
              for m in index["manifests"]}
    assert set(tagged) == set(NAMES.values())
    for recipe, name in NAMES.items():
        image = built.images[recipe]
        assert image.name == name
        assert tagged[name]["digest"] == image.manifest_digest
        assert tagged[name]["annotations"]["io.containerd.image.name"] == name
        assert tagged[name]["mediaType"] == "application/vnd.oci.image.manifest.v1+json"


@pytest.mark.parametrize("recipe", sorted(NAMES))
def test_manifest_and_config_follow_the_oci_spec(built: Built, recipe: str) -> None:
    manifest = _manifest(built, recipe)
    config = _config(built, recipe)
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert {layer["mediaType"] for layer in manifest["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+gzip"}
    assert config["architecture"] in {"amd64", "arm64"} and config["os"] == "linux"
    assert config["config"]["Env"][0] == DEFAULT_PATH
    assert len(config["history"]) == len(manifest["layers"])
    # diff_ids are the digests of the uncompressed layers, in order.
    diff_ids = ["sha256:" + hashlib.sha256(gzip.decompress(
        _blob(built.layout, layer["digest"]))).hexdigest() for layer in manifest["layers"]]
    assert config["rootfs"] == {"type": "layers", "diff_ids": diff_ids}
    sizes = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
    assert built.images[recipe].size == sizes


def test_recipes_configure_the_images_like_the_official_ones(built: Built) -> None:
    assert _config(built, "busybox")["config"]["Cmd"] == ["sh"]
    nginx = _config(built, "nginx")["config"]
    assert nginx["Cmd"] == ["nginx", "-g", "daemon off;"]
    assert nginx["ExposedPorts"] == {"80/tcp": {}}
    assert nginx["StopSignal"] == "SIGQUIT"
    assert _config(built, "python")["config"]["Cmd"] == ["python3"]


def test_images_share_the_busybox_base_layer(built: Built) -> None:
    base = _manifest(built, "busybox")["layers"]
    for recipe in ("nginx", "python"):
        assert _manifest(built, recipe)["layers"][0] == base[0]


def test_layers_are_normalised(built: Built) -> None:
    """What makes them reproducible: sorted entries, no times, no owners."""
    for layer in _manifest(built, "nginx")["layers"]:
        blob = _blob(built.layout, layer["digest"])
        assert blob[4:8] == b"\0\0\0\0"                      # gzip header mtime
        assert not blob[3] & 0x08                             # no FNAME in the header
        with tarfile.open(fileobj=gzip.GzipFile(fileobj=io.BytesIO(blob)), mode="r|") as tar:
            members = list(tar)
        names = [m.name for m in members]
        assert names == sorted(names)
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {
            (0, 0, 0, "", "")}


# --- skopeo, an independent client -------------------------------------------------------


@pytest.mark.parametrize("recipe", sorted(NAMES))
def test_skopeo_reads_the_layout(built: Built, recipe: str) -> None:
    reference = f"oci:{built.layout}:{NAMES[recipe]}"
    raw = _skopeo("inspect", "--raw", reference)
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == \
        built.images[recipe].manifest_digest
    inspected = json.loads(_skopeo("inspect", reference))
    assert inspected["Digest"] == built.images[recipe].manifest_digest
    assert inspected["Os"] == "linux"
    assert inspected["Layers"] == [layer["digest"] for layer in _manifest(built, recipe)["layers"]]


def test_archive_is_read_by_skopeo(built: Built, tmp_path: Path) -> None:
    archive = tmp_path / "images.tar"
    write_archive(built.layout, archive)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert {"oci-layout", "index.json", "blobs", "blobs/sha256"} <= set(names)
    inspected = json.loads(_skopeo("inspect", f"oci-archive:{archive}:{NAMES['nginx']}"))
    assert inspected["Digest"] == built.images["nginx"].manifest_digest
    docker = tmp_path / "busybox-docker.tar"
    _skopeo("copy", "--quiet", f"oci-archive:{archive}:{NAMES['busybox']}",
            f"docker-archive:{docker}:kubling.test/busybox:demo")
    with tarfile.open(docker) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        assert json.load(member)[0]["RepoTags"] == ["kubling.test/busybox:demo"]
    again = tmp_path / "again.tar"
    write_archive(built.layout, again)
    assert again.read_bytes() == archive.read_bytes()


# --- rebuilding --------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_builds_are_reproducible(built: Built, tmp_path: Path) -> None:
    again = _build_all(tmp_path / "layout")
    for recipe in NAMES:
        assert again.images[recipe] == built.images[recipe]
    assert (tmp_path / "layout" / "index.json").read_bytes() == \
        (built.layout / "index.json").read_bytes()
    report = ", ".join(f"{r} {s:.1f}s {built.images[r].size / 1e6:.1f} MB"
                       for r, s in again.seconds.items())
    print(f"rebuild: {report}")


def test_retagging_replaces_and_other_names_add(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    first = build_image("busybox", layout, name="kubling.test/box:1")
    second = build_image("busybox", layout, name="kubling.test/box:1")
    build_image("busybox", layout, name="kubling.test/box:2")
    assert first == second
    index = json.loads((layout / "index.json").read_text())
    names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert names == ["kubling.test/box:1", "kubling.test/box:2"]
    assert not [p for p in (layout / "blobs" / "sha256").iterdir() if p.name.startswith(".")]


def test_unknown_recipe_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="known: busybox, nginx, python"):
        build_image("redis", tmp_path)


def test_missing_package_says_what_to_install(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    missing = Package("kubling-no-such-package", "kubling-no-such-package")
    layer = Layer("nothing", (missing,), lambda: pytest.fail("built without its package"))
    monkeypatch.setitem(IMAGES, "broken", Recipe("kubling.test/broken:1", (layer,), ("sh",)))
    with pytest.raises(BuildError, match="kubling-no-such-package is not installed — "
                                         "apt-get install kubling-no-such-package"):
        build_image("broken", tmp_path / "layout")
    assert not (tmp_path / "layout").exists()


def test_python_layer_leaves_out_tests_tools_and_caches(built: Built) -> None:
    layer = _manifest(built, "python")["layers"][1]["digest"]
    with tarfile.open(fileobj=io.BytesIO(_blob(built.layout, layer))) as tar:
        names = set(tar.getnames())
    stdlib = "usr/lib/python3.11"
    assert {f"{stdlib}/os.py", f"{stdlib}/lib-dynload", "usr/bin/python3.11",
            "usr/bin/python3"} <= names
    for left_out in ("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3"):
        assert f"{stdlib}/{left_out}" not in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith(f"{stdlib}/config-")]


# --- the images run ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rootfs(built: Built, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each image's layers unpacked in order, as a container runtime would."""
    roots: dict[str, Path] = {}
    for recipe in NAMES:
        root = tmp_path_factory.mktemp(f"rootfs-{recipe}")
        root.chmod(0o755)                 # "/" as a runtime makes it: nginx's workers traverse it
        for layer in _manifest(built, recipe)["layers"]:
            path = built.layout / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:")
            with tarfile.open(path) as tar:
                tar.extractall(root, filter="fully_trusted")
        for mountpoint in ("dev", "proc"):
            (root / mountpoint).mkdir(exist_ok=True)
        roots[recipe] = root
    return roots


# Private mount, pid and network namespaces: /dev and /proc are mounted for the chroot and
# vanish with it, every process (a daemonised nginx too) dies with the shell, and the
# network is a loopback of its own (busybox's ip brings it up), so port 80 is free.
_CHROOT = 'r=$1; shift; mount --rbind /dev "$r/dev" && mount -t proc proc "$r/proc" ' \
          '&& chroot "$r" /bin/ip link set lo up && exec chroot "$r" "$@"'


def _run_in(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run `argv` in the image unpacked at `root`, as root, with the image's PATH."""
    return subprocess.run(
        ["unshare", "--mount", "--pid", "--net", "--fork", "--",
         "sh", "-c", _CHROOT, "sh", str(root), *argv],
        capture_output=True, text=True, timeout=30, check=False,
        env={"PATH": DEFAULT_PATH.removeprefix("PATH="), "HOME": "/root"})


def test_busybox_runs(rootfs: dict[str, Path]) -> None:
    result = _run_in(rootfs["busybox"], "sh", "-c", "echo ok; wget --help 2>&1; id -un")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "ok"
    assert "Usage: wget" in result.stdout
    assert lines[-1] == "root"
    for applet in ("sh", "ls", "nslookup", "httpd", "nc", "vi", "awk", "ip", "env", "whoami"):
        assert (rootfs["busybox"] / "bin" / applet).is_symlink()
    assert ((rootfs["busybox"] / "tmp").stat().st_mode & 0o7777) == 0o1777


def test_nginx_config_test_passes(rootfs: dict[str, Path]) -> None:
    result = _run_in(rootfs["nginx"], "nginx", "-t")
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_serves_its_welcome_page(rootfs: dict[str, Path]) -> None:
    script = ("nginx && for i in 1 2 3 4 5 6 7 8 9 10; do "
              "wget -qO- http://127.0.0.1/ && exit; sleep 0.2; done; exit 1")
    result = _run_in(rootfs["nginx"], "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert "<h1>Welcome to nginx!</h1>" in result.stdout
    # The access log is the container's standard output, as in the official image.
    assert '"GET / HTTP/1.1" 200' in result.stdout


def test_python_imports_its_standard_library(rootfs: dict[str, Path]) -> None:
    code = ("import json, http.server, ssl, sqlite3, ctypes, lzma, bz2, decimal, zoneinfo, "
            "uuid, hashlib; print(ssl.OPENSSL_VERSION.split()[0], hashlib.sha256().name)")
    result = _run_in(rootfs["python"], "python3", "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OpenSSL sha256"
