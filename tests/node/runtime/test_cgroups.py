"""Reading the OOM killer's count from cgroupfs, on v1, v2 and v1 kernels before 4.13."""

from __future__ import annotations

from pathlib import Path

from kubling.node.runtime import cgroups


def _mounts(tmp_path: Path, *lines: str) -> Path:
    table = tmp_path / "mounts"
    table.write_text("".join(line + "\n" for line in lines))
    return table


def _cgroup(root: Path, files: dict[str, str]) -> None:
    directory = root / "kubling" / "podx" / "app"
    directory.mkdir(parents=True)
    for name, text in files.items():
        (directory / name).write_text(text)


def test_v1_reads_oom_control(tmp_path: Path) -> None:
    memory = tmp_path / "memory"
    _cgroup(memory, {"memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                     "memory.failcnt": "9\n"})
    mounts = _mounts(tmp_path, f"cgroup {memory} cgroup rw,relatime,memory 0 0")
    assert cgroups.oom_kill_count("/kubling/podx/app", mounts=mounts) == 2


def test_old_v1_kernels_fall_back_to_failcnt(tmp_path: Path) -> None:
    memory = tmp_path / "memory"
    _cgroup(memory, {"memory.oom_control": "oom_kill_disable 0\nunder_oom 0\n",
                     "memory.failcnt": "3\n"})
    mounts = _mounts(tmp_path, f"cgroup {memory} cgroup rw,relatime,memory 0 0")
    assert cgroups.oom_kill_count("/kubling/podx/app", mounts=mounts) == 3


def test_v2_reads_memory_events_and_a_gone_cgroup_is_none(tmp_path: Path) -> None:
    unified = tmp_path / "unified"
    _cgroup(unified, {"memory.events": "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n"})
    cpu = tmp_path / "cpu"
    cpu.mkdir()
    mounts = _mounts(tmp_path, f"cgroup {cpu} cgroup rw,cpu 0 0",
                     f"cgroup2 {unified} cgroup2 rw,nsdelegate 0 0")
    assert cgroups.oom_kill_count("/kubling/podx/app", mounts=mounts) == 1
    assert cgroups.oom_kill_count("/kubling/podx/gone", mounts=mounts) is None
