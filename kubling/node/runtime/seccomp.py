"""kubling's RuntimeDefault seccomp profile: allow by default, refuse what is dangerous.

Docker and containerd ship an allow-list of some 350 system calls. Keeping such a list current
is a project of its own, so kubling inverts it: every system call is allowed except those that
reach kernel state a container does not own (so stay refused whatever the capabilities) and
those whose only use is something a default capability set cannot do anyway, which Docker
re-allows when the matching capability is added (and so does this profile):

- kernel keyrings are not namespaced: add_key, keyctl, request_key;
- loading code into the kernel or replacing it: (f)init_module, delete_module, kexec_*, bpf;
- clocks are not namespaced: settimeofday, clock_settime, clock_adjtime, adjtimex, stime;
- new namespaces and mounts (container escapes start here): unshare, setns, mount, umount2,
  the new mount API, pivot_root, and clone/clone3 with a CLONE_NEW* flag;
- other processes' memory: ptrace, process_vm_readv/writev, kcmp, pidfd_getfd;
- host devices, swap and accounting: iopl, ioperm, swapon/off, acct, quotactl, reboot,
  vhangup, syslog, lookup_dcookie, perf_event_open, fanotify_init, open_by_handle_at,
  name_to_handle_at, NUMA policy calls;
- obsolete interfaces that only carry risk: uselib, ustat, sysfs, _sysctl, nfsservctl,
  create_module, get_kernel_syms, query_module, vm86, vm86old;
- io_uring, whose bypass of seccomp checks made Docker and containerd drop it too;
- userfaultfd, a well-known exploit helper.

A refused call fails with EPERM; clone3 fails with ENOSYS so that C libraries fall back to
clone, whose flags a filter can inspect (clone3 passes them in memory it cannot read).
Names the kernel or libseccomp does not know are skipped by runc.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

__all__ = ["runtime_default_profile"]

_ENOSYS = 38

#: System call -> the capability that re-allows it (None: refused whatever the capabilities).
_GATED: dict[str, str | None] = {
    "add_key": None,
    "keyctl": None,
    "request_key": None,
    "init_module": "CAP_SYS_MODULE",
    "finit_module": "CAP_SYS_MODULE",
    "delete_module": "CAP_SYS_MODULE",
    "kexec_load": "CAP_SYS_BOOT",
    "kexec_file_load": "CAP_SYS_BOOT",
    "reboot": "CAP_SYS_BOOT",
    "bpf": "CAP_SYS_ADMIN",
    "settimeofday": "CAP_SYS_TIME",
    "stime": "CAP_SYS_TIME",
    "clock_settime": "CAP_SYS_TIME",
    "clock_settime64": "CAP_SYS_TIME",
    "clock_adjtime": "CAP_SYS_TIME",
    "clock_adjtime64": "CAP_SYS_TIME",
    "adjtimex": "CAP_SYS_TIME",
    "unshare": "CAP_SYS_ADMIN",
    "setns": "CAP_SYS_ADMIN",
    "mount": "CAP_SYS_ADMIN",
    "umount": "CAP_SYS_ADMIN",
    "umount2": "CAP_SYS_ADMIN",
    "pivot_root": "CAP_SYS_ADMIN",
    "fsopen": "CAP_SYS_ADMIN",
    "fsconfig": "CAP_SYS_ADMIN",
    "fsmount": "CAP_SYS_ADMIN",
    "fspick": "CAP_SYS_ADMIN",
    "move_mount": "CAP_SYS_ADMIN",
    "open_tree": "CAP_SYS_ADMIN",
    "mount_setattr": "CAP_SYS_ADMIN",
    "swapon": "CAP_SYS_ADMIN",
    "swapoff": "CAP_SYS_ADMIN",
    "quotactl": "CAP_SYS_ADMIN",
    "lookup_dcookie": "CAP_SYS_ADMIN",
    "fanotify_init": "CAP_SYS_ADMIN",
    "perf_event_open": "CAP_PERFMON",
    "name_to_handle_at": "CAP_SYS_ADMIN",
    "open_by_handle_at": "CAP_DAC_READ_SEARCH",
    "ptrace": "CAP_SYS_PTRACE",
    "process_vm_readv": "CAP_SYS_PTRACE",
    "process_vm_writev": "CAP_SYS_PTRACE",
    "kcmp": "CAP_SYS_PTRACE",
    "pidfd_getfd": "CAP_SYS_PTRACE",
    "userfaultfd": "CAP_SYS_PTRACE",
    "iopl": "CAP_SYS_RAWIO",
    "ioperm": "CAP_SYS_RAWIO",
    "acct": "CAP_SYS_PACCT",
    "vhangup": "CAP_SYS_TTY_CONFIG",
    "syslog": "CAP_SYSLOG",
    "get_mempolicy": "CAP_SYS_NICE",
    "set_mempolicy": "CAP_SYS_NICE",
    "mbind": "CAP_SYS_NICE",
    "move_pages": "CAP_SYS_NICE",
    "io_uring_setup": None,
    "io_uring_enter": None,
    "io_uring_register": None,
    "uselib": None,
    "ustat": None,
    "sysfs": None,
    "_sysctl": None,
    "nfsservctl": None,
    "create_module": None,
    "get_kernel_syms": None,
    "query_module": None,
    "vm86": None,
    "vm86old": None,
}

# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET (linux/sched.h).
_CLONE_NEW_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                    0x40000000)

_ARCHES: dict[str, list[str]] = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    "arm64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}


def runtime_default_profile(machine: str, capabilities: Collection[str] = ()) -> dict[str, Any]:
    """The OCI `linux.seccomp` object for `machine` (platform.machine()) and a container
    holding `capabilities` (CAP_* names)."""
    caps = set(capabilities)
    refused = sorted(name for name, cap in _GATED.items() if cap is None or cap not in caps)
    rules: list[dict[str, Any]] = [{"names": refused, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    if "CAP_SYS_ADMIN" not in caps:
        rules.append(
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": _ENOSYS}
        )
        # The flags are clone's first argument on every architecture but s390 (not covered).
        rules.extend(
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": 1,
                "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
            }
            for flag in _CLONE_NEW_FLAGS
        )
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": list(_ARCHES.get(machine, [])),
        "syscalls": rules,
    }
