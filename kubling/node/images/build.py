"""Build small OCI images offline from this machine's Debian packages.

Tests and demos need real images (busybox, nginx, python), but the machines that run them
reach no container registry. Every file those images need is already on a Debian machine
with the right packages installed, so a recipe here copies files from the host (the binary,
its shared libraries found with ``ldd``, its data files) into gzip'd tar layers and writes
them as an OCI image layout — the format ``skopeo``, ``containerd`` and kubling's own image
store read.

Builds are reproducible (sorted entries, mtime 0, uid/gid 0, no owner names, gzip without
a timestamp or file name, sorted-key JSON), so the same host packages give the same
digests and callers may cache on them. All three recipes start with the same busybox base
layer, so one layout holding the three stores that layer once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import platform
import stat
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Reproducible builds carry no wall-clock time: every timestamp is the epoch.
EPOCH = "1970-01-01T00:00:00Z"
GZIP_LEVEL = 6

# Go's GOARCH names, which OCI uses, for the names platform.machine() gives.
_ARCHITECTURES = {
    "x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
    "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
}


class BuildError(Exception):
    """An image cannot be built on this machine; the message says what to install."""


@dataclass(frozen=True)
class BuiltImage:
    """What a build made: the reference it is tagged with in the layout, the digest of
    its manifest (the same inputs give the same one) and its config + compressed layers
    size in bytes."""

    name: str
    manifest_digest: str
    size: int


# ---------------------------------------------------------------------------------------
# The files of one layer


@dataclass(frozen=True)
class _Entry:
    kind: Literal["dir", "file", "symlink"]
    mode: int = 0o755
    data: bytes | None = None      # a file's content given in memory ...
    source: Path | None = None     # ... or read from this host file when the layer is written
    target: str = ""               # a symlink's target


class _Tree:
    """The files of one layer, keyed by their path in the image (no leading slash).

    Parents are added as directories automatically, so a recipe names only what matters.
    Adding the same path twice is fine when both say the same thing (two ELF files need
    the same libc) and a bug otherwise.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __iter__(self) -> Iterator[tuple[str, _Entry]]:
        """Entries in sorted order: a parent sorts before its children, and a stable
        order is what makes the tar (and so the digest) reproducible."""
        return iter(sorted(self._entries.items()))

    def __contains__(self, path: str) -> bool:
        return path.strip("/") in self._entries

    def directory(self, path: str, mode: int = 0o755) -> None:
        self._put(path, _Entry("dir", mode))

    def file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        content = data.encode() if isinstance(data, str) else data
        self._put(path, _Entry("file", mode, data=content))

    def symlink(self, path: str, target: str) -> None:
        self._put(path, _Entry("symlink", 0o777, target=target))

    def host_file(self, host: Path, path: str | None = None) -> str:
        """Copy the host file `host` (symlinks followed) to `path`, or by default to the
        same path as on the host. The default keeps the path ldd and the ELF interpreter
        name (/lib64/ld-linux-x86-64.so.2 on a merged-/usr Debian), so the symlinked
        directories on the way (/lib -> usr/lib) are copied as symlinks and the file
        lands in the real directory. Returns the path used in the image."""
        real = host.resolve()
        if not real.is_file():
            raise BuildError(f"{host} is missing on this machine")
        if path is None:
            self._host_parent_links(host.parent)
            path = str(host.parent.resolve() / host.name)
        mode = 0o755 if real.stat().st_mode & 0o111 else 0o644
        self._put(path, _Entry("file", mode, source=real))
        return path.strip("/")

    def host_tree(self, root: Path, skip: Callable[[Path], bool]) -> list[str]:
        """Copy the directory `root` to the same path, leaving out what `skip` says.

        A symlink that stays inside `root` is kept as one; one that leaves it (Debian's
        sitecustomize.py points into /etc) becomes a copy of its target, so the image
        never holds a dangling link. Returns the image paths of the regular files."""
        files: list[str] = []
        for directory, dirnames, filenames in os.walk(root):
            here = Path(directory)
            dirnames[:] = [d for d in dirnames if not skip(here / d)]
            self.directory(str(here))
            for name in [d for d in dirnames if (here / d).is_symlink()]:
                dirnames.remove(name)              # os.walk does not follow them either
                if (here / name).resolve().is_relative_to(root.resolve()):
                    self.symlink(str(here / name), os.readlink(here / name))
            for name in filenames:
                host = here / name
                if skip(host):
                    continue
                if host.is_symlink() and host.resolve().is_relative_to(root.resolve()):
                    self.symlink(str(host), os.readlink(host))
                elif host.resolve().is_file():
                    files.append(self.host_file(host, str(host)))
        return files

    def _host_parent_links(self, directory: Path) -> None:
        """Record each symlink among the ancestors of `directory` (as on the host)."""
        for ancestor in reversed([directory, *directory.parents]):
            if ancestor.is_symlink():
                self.symlink(str(ancestor.parent.resolve() / ancestor.name),
                             os.readlink(ancestor))

    def _put(self, path: str, entry: _Entry) -> None:
        key = path.strip("/")
        parts = key.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent not in self._entries:
                self._entries[parent] = _Entry("dir", 0o755)
            elif self._entries[parent].kind != "dir":
                raise ValueError(f"/{parent} is a {self._entries[parent].kind}, "
                                 f"not a directory, in this layer (adding /{key})")
        old = self._entries.get(key)
        if old is not None and old != entry and not (old.kind == entry.kind == "dir"):
            raise ValueError(f"/{key} is added twice with different content")
        self._entries[key] = entry


