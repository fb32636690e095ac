"""Node pressure: the kubelet's eviction signals, hard thresholds and conditions."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from kubling.node import nodestatus, pressure
from kubling.node.pressure import Observation, PressureMonitor, Threshold

GI = 1024 ** 3


def test_the_kubelet_defaults() -> None:
    assert pressure.DEFAULT_THRESHOLDS == (
        Threshold("memory.available", quantity=100 * 1024 * 1024),
        Threshold("nodefs.available", percentage=0.10),
        Threshold("nodefs.inodesFree", percentage=0.05),
        Threshold("imagefs.available", percentage=0.15),
        Threshold("imagefs.inodesFree", percentage=0.05))


def test_eviction_hard_syntax_and_errors() -> None:
    assert pressure.parse_eviction_hard("pid.available<1k, nodefs.available<100%,"
                                        "memory.available<0%") == (
        Threshold("pid.available", quantity=1000),
        Threshold("nodefs.available", percentage=1.0))
    with pytest.raises(ValueError, match=re.escape("unsupported eviction signal disk.available")):
        pressure.parse_eviction_hard("disk.available<1Gi")
    with pytest.raises(ValueError, match=re.escape("invalid eviction threshold syntax memory.available>1")):
        pressure.parse_eviction_hard("memory.available>1")
    with pytest.raises(ValueError, match="must be >= 0% and <= 100%"):
        pressure.parse_eviction_hard("nodefs.available<110%")


def test_this_machine_is_measured(tmp_path: Path) -> None:
    seen = pressure.observe(data_dir=tmp_path, image_dir=tmp_path / "images")
    assert {"memory.available", "nodefs.available", "nodefs.inodesFree", "imagefs.available",
            "pid.available"} <= set(seen)
    for observation in seen.values():
        assert 0 <= observation.available <= observation.capacity
    # nodefs.available<100% holds on any disk that is not entirely empty
    met = pressure.thresholds_met(pressure.parse_eviction_hard("nodefs.available<100%"), seen)
    assert [t.signal for t in met] == ["nodefs.available"]
    assert pressure.thresholds_met(pressure.DEFAULT_THRESHOLDS, {}) == []


def test_conditions_hold_for_the_transition_period() -> None:
    now = [1000.0]
    disk = {"nodefs.available": Observation(5 * GI, 100 * GI)}
    state = dict(disk)
    monitor = PressureMonitor(pressure.DEFAULT_THRESHOLDS, observe=lambda: state,
                              transition_period=300, clock=lambda: now[0])
    assert monitor.synchronize() is True
    assert monitor.conditions == {"DiskPressure"}
    state = {"nodefs.available": Observation(50 * GI, 100 * GI),
             "memory.available": Observation(50 * 1024 * 1024, 8 * GI),
             "pid.available": Observation(10, 32768)}
    now[0] += 200
    assert monitor.synchronize() is True
    assert monitor.conditions == {"DiskPressure", "MemoryPressure"}  # no pid threshold
    state = {}
    now[0] += 200
    assert monitor.synchronize() is True
    assert monitor.conditions == {"MemoryPressure"}
    now[0] += 100
    assert monitor.synchronize() is True
    assert monitor.conditions == frozenset()
    assert monitor.synchronize() is False


def test_pid_pressure_with_an_explicit_threshold() -> None:
    monitor = PressureMonitor(pressure.parse_eviction_hard("pid.available<5%"),
                              observe=lambda: {"pid.available": Observation(100, 32768)})
    monitor.synchronize()
    assert monitor.conditions == {"PIDPressure"}


def test_node_conditions_have_the_kubelet_reasons_and_keep_transition_times() -> None:
    healthy = nodestatus.conditions()
    by_type = {c["type"]: c for c in healthy}
    assert (by_type["DiskPressure"]["status"], by_type["DiskPressure"]["reason"],
            by_type["DiskPressure"]["message"]) == (
        "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure")
    old = [dict(c, lastTransitionTime="2020-01-01T00:00:00Z") for c in healthy]
    pressed = {c["type"]: c for c in nodestatus.conditions(
        frozenset({"MemoryPressure", "DiskPressure", "PIDPressure"}), old)}
    assert [(pressed[t]["status"], pressed[t]["reason"], pressed[t]["message"])
            for t in ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")] == [
        ("True", "KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
        ("True", "KubeletHasDiskPressure", "kubelet has disk pressure"),
        ("True", "KubeletHasInsufficientPID", "kubelet has insufficient PID available"),
        ("True", "KubeletReady", "kubelet is posting ready status")]
    assert pressed["DiskPressure"]["lastTransitionTime"] != "2020-01-01T00:00:00Z"
    assert pressed["Ready"]["lastTransitionTime"] == "2020-01-01T00:00:00Z"


def test_allocatable_leaves_out_what_the_hard_thresholds_keep_free() -> None:
    facts = nodestatus.NodeFacts(
        name="n", internal_ip="10.0.0.1", pod_cidr="10.42.0.0/24", cpu=2,
        memory_kib=16393220, ephemeral_storage=102625208 * 1024, kernel="6", os_image="L",
        runtime_version="runc://1", architecture="amd64",
        eviction_hard=pressure.DEFAULT_THRESHOLDS)
    status = nodestatus.node_status(facts)
    assert status["capacity"]["memory"] == "16393220Ki"
    assert status["allocatable"]["memory"] == "16290820Ki"  # less 100Mi
    assert status["capacity"]["ephemeral-storage"] == "102625208Ki"
    assert status["allocatable"]["ephemeral-storage"] == str(102625208 * 1024 - int(102625208 * 1024 * 0.1))
    assert status["allocatable"]["cpu"] == "2" and status["allocatable"]["pods"] == "110"
    bare = nodestatus.node_status(dataclasses.replace(facts, eviction_hard=()))
    assert bare["allocatable"] == bare["capacity"]
