"""Reading usage from cgroup files (v1 and v2 layouts, built in a temporary directory) and
the Prometheus text of ``/metrics/resource`` (the e2e test reads real cgroups)."""

from __future__ import annotations

from pathlib import Path

from kubling.node import metrics


def _mounts(tmp_path: Path, *lines: str) -> Path:
    mounts = tmp_path / "mounts"
    mounts.write_text("".join(f"{line}\n" for line in lines))
    return mounts


def test_cgroup_v1_usage(tmp_path: Path) -> None:
    cpuacct = tmp_path / "cpuacct" / "kubling" / "podx" / "main"
    memory = tmp_path / "memory" / "kubling" / "podx" / "main"
    cpuacct.mkdir(parents=True)
    memory.mkdir(parents=True)
    (cpuacct / "cpuacct.usage").write_text("2500000000\n")
    (memory / "memory.usage_in_bytes").write_text("10000\n")
    (memory / "memory.stat").write_text("cache 5\ntotal_rss 7000\ntotal_inactive_file 4000\n")
    mounts = _mounts(tmp_path, f"cgroup {tmp_path}/cpuacct cgroup rw,cpuacct 0 0",
                     f"cgroup {tmp_path}/memory cgroup rw,memory 0 0",
                     f"cgroup2 {tmp_path}/unified cgroup2 rw 0 0")
    usage = metrics.cgroup_usage("/kubling/podx/main", mounts=mounts)
    assert (usage.cpu_ns, usage.memory_usage, usage.working_set, usage.rss) == (
        2_500_000_000, 10000, 6000, 7000)


def test_cgroup_v2_usage(tmp_path: Path) -> None:
    directory = tmp_path / "kubling" / "podx"
    directory.mkdir(parents=True)
    (directory / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\n")
    (directory / "memory.current").write_text("8192\n")
    (directory / "memory.stat").write_text("anon 4096\ninactive_file 1024\n")
    mounts = _mounts(tmp_path, f"cgroup2 {tmp_path} cgroup2 rw 0 0")
    usage = metrics.cgroup_usage("/kubling/podx", mounts=mounts)
    assert (usage.cpu_ns, usage.memory_usage, usage.working_set, usage.rss) == (
        1_500_000, 8192, 7168, 4096)


def test_missing_cgroup_reads_as_unknown(tmp_path: Path) -> None:
    mounts = _mounts(tmp_path, f"cgroup2 {tmp_path} cgroup2 rw 0 0")
    usage = metrics.cgroup_usage("/kubling/gone", mounts=mounts)
    assert usage.cpu_ns is None and usage.working_set is None


def test_node_usage_from_proc(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("cpu  100 0 50 1000 20 0 0 0 0 0\ncpu0 1 2 3\n")
    (tmp_path / "meminfo").write_text(
        "MemTotal: 1000 kB\nMemFree: 400 kB\nInactive(file): 100 kB\nAnonPages: 300 kB\n")
    usage = metrics.node_usage(proc=tmp_path)
    assert usage.cpu_ns is not None and usage.cpu_ns > 0
    assert (usage.memory_usage, usage.working_set, usage.rss) == (
        600 * 1024, 500 * 1024, 300 * 1024)


def test_resource_metrics_without_pods_has_every_family() -> None:
    text = metrics.resource_metrics([])
    for family in ("node_cpu_usage_seconds_total", "node_memory_working_set_bytes",
                   "container_cpu_usage_seconds_total", "pod_memory_working_set_bytes"):
        assert f"# TYPE {family} " in text
    assert "\nresource_scrape_error 0\n" in text
    node = [line for line in text.splitlines() if line.startswith("node_cpu_usage_seconds")]
    value, stamp = node[0].split()[1:]
    assert float(value) > 0 and stamp.isdigit() and len(stamp) == 13