# ---------------------------------------------------------------------------------------
# Facts from the host: packages and shared libraries


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    except FileNotFoundError:
        raise BuildError(f"{argv[0]} is not on PATH: the recipes copy files from Debian "
                         "packages, so build on Debian or Ubuntu") from None


@dataclass(frozen=True)
class Package:
    """A Debian package a layer copies files from, and what to apt-get install for it."""

    name: str
    install: str


def _package_versions(packages: Iterable[Package]) -> dict[str, str]:
    """The installed version of each package; BuildError naming every missing one."""
    wanted = list(dict.fromkeys(packages))
    result = _run(["dpkg-query", "-W", "-f", "${Package}|${db:Status-Abbrev}|${Version}\n",
                   *[p.name for p in wanted]])
    versions: dict[str, str] = {}
    for line in result.stdout.splitlines():
        name, status, version = line.split("|", 2)
        if status.startswith("ii"):
            versions[name.split(":")[0]] = version
    missing = [p for p in wanted if p.name not in versions]
    if missing:
        raise BuildError("; ".join(f"{p.name} is not installed — apt-get install {p.install}"
                                   for p in missing))
    return versions


def _package_files(package: str) -> list[Path]:
    """The paths `dpkg -L` lists for an installed package."""
    result = _run(["dpkg", "-L", package])
    if result.returncode != 0:
        raise BuildError(f"dpkg -L {package} failed: {result.stderr.strip()}")
    return [Path(line) for line in result.stdout.splitlines() if line.startswith("/")]


def _is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"\x7fELF"


def _shared_libraries(files: Iterable[Path]) -> list[Path]:
    """Every shared library (and the dynamic loader) the ELF `files` load, transitively,
    as ldd reports it: one ldd call for all of them keeps a build quick."""
    elves = sorted({f for f in files if _is_elf(f)})
    if not elves:
        return []
    result = _run(["ldd", *map(str, elves)])
    libraries: set[Path] = set()
    missing: set[str] = set()
    for line in result.stdout.splitlines():
        if not line.startswith("\t"):
            continue                                  # "file:" headers in a multi-file run
        text = line.strip()
        if "=> not found" in text:
            missing.add(text.split()[0])
            continue
        path = text.split("=>")[-1].strip().split(" (")[0].strip()
        if path.startswith("/"):                      # not linux-vdso.so.1
            libraries.add(Path(path))
    if missing:
        raise BuildError(f"shared libraries not found: {', '.join(sorted(missing))} — "
                         "apt-get install the packages that provide them")
    return sorted(libraries)


def _host_binaries(tree: _Tree, binaries: Iterable[Path]) -> None:
    """Copy ELF files and every library they need, keeping ldd's paths."""
    binaries = list(binaries)
    for binary in binaries:
        tree.host_file(binary)
    for library in _shared_libraries(binaries):
        tree.host_file(library)


# ---------------------------------------------------------------------------------------
# Recipes


@dataclass(frozen=True)
class Layer:
    """One layer of a recipe: what it holds (for the image history), the packages its
    files come from, and the function that lists them."""

    what: str
    packages: tuple[Package, ...]
    files: Callable[[], _Tree]


