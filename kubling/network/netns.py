"""Pinned namespaces: named network namespaces, laid out exactly as ``ip netns`` lays them
out, and the other namespaces a pod sandbox shares (IPC, UTS), pinned the same way.

A pod sandbox's network namespace must outlive every process in it (the CNI plugins configure
it before the pause-less pod has a process, and DEL must still find it after the containers
exited), so it is pinned by a bind mount of its nsfs file at ``/run/netns/<name>``. Using
iproute2's layout means ``ip netns exec``/``ip -n`` and every CNI plugin work on our namespaces
unchanged.

We do not spawn ``ip netns add``: a short-lived thread calls ``unshare(CLONE_NEWNET)``, which
moves only that thread into a fresh namespace, brings ``lo`` up from inside it (one ioctl,
instead of running the ``loopback`` CNI plugin) and bind-mounts ``/proc/thread-self/ns/net``
onto the placeholder file. The thread then exits, so no thread of the process is ever left in
a foreign namespace. This costs well under a millisecond, against several for ``ip``.

Every name carries the ``kubling-`` prefix so that ``kubling server --cleanup`` can find and
remove exactly what kubling made (:func:`list_kubling`).

:func:`pin_new` and :func:`unpin` are the same mechanism for any kind of namespace the
calling thread may unshare (``ipc``, ``uts``; ``net`` is :func:`create`): the sandbox pins its
IPC and UTS namespaces with them, setting the pod's hostname inside the UTS one first.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

__all__ = ["KINDS", "PREFIX", "RUN_DIR", "create", "delete", "exists", "has_interface",
           "is_netns_path", "is_ns_path", "list_kubling", "path", "pin_new", "release_dir",
           "unpin"]

RUN_DIR = Path("/run/netns")
PREFIX = "kubling-"

_NAME = re.compile(r"^kubling-[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MAX_NAME = 255

_CLONE_NEWNET = 0x40000000
#: The namespaces a thread can unshare and pin, by their name in /proc/<pid>/ns.
KINDS = {"net": _CLONE_NEWNET, "ipc": 0x08000000, "uts": 0x04000000}
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_SHARED = 0x100000
_MNT_DETACH = 0x2
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]

_shared_dirs: set[Path] = set()
_shared_dirs_lock = threading.Lock()


def path(name: str) -> Path:
    """The bind-mount path of namespace ``name`` (what CNI_NETNS is given)."""
    _check_name(name)
    return RUN_DIR / name


def exists(name: str) -> bool:
    """True when ``name`` is a live, mounted network namespace (not a stale empty file)."""
    return is_netns_path(path(name))


def is_netns_path(target: Path) -> bool:
    """True when ``target`` is a network namespace file, whoever made it."""
    return is_ns_path(target)


def is_ns_path(target: Path) -> bool:
    """True when ``target`` is a namespace file (of any kind), whoever made it.

    All nsfs inodes share one device, which no file on a real filesystem has, so a stale
    placeholder whose mount is gone is told apart from a live namespace by one stat.
    """
    try:
        return os.stat(target).st_dev == os.stat("/proc/self/ns/net").st_dev
    except (FileNotFoundError, NotADirectoryError):
        return False


def list_kubling() -> list[str]:
    """Names of the namespaces kubling made, for garbage collection and ``--cleanup``."""
    try:
        entries = os.listdir(RUN_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in entries if n.startswith(PREFIX))


def create(name: str) -> Path:
    """Create the network namespace ``name`` with ``lo`` up, and return its path.

    Raises ``FileExistsError`` when a live namespace of that name exists: a sandbox must not
    inherit another sandbox's interfaces. A stale placeholder (a crash between creating the
    file and mounting it) is replaced.
    """
    target = path(name)
    pin_new(target, "net", inside=_set_loopback_up)
    return target


def delete(name: str) -> None:
    """Unmount and remove namespace ``name``; a no-op when it is already gone.

    The namespace itself dies with its last reference, so a process still inside it keeps
    it alive: that is the kernel's rule and the same as ``ip netns delete``.
    """
    unpin(path(name))


def pin_new(target: Path, kind: str, *, inside: Callable[[], None] | None = None) -> None:
    """Make a new namespace of ``kind`` (a key of :data:`KINDS`) pinned at ``target``, after
    running ``inside`` in it (``lo`` up, the hostname...).

    The directory of ``target`` is made a shared mount point first (see
    :func:`_ensure_shared_dir`). Raises ``FileExistsError`` when a live namespace is already
    pinned there; a stale placeholder is replaced; a failure leaves nothing behind.
    """
    with _directory_lock(target.parent):
        _ensure_shared_dir(target.parent)
        if target.exists():
            if is_ns_path(target):
                raise FileExistsError(errno.EEXIST, f"{kind} namespace already exists",
                                      str(target))
            target.unlink()
        # O_EXCL: of two racing creators, exactly one owns the placeholder.
        os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
        try:
            _pin_from_fresh_thread(target, kind, inside)
        except BaseException:
            _unmount_all(target)
            target.unlink(missing_ok=True)
            raise


def release_dir(directory: Path) -> None:
    """Unmount and remove a pin directory that kubling alone uses (``/run/kubling/ns/ipc``,
    not ``/run/netns``, which iproute2 shares) once nothing is pinned in it, so an idle host
    keeps no mount of kubling's. Done under the same lock as :func:`pin_new`: detaching the
    directory's mount while a namespace is pinned below it would unpin that one too."""
    with _directory_lock(directory):
        try:
            if os.listdir(directory):
                return
        except FileNotFoundError:
            return
        with _shared_dirs_lock:
            _shared_dirs.discard(directory)
            _unmount_all(directory)
        with contextlib.suppress(OSError):
            directory.rmdir()


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock over pinning in ``directory``, across threads and processes: an
    flock on its parent directory (no lock file to leave behind)."""
    directory.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(directory.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def unpin(target: Path) -> None:
    """Unmount and remove the namespace file ``target``; a no-op when it is already gone."""
    _unmount_all(target)
    target.unlink(missing_ok=True)


def has_interface(target: Path, ifname: str) -> bool:
    """True when the namespace at ``target`` has an interface ``ifname``.

    Looked up from a short-lived thread that joins the namespace (``setns``), for the same
    reason :func:`create` uses one; a missing namespace simply has no interfaces.
    """
    try:
        fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    found: list[bool] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            if _libc.setns(fd, _CLONE_NEWNET) != 0:
                _raise_errno("setns", target)
            try:
                socket.if_nametoindex(ifname)
                found.append(True)
            except OSError:
                found.append(False)
        except BaseException as exc:
            failure.append(exc)

    try:
        _in_short_lived_thread(work)
    finally:
        os.close(fd)
    if failure:
        raise failure[0]
    return found[0]


def _check_name(name: str) -> None:
    if len(name) > _MAX_NAME or not _NAME.match(name):
        raise ValueError(f"network namespace name {name!r} must match {_NAME.pattern}")


def _ensure_shared_dir(directory: Path) -> None:
    """Make ``directory`` (/run/netns, ...) a shared mount point, as iproute2 does.

    With shared propagation, unmounting a namespace here also unmounts the copies that mount
    namespaces cloned since (containers), so the namespace is really freed on delete.
    """
    with _shared_dirs_lock:
        if directory in _shared_dirs:
            return
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        encoded = os.fsencode(directory)
        if _libc.mount(b"none", encoded, b"none", _MS_SHARED | _MS_REC, None) != 0:
            if ctypes.get_errno() != errno.EINVAL:
                _raise_errno("make-shared", directory)
            # EINVAL: not a mount point yet; bind it onto itself, then it can be shared.
            if _libc.mount(encoded, encoded, b"none", _MS_BIND | _MS_REC, None) != 0:
                _raise_errno("bind", directory)
            if _libc.mount(b"none", encoded, b"none", _MS_SHARED | _MS_REC, None) != 0:
                _raise_errno("make-shared", directory)
        _shared_dirs.add(directory)


def _pin_from_fresh_thread(target: Path, kind: str, inside: Callable[[], None] | None) -> None:
    """Pin a new namespace at ``target`` from a thread that exits right after.

    A thread, not the caller: unshare moves the calling thread, and returning a thread to
    its owner (or a pool) inside another namespace would silently misroute its sockets (or
    give it another hostname).
    """
    failure: list[BaseException] = []
    flag = KINDS[kind]

    def work() -> None:
        try:
            if _libc.unshare(flag) != 0:
                _raise_errno(f"unshare({kind})", target)
            if inside is not None:
                inside()
            if _libc.mount(f"/proc/thread-self/ns/{kind}".encode(), os.fsencode(target),
                           b"none", _MS_BIND, None) != 0:
                _raise_errno("bind-mount", target)
        except BaseException as exc:
            failure.append(exc)

    _in_short_lived_thread(work)
    if failure:
        raise failure[0]


def _in_short_lived_thread(work: Callable[[], None]) -> None:
    """Run ``work`` on a thread that ends with it, taking its namespace change along."""
    thread = threading.Thread(target=work, name="kubling-netns", daemon=True)
    thread.start()
    thread.join()


def _set_loopback_up() -> None:
    """``ip link set lo up`` for the calling thread's namespace: a pod expects 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def _unmount_all(target: Path) -> None:
    """Detach every mount stacked on ``target``; not mounted (or missing) is fine."""
    encoded = os.fsencode(target)
    for _ in range(16):
        if _libc.umount2(encoded, _MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOENT):
                return
            _raise_errno("umount", target)


def _raise_errno(what: str, target: Path) -> NoReturn:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}", str(target))
