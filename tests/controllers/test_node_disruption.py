"""Zone-aware pacing of NoExecute taints, and master disruption mode.

The pure state machine first, then the node lifecycle controller on its own server: when
every node falls silent the controller suspects itself and evicts nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from kubling.client import clock as clocks
from kubling.controllers import node_disruption, nodelifecycle
from kubling.controllers.node_disruption import Transition, ZoneState, ZoneStates
from tests.client.helpers import make_namespace, run
from tests.controllers.test_nodelifecycle import (
    GRACE,
    NS,
    UNREACHABLE,
    Kubelet,
    _evicted,
    _node,
    _ready_pod,
    _taints,
)
from tests.controllers.test_podgc import advance_until, controller_running, private_server
from tests.server_fixture import KublingServer


def test_zone_keys() -> None:
    def node(**labels: str) -> dict[str, object]:
        return {"metadata": {"labels": labels}}

    assert node_disruption.zone_of(node()) == ""
    assert node_disruption.zone_of(node(**{"topology.kubernetes.io/zone": "a",
                                          "topology.kubernetes.io/region": "eu"})) == \
        "eu:\x00:a"
    assert node_disruption.zone_of(node(**{"failure-domain.beta.kubernetes.io/zone": "b"})) \
        == ":\x00:b"


def test_a_normal_zone_taints_one_node_per_ten_seconds() -> None:
    zones = ZoneStates()
    for i in range(5):
        zones.observe(f"n{i}", "z", ready=i > 0)
    assert zones.refresh() is Transition.NONE
    assert zones.states["z"] is ZoneState.NORMAL
    assert zones.may_taint("z", 100.0) == 0.0
    assert zones.may_taint("z", 104.0) == pytest.approx(6.0)
    assert zones.may_taint("z", 110.0) == 0.0
    # Another zone has its own budget.
    assert zones.may_taint("other", 110.0) == 0.0


def test_partial_disruption_slows_or_stops_tainting() -> None:
    small = ZoneStates()
    for i in range(6):
        small.observe(f"n{i}", "z", ready=i < 2)  # 4 of 6 not ready: ≥ 55 %, more than 2
    small.observe("elsewhere", "y", ready=True)
    small.refresh()
    assert small.states["z"] is ZoneState.PARTIAL_DISRUPTION
    assert small.may_taint("z", 0.0) == math.inf  # a small zone stops
    assert small.may_taint("y", 0.0) == 0.0
    large = ZoneStates()
    for i in range(60):
        large.observe(f"n{i}", "z", ready=i < 20)
    large.observe("elsewhere", "y", ready=True)
    large.refresh()
    assert large.may_taint("z", 0.0) == 0.0
    assert large.may_taint("z", 1.0) == pytest.approx(99.0)  # 0.01 taints a second


def test_every_zone_down_is_master_disruption() -> None:
    zones = ZoneStates()
    zones.observe("a", "z1", ready=False)
    zones.observe("b", "z2", ready=False)
    assert zones.refresh() is Transition.ENTERED_MASTER_DISRUPTION
    assert zones.master_disruption and zones.may_taint("z1", 0.0) == math.inf
    assert zones.refresh() is Transition.NONE  # nothing changed
    zones.observe("b", "z2", ready=True)
    assert zones.refresh() is Transition.EXITED_MASTER_DISRUPTION
    assert zones.states == {"z1": ZoneState.FULL_DISRUPTION, "z2": ZoneState.NORMAL}
    # A fully disrupted zone beside a healthy one taints at the normal rate.
    assert zones.may_taint("z1", 0.0) == 0.0
    zones.forget("a")
    zones.forget("b")
    assert zones.refresh() is Transition.NONE and zones.states == {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KublingServer]:
    with private_server(tmp_path_factory.mktemp("disruption")) as started:
        yield started


def test_when_every_node_is_silent_nothing_is_evicted(server: KublingServer) -> None:
    clock = clocks.FakeClock()

    async def scenario() -> None:
        async with controller_running(server, lambda ctx: nodelifecycle.NodeLifecycleController(
                ctx, node_monitor_grace_period=GRACE, node_startup_grace_period=20.0,
                node_monitor_period=1.0), clock) as (_, client):
            await make_namespace(client, NS)
            first, second = Kubelet(client, "lonely-1"), Kubelet(client, "lonely-2")
            await first.register()
            await second.register()
            await _ready_pod(client, "stays", "lonely-1")

            async def both_unknown() -> bool:
                for name in ("lonely-1", "lonely-2"):
                    if _taints(await _node(client, name)) != {
                            ("node.kubernetes.io/unreachable", "NoSchedule")}:
                        return False
                return True

            # Both silent: unreachable for scheduling, but no NoExecute taint, no eviction.
            await advance_until(clock, both_unknown, step=1.0, limit=3 * GRACE)
            for _ in range(20):
                clock.advance(20.0)
                await advance_until(clock, both_unknown, step=0.0, limit=1.0)
            assert not await _evicted(client, "stays")

            # One comes back: the other is now the one at fault, and gets tainted.
            await second.renew()
            await second.post_status("True")

            async def first_tainted() -> bool:
                return _taints(await _node(client, "lonely-1")) == UNREACHABLE

            await advance_until(clock, first_tainted, step=0.5, limit=5.0)

    run(scenario(), timeout=60)