@dataclass(frozen=True)
class Recipe:
    """An image: its layers, bottom first, and its run-time configuration."""

    default_name: str
    layers: tuple[Layer, ...]
    cmd: tuple[str, ...]
    env: tuple[str, ...] = ()
    exposed_ports: tuple[str, ...] = ()
    stop_signal: str = ""
    working_dir: str = "/"

    @property
    def packages(self) -> tuple[Package, ...]:
        return tuple(p for layer in self.layers for p in layer.packages)


_BUSYBOX = Package("busybox-static", "busybox-static")

_PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
_GROUP = """\
root:x:0:
daemon:x:1:
www-data:x:33:
nogroup:x:65534:
"""
# glibc (python, nginx) reads this; without it, names would go to DNS before /etc/hosts.
_NSSWITCH = """\
passwd: files
group: files
shadow: files
hosts: files dns
networks: files
protocols: files
services: files
"""


def _busybox_binary() -> Path:
    """Where busybox-static put its binary (/bin/busybox on Debian 12)."""
    for path in _package_files(_BUSYBOX.name):
        if path.name == "busybox" and path.is_file():
            return path
    raise BuildError("busybox-static lists no busybox binary — "
                     "apt-get install --reinstall busybox-static")


def _base_files() -> _Tree:
    """busybox with a link per applet in /bin (as the official busybox image), the users
    nginx and most demos expect, and the usual empty directories."""
    busybox = _busybox_binary()
    listing = _run([str(busybox), "--list"])
    if listing.returncode != 0:
        raise BuildError(f"{busybox} --list failed: {listing.stderr.strip()}")
    tree = _Tree()
    tree.host_file(busybox, "bin/busybox")
    for applet in listing.stdout.split():
        if applet != "busybox" and "/" not in applet:
            tree.symlink(f"bin/{applet}", "busybox")
    tree.symlink("usr/bin/env", "../../bin/busybox")   # for "#!/usr/bin/env" scripts
    tree.file("etc/passwd", _PASSWD)
    tree.file("etc/group", _GROUP)
    tree.file("etc/nsswitch.conf", _NSSWITCH)
    tree.directory("tmp", 0o1777)
    tree.directory("root", 0o700)
    tree.directory("var/www")
    tree.directory("run")
    return tree


_NGINX_BINARY = Path("/usr/sbin/nginx")
_NGINX_PREFIX = Path("/usr/share/nginx")   # Debian's --prefix: load_module paths are relative to it
_NGINX_CONF = """\
user www-data;
worker_processes auto;
pid /run/nginx.pid;
# /var/log/nginx/error.log and access.log link to /dev/stderr and /dev/stdout, as in the
# official image, so the container runtime collects the logs.
error_log /var/log/nginx/error.log notice;
include /etc/nginx/modules-enabled/*.conf;

events {
    worker_connections 1024;
}

http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /var/log/nginx/access.log;
    sendfile on;
    keepalive_timeout 65;
    include /etc/nginx/conf.d/*.conf;
}
"""
_NGINX_DEFAULT_SERVER = """\
server {
    listen 80;
    server_name localhost;

    location / {
        root /usr/share/nginx/html;
        index index.html index.htm;
    }

    error_page 500 502 503 504 /50x.html;
    location = /50x.html {
        root /usr/share/nginx/html;
    }
}
"""
_NGINX_INDEX = """\
<!DOCTYPE html>
<html>
<head><title>Welcome to nginx!</title></head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and working.</p>
</body>
</html>
"""
_NGINX_50X = """\
<!DOCTYPE html>
<html>
<head><title>Error</title></head>
<body>
<h1>An error occurred.</h1>
<p>Sorry, the page you are looking for is currently unavailable.</p>
</body>
</html>
"""


def _nginx_modules(tree: _Tree) -> list[Path]:
    """Copy the host's /etc/nginx/modules-enabled/*.conf (as files) and return the module
    files they load, so the image has the modules this machine's nginx has."""
    modules: list[Path] = []
    enabled = Path("/etc/nginx/modules-enabled")
    for conf in sorted(enabled.glob("*.conf")) if enabled.is_dir() else []:
        text = conf.read_text()
        for line in text.splitlines():
            words = line.split("#")[0].replace(";", " ").split()
            if words[:1] == ["load_module"] and len(words) > 1:
                module = _NGINX_PREFIX / words[1]
                if not module.exists():
                    raise BuildError(f"{conf} loads {module}, which is missing — "
                                     "apt-get install --reinstall the module's package")
                modules.append(module)
        tree.file(f"etc/nginx/modules-enabled/{conf.name}", text)
    return modules


