"""The event recorder against a real server: aggregation of repeats, failures swallowed."""

from __future__ import annotations

import logging
import re

import pytest

from kubling.client import events, rest
from kubling.client.clock import FakeClock
from tests.client.helpers import CONFIGMAPS, configmap, make_namespace, run
from tests.server_fixture import KublingServer

EVENTS = rest.lookup("v1", "events")


def test_repeats_aggregate_into_one_event(kubling: KublingServer) -> None:
    async def main() -> None:
        async with rest.Client.from_kubeconfig(kubling.kubeconfig) as client:
            ns = "client-events"
            await make_namespace(client, ns)
            obj = await client.resource(CONFIGMAPS).create(configmap("subject", ns))
            clock = FakeClock()
            recorder = events.EventRecorder(client, "test-controller", "node-1", clock=clock)
            for _ in range(3):
                recorder.record(obj, events.NORMAL, "Synced", "all good")
            recorder.record(obj, events.WARNING, "Failed", "something broke")
            await recorder.flush()

            items, _ = await client.resource(EVENTS).list_all(namespace=ns)
            by_reason = {e["reason"]: e for e in items
                         if e["involvedObject"].get("name") == "subject"}
            assert sorted(by_reason) == ["Failed", "Synced"]
            synced = by_reason["Synced"]
            assert synced["count"] == 3
            assert re.fullmatch(r"subject\.[0-9a-f]+", synced["metadata"]["name"])
            assert synced["type"] == "Normal" and synced["message"] == "all good"
            assert synced["source"] == {"component": "test-controller", "host": "node-1"}
            assert synced["reportingComponent"] == "test-controller"
            assert synced["reportingInstance"] == "node-1"
            assert synced["firstTimestamp"] <= synced["lastTimestamp"]
            involved = synced["involvedObject"]
            assert involved["kind"] == "ConfigMap" and involved["apiVersion"] == "v1"
            assert involved["namespace"] == ns and involved["uid"] == obj["metadata"]["uid"]
            assert by_reason["Failed"]["count"] == 1

            # after ten quiet minutes the same event starts a new Event object
            clock.advance(events.AGGREGATION_WINDOW + 1)
            recorder.record(obj, events.NORMAL, "Synced", "all good")
            await recorder.flush()
            items, _ = await client.resource(EVENTS).list_all(namespace=ns)
            counts = sorted(e["count"] for e in items if e["reason"] == "Synced")
            assert counts == [1, 3]
            await recorder.close()

    run(main())


def test_record_never_raises(kubling: KublingServer, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with rest.Client.from_kubeconfig(kubling.kubeconfig) as client:
            recorder = events.EventRecorder(client, "test-controller")
            ghost = configmap("ghost", "no-such-namespace")
            recorder.record(ghost, events.NORMAL, "Created", "into the void")
            recorder.record(ghost, "Bogus", "Created", "bad type")
            recorder.record({"not": "an object"}, events.NORMAL, "Odd", "no metadata")
            await recorder.flush()
            await recorder.close()

    with caplog.at_level(logging.WARNING, logger="kubling.client.events"):
        run(main())
    messages = [r.getMessage() for r in caplog.records]
    assert any("cannot record event Created" in m for m in messages)
    assert any("not Normal or Warning" in m for m in messages)
    assert all(r.exc_info is None for r in caplog.records)