def _nginx_files() -> _Tree:
    """Debian's nginx binary, its modules and libraries, nginx-common's parameter files
    and a configuration laid out like the official image's (conf.d/default.conf serving
    /usr/share/nginx/html on port 80), so the usual ConfigMap mounts work."""
    tree = _Tree()
    modules = _nginx_modules(tree)
    _host_binaries(tree, [_NGINX_BINARY, *modules])
    for path in _package_files("nginx-common"):
        if path.parent == Path("/etc/nginx") and path.name != "nginx.conf" and path.is_file():
            tree.host_file(path)
    if "etc/nginx/mime.types" not in tree:
        raise BuildError("/etc/nginx/mime.types is missing — "
                         "apt-get install --reinstall nginx-common")
    tree.file("etc/nginx/nginx.conf", _NGINX_CONF)
    tree.file("etc/nginx/conf.d/default.conf", _NGINX_DEFAULT_SERVER)
    tree.directory("etc/nginx/modules-enabled")
    tree.file("usr/share/nginx/html/index.html", _NGINX_INDEX)
    tree.file("usr/share/nginx/html/50x.html", _NGINX_50X)
    tree.symlink("var/log/nginx/access.log", "/dev/stdout")
    tree.symlink("var/log/nginx/error.log", "/dev/stderr")
    tree.directory("var/lib/nginx")          # Debian's temp paths (body, proxy, ...) go here
    tree.directory("var/www/html")
    tree.directory("run")
    return tree


_PYTHON_BINARY = Path("/usr/bin/python3.11")
_PYTHON_STDLIB = Path("/usr/lib/python3.11")
# What no program needs at run time: the test suite, GUI and teaching tools, pip's wheels,
# 2to3, the headers and static library for building extensions, and compiled caches.
_PYTHON_SKIP_DIRS = frozenset(
    {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "__pycache__"})
_PYTHON_SKIP_MODULES = ("_test", "_ctypes_test", "_xxtestfuzz", "xxlimited")


def _python_skips(path: Path) -> bool:
    name = path.name
    if path.parent == _PYTHON_STDLIB and (name in _PYTHON_SKIP_DIRS
                                          or name.startswith("config-")):
        return True
    if name == "__pycache__" or name.endswith((".pyc", ".pyo")):
        return True
    return path.parent.name == "lib-dynload" and name.startswith(_PYTHON_SKIP_MODULES)


def _python_files() -> _Tree:
    """Debian's python3.11 with its standard library (less tests, GUI tools and caches)
    and the libraries of the interpreter and of every extension module in lib-dynload."""
    tree = _Tree()
    stdlib = tree.host_tree(_PYTHON_STDLIB, _python_skips)
    extensions = [Path("/" + p) for p in stdlib if p.endswith(".so")]
    _host_binaries(tree, [_PYTHON_BINARY, *extensions])
    tree.symlink("usr/bin/python3", "python3.11")
    tree.symlink("usr/bin/python", "python3")
    return tree


_BASE = Layer("busybox, /etc/passwd and /etc/group", (_BUSYBOX,), _base_files)
_NGINX = Layer("nginx with its modules, libraries and configuration",
               (Package("nginx", "nginx-light"), Package("nginx-common", "nginx-light")),
               _nginx_files)
_PYTHON = Layer("python3.11 with its standard library and libraries",
                (Package("python3.11", "python3.11"),
                 Package("libpython3.11-stdlib", "python3.11")),
                _python_files)

IMAGES: dict[str, Recipe] = {
    "busybox": Recipe("docker.io/library/busybox:latest", (_BASE,), cmd=("sh",)),
    "nginx": Recipe("docker.io/library/nginx:latest", (_BASE, _NGINX),
                    cmd=("nginx", "-g", "daemon off;"), exposed_ports=("80/tcp",),
                    stop_signal="SIGQUIT"),
    "python": Recipe("docker.io/library/python:3.11", (_BASE, _PYTHON), cmd=("python3",),
                     env=("LANG=C.UTF-8",)),
}


# ---------------------------------------------------------------------------------------
# Writing blobs


@dataclass(frozen=True)
class _Blob:
    digest: str
    size: int


class _LayerSink(io.RawIOBase):
    """The file object tarfile streams a layer into: it hashes the plain tar (the
    diff_id the config names), gzips it (zlib's gzip header has no time and no name)
    and writes the compressed bytes to a temporary blob file while hashing them, so a
    layer never has to fit in memory or be read twice."""

    def __init__(self, out: IO[bytes]) -> None:
        super().__init__()
        self._out = out
        self._plain = hashlib.sha256()
        self._packed = hashlib.sha256()
        self._size = 0
        self._gzip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def writable(self) -> bool:
        return True

    def write(self, data: Any, /) -> int:
        """Take a chunk of the tar stream (tarfile passes bytes)."""
        chunk = bytes(data)
        self._plain.update(chunk)
        self._emit(self._gzip.compress(chunk))
        return len(chunk)

    def finish(self) -> tuple[str, _Blob]:
        self._emit(self._gzip.flush())
        return "sha256:" + self._plain.hexdigest(), _Blob(
            "sha256:" + self._packed.hexdigest(), self._size)

    def _emit(self, data: bytes) -> None:
        self._packed.update(data)
        self._out.write(data)
        self._size += len(data)


class _PendingBlob:
    """A temporary file in blobs/sha256/ that `commit` files under its digest. Writing
    beside the final name and renaming means a reader never sees half a blob, and an
    interrupted build leaves only a dot-file that archives skip."""

    def __init__(self, layout: Path) -> None:
        self._blobs = layout / "blobs" / "sha256"
        self._blobs.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._blobs, prefix=".tmp-")
        self._tmp = Path(tmp)
        self.out: IO[bytes] = os.fdopen(fd, "wb")

    def __enter__(self) -> _PendingBlob:
        return self

    def __exit__(self, *_: object) -> None:
        self.out.close()
        self._tmp.unlink(missing_ok=True)

    def commit(self, digest: str) -> None:
        self.out.close()
        os.chmod(self._tmp, 0o644)
        os.replace(self._tmp, self._blobs / digest.removeprefix("sha256:"))


def _put_blob(layout: Path, data: bytes) -> _Blob:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with _PendingBlob(layout) as pending:
        pending.out.write(data)
        pending.commit(digest)
    return _Blob(digest, len(data))


def _tar_info(path: str, entry: _Entry) -> tarfile.TarInfo:
    """The header of one entry, with everything that varies between machines fixed."""
    info = tarfile.TarInfo(path)
    info.mode = entry.mode
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.target
    elif entry.source is not None:
        info.size = entry.source.stat().st_size
    else:
        info.size = len(entry.data or b"")
    return info


def _put_layer(layout: Path, tree: _Tree) -> tuple[str, _Blob]:
    """Write `tree` as a gzip'd tar blob; return its diff_id and its blob."""
    with _PendingBlob(layout) as pending:
        sink = _LayerSink(pending.out)
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for path, entry in tree:
                info = _tar_info(path, entry)
                if entry.kind != "file":
                    tar.addfile(info)
                elif entry.source is not None:
                    with entry.source.open("rb") as content:
                        tar.addfile(info, content)
                else:
                    tar.addfile(info, io.BytesIO(entry.data or b""))
        diff_id, blob = sink.finish()
        pending.commit(blob.digest)
    return diff_id, blob


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------------------
# The image


def _architecture() -> str:
    machine = platform.machine()
    try:
        return _ARCHITECTURES[machine]
    except KeyError:
        raise BuildError(f"no OCI architecture name for this machine ({machine})") from None


def _image_config(recipe: Recipe, diff_ids: list[str], history: list[str]) -> dict[str, Any]:
    config: dict[str, Any] = {
        "Env": [DEFAULT_PATH, *recipe.env],
        "Cmd": list(recipe.cmd),
        "WorkingDir": recipe.working_dir,
    }
    if recipe.exposed_ports:
        config["ExposedPorts"] = {port: {} for port in recipe.exposed_ports}
    if recipe.stop_signal:
        config["StopSignal"] = recipe.stop_signal
    return {
        "created": EPOCH,
        "architecture": _architecture(),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": EPOCH, "created_by": line} for line in history],
    }


def _history_line(layer: Layer, versions: dict[str, str]) -> str:
    """Says where a layer came from, with package versions, as `docker history` shows."""
    sources = ", ".join(f"{p.name} {versions[p.name]}" for p in layer.packages)
    return f"kubling image build: {layer.what} (Debian {sources})"


def build_image(recipe: str, layout: Path, *, name: str | None = None) -> BuiltImage:
    """Build image `recipe` into the OCI image layout `layout` (created if missing; other
    images in it stay) and tag it `name` (the recipe's docker.io name by default)."""
    try:
        spec = IMAGES[recipe]
    except KeyError:
        raise BuildError(f"no image recipe {recipe!r}; known: {', '.join(sorted(IMAGES))}") \
            from None
    versions = _package_versions(spec.packages)     # every missing package in one message
    architecture = _architecture()
    layout.mkdir(parents=True, exist_ok=True)
    diff_ids: list[str] = []
    layers: list[_Blob] = []
    for layer in spec.layers:
        diff_id, blob = _put_layer(layout, layer.files())
        diff_ids.append(diff_id)
        layers.append(blob)
    history = [_history_line(layer, versions) for layer in spec.layers]
    config = _put_blob(layout, _json(_image_config(spec, diff_ids, history)))
    manifest = _put_blob(layout, _json({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config.digest,
                   "size": config.size},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": b.digest, "size": b.size}
                   for b in layers],
    }))
    reference = name or spec.default_name
    _tag(layout, reference, {
        "mediaType": MANIFEST_MEDIA_TYPE, "digest": manifest.digest, "size": manifest.size,
        "platform": {"architecture": architecture, "os": "linux"},
        "annotations": {REF_NAME: reference, CONTAINERD_NAME: reference},
    })
    return BuiltImage(reference, manifest.digest, config.size + sum(b.size for b in layers))


def _tag(layout: Path, reference: str, descriptor: dict[str, Any]) -> None:
    """Add `descriptor` to index.json, replacing the one already tagged `reference`.

    The layout directory is locked meanwhile so two builds into one layout do not lose
    each other's tags; index.json is replaced atomically so a reader sees old or new."""
    fd = os.open(layout, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _write_atomic(layout / "oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
        index_path = layout / "index.json"
        index: dict[str, Any] = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE,
                                 "manifests": []}
        if index_path.exists():
            index = json.loads(index_path.read_bytes())
        manifests: list[dict[str, Any]] = index.setdefault("manifests", [])
        for i, old in enumerate(manifests):
            names = old.get("annotations", {})
            if reference in (names.get(REF_NAME), names.get(CONTAINERD_NAME)):
                manifests[i] = descriptor
                break
        else:
            manifests.append(descriptor)
        _write_atomic(index_path, _json(index))
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


# ---------------------------------------------------------------------------------------
# The archive


def write_archive(layout: Path, archive: Path) -> None:
    """Tar the OCI layout `layout` into an oci-archive file `archive` (oci-layout,
    index.json and blobs/ at the root), which `skopeo copy oci-archive:FILE` and
    `ctr images import` read. The same layout gives the same bytes."""
    if not (layout / "index.json").is_file():
        raise BuildError(f"{layout} is not an OCI image layout (no index.json)")
    archive.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=archive.parent, prefix=f".{archive.name}.")
    try:
        with os.fdopen(fd, "wb") as out, \
                tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in _layout_files(layout):
                relative = path.relative_to(layout).as_posix()
                if path.is_dir():
                    tar.addfile(_tar_info(relative, _Entry("dir", 0o755)))
                else:
                    entry = _Entry("file", 0o644, source=path)
                    with path.open("rb") as content:
                        tar.addfile(_tar_info(relative, entry), content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, archive)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _layout_files(layout: Path) -> list[Path]:
    """The layout's files and directories in sorted order, less unfinished temp files."""
    found: list[Path] = []
    for directory, dirnames, filenames in os.walk(layout):
        here = Path(directory)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if here != layout:
            found.append(here)
        found.extend(here / n for n in filenames
                     if not n.startswith(".") and stat.S_ISREG((here / n).lstat().st_mode))
    return sorted(found, key=lambda p: p.relative_to(layout).as_posix())
