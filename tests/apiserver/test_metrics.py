"""The resource metrics pipeline without a server: the Prometheus text the agents serve,
the two-point storage and its rates, the Quantity spellings, discovery of the group."""

from __future__ import annotations

import orjson
import pytest

from kubling.api.resources import Catalogue
from kubling.apiserver import discovery, metricsapi, metricsscraper
from kubling.apiserver.metricsstorage import (
    Batch,
    MetricsPoint,
    MetricsStorage,
    binary_si,
    nanocores,
    usage,
)
from kubling.node import metrics as node_metrics

S = 1_000_000_000

TEXT = """\
# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="main",namespace="default",pod="busy"} 2.5 1700000002000
container_cpu_usage_seconds_total{container="side",namespace="default",pod="busy"} 0 1700000002000
container_memory_working_set_bytes{container="main",namespace="default",pod="busy"} 1.048576e+06 1700000002000
container_memory_working_set_bytes{container="side",namespace="default",pod="busy"} 4096 1700000002000
container_start_time_seconds{container="main",namespace="default",pod="busy"} 1.7e+09
container_cpu_usage_seconds_total{namespace="we\\"ird",pod="p,q",container="c\\\\d"} 1 1700000002500
container_memory_working_set_bytes{container="c\\\\d",namespace="we\\"ird",pod="p,q"} 8192 1700000002500
node_cpu_usage_seconds_total 100.25 1700000002000
node_memory_working_set_bytes 2.147483648e+09 1700000002000
resource_scrape_error 0
"""


def test_parse_samples_reads_labels_values_and_timestamps() -> None:
    samples = list(metricsscraper.parse_samples(TEXT))
    assert samples[0] == ("container_cpu_usage_seconds_total",
                          {"container": "main", "namespace": "default", "pod": "busy"},
                          2.5, 1700000002000)
    weird = samples[6]
    assert weird[1] == {"namespace": 'we"ird', "pod": "p,q", "container": "c\\d"}
    assert samples[-1] == ("resource_scrape_error", {}, 0.0, None)


def test_parse_errors_name_the_line() -> None:
    with pytest.raises(metricsscraper.ParseError, match="line 2"):
        list(metricsscraper.parse_samples("ok 1\nbroken{a=\"x\" \n"))
    with pytest.raises(metricsscraper.ParseError):
        list(metricsscraper.parse_samples("novalue\n"))


def test_decode_keeps_complete_points_only() -> None:
    batch = metricsscraper.decode(TEXT, "n1", now_ns=0)
    assert batch.nodes == {"n1": MetricsPoint(1700000002 * S, 100_250_000_000, 2 ** 31)}
    # "side" reported zero CPU: incomplete, dropped as metrics-server drops it.
    assert batch.pods[("default", "busy")] == {
        "main": MetricsPoint(1700000002 * S, 2_500_000_000, 1_048_576, 1700000000 * S)}
    assert batch.pods[('we"ird', "p,q")]["c\\d"].timestamp_ns == 1700000002500 * 1_000_000


def test_decode_the_agents_own_document() -> None:
    """What kubling's agent really serves parses: the node's point from /proc."""
    text = node_metrics.resource_metrics([])
    batch = metricsscraper.decode(text, "here", now_ns=0)
    point = batch.nodes["here"]
    assert point.cpu_ns > 0 and point.memory_bytes > 0 and point.timestamp_ns > 0


def _batch(t: int, cpu: int, memory: int = 4096, *, start: int = 0) -> Batch:
    return Batch(nodes={"n": MetricsPoint(t * S, cpu, memory)},
                 pods={("ns", "p"): {"c": MetricsPoint(t * S, cpu, memory, start * S)}})


def test_usage_needs_two_points_and_is_the_rate_between_them() -> None:
    storage = MetricsStorage()
    storage.store(_batch(100, 1 * S))
    assert storage.node("n") is None and storage.pod("ns", "p") is None
    storage.store(_batch(102, 1 * S + 400_000_000, memory=8192))  # 0.4 s of CPU in 2 s
    node = storage.node("n")
    assert node is not None
    assert (node.nanocores, node.window_ns, node.memory_bytes) == (200_000_000, 2 * S, 8192)
    containers = storage.pod("ns", "p")
    assert containers is not None and containers[0][0] == "c"
    assert containers[0][1].nanocores == 200_000_000


def test_a_repeated_reading_keeps_the_window_and_a_restart_starts_over() -> None:
    storage = MetricsStorage()
    storage.store(_batch(100, 1 * S))
    storage.store(_batch(102, 2 * S))
    storage.store(_batch(102, 2 * S))  # the agent had no newer reading
    node = storage.node("n")
    assert node is not None and node.window_ns == 2 * S
    storage.store(_batch(104, 1, start=103))  # restarted at 103: the old point is void
    assert storage.pod("ns", "p") is None


def test_a_vanished_pod_or_node_is_gone_after_the_next_scrape() -> None:
    storage = MetricsStorage()
    storage.store(_batch(100, 1 * S))
    storage.store(_batch(102, 2 * S))
    storage.store(Batch())
    assert storage.node("n") is None and storage.pod("ns", "p") is None


def test_a_counter_that_goes_backwards_reports_nothing() -> None:
    assert usage(MetricsPoint(2 * S, 5, 1), MetricsPoint(1 * S, 6, 1)) is None
    assert usage(MetricsPoint(1 * S, 6, 1), MetricsPoint(1 * S, 5, 1)) is None


def test_a_fresh_container_counts_from_its_start() -> None:
    storage = MetricsStorage(resolution_ns=15 * S)
    storage.store(_batch(112, 3 * S, start=100))  # started 12 s before its first reading
    containers = storage.pod("ns", "p")
    assert containers is not None
    assert (containers[0][1].nanocores, containers[0][1].window_ns) == (250_000_000, 12 * S)


@pytest.mark.parametrize(("value", "text"), [
    (0, "0"), (123_456_789, "123456789n"), (200_000_000, "200m"), (1_000_000_000, "1"),
    (1_500_000_000, "1500m"), (1_000, "1u"), (10, "10n"), (2_000_000_000_000, "2k")])
def test_nanocores_are_canonical_quantities(value: int, text: str) -> None:
    assert nanocores(value) == text


@pytest.mark.parametrize(("value", "text"), [
    (0, "0"), (512, "512"), (1000, "1k"), (4096, "4Ki"), (12_345_678, "12345678"),
    (1_048_576, "1Mi"), (20 * 1024 * 1024 + 4096, "20484Ki"), (3 * 2 ** 30, "3Gi")])
def test_bytes_are_binary_si_quantities(value: int, text: str) -> None:
    assert binary_si(value) == text


def test_metrics_objects_have_metrics_servers_shape() -> None:
    storage = MetricsStorage()
    storage.store(_batch(1_700_000_000, 1 * S))
    storage.store(_batch(1_700_000_015, 1 * S + 30_750_000, memory=20 * 1024 * 1024))
    used = storage.node("n")
    assert used is not None
    node = metricsapi.node_metrics({"metadata": {"name": "n", "labels": {"a": "b"}}}, used)
    assert node["kind"] == "NodeMetrics" and node["apiVersion"] == "metrics.k8s.io/v1beta1"
    assert node["metadata"]["labels"] == {"a": "b"}
    assert node["timestamp"] == "2023-11-14T22:13:35Z" and node["window"] == "15s"
    assert node["usage"] == {"cpu": "2050u", "memory": "20Mi"}
    containers = storage.pod("ns", "p")
    assert containers is not None
    pod = metricsapi.pod_metrics({"metadata": {"name": "p", "namespace": "ns"}}, containers)
    assert pod["metadata"]["namespace"] == "ns"
    assert pod["containers"] == [{"name": "c", "usage": {"cpu": "2050u", "memory": "20Mi"}}]


@pytest.mark.parametrize(("node", "expected"), [
    ({"metadata": {"name": "a"}, "status": {"conditions": [
        {"type": "Ready", "status": "True"}]}}, True),
    ({"metadata": {"name": "a"}, "status": {"conditions": [
        {"type": "Ready", "status": "Unknown"}]}}, False),
    ({"metadata": {"name": "a", "labels": {"kubling.io/simulated": "true"}},
      "status": {"conditions": [{"type": "Ready", "status": "True"}]}}, False),
    ({"metadata": {"name": "a"}}, False),
])
def test_only_ready_nodes_with_an_agent_are_scraped(node: dict[str, object],
                                                     expected: bool) -> None:
    assert metricsscraper.scrapable(node) is expected


def test_discovery_advertises_the_group_after_the_catalogues() -> None:
    docs = discovery.Discovery(Catalogue(), extra=metricsapi.RESOURCES)
    groups = orjson.loads(docs.api_group_list())["groups"]
    assert groups[-1]["name"] == "metrics.k8s.io"
    assert groups[-1]["preferredVersion"]["groupVersion"] == "metrics.k8s.io/v1beta1"
    listed = orjson.loads(docs.resource_list("metrics.k8s.io", "v1beta1") or b"{}")
    by_name = {r["name"]: r for r in listed["resources"]}
    assert by_name["nodes"]["kind"] == "NodeMetrics" and not by_name["nodes"]["namespaced"]
    assert by_name["pods"]["kind"] == "PodMetrics" and by_name["pods"]["namespaced"]
    assert by_name["pods"]["verbs"] == ["get", "list"]
    aggregated = orjson.loads(docs.aggregated(legacy=False,
                                              api_version="apidiscovery.k8s.io/v2"))
    item = next(i for i in aggregated["items"] if i["metadata"]["name"] == "metrics.k8s.io")
    assert {r["resource"] for r in item["versions"][0]["resources"]} == {"nodes", "pods"}
    assert b"metrics.k8s.io" not in discovery.Discovery(Catalogue()).api_group_list()


def test_metric_resolution_flag() -> None:
    from kubling.cli import server as cli_server

    parser = cli_server.build_parser()
    assert parser.parse_args([]).metric_resolution == 15.0
    assert parser.parse_args(["--metric-resolution", "2s"]).metric_resolution == 2.0
    assert parser.parse_args(["--metric-resolution", "1m30s"]).metric_resolution == 90.0
    for bad in ("500ms", "15", "soon"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--metric-resolution", bad])


def test_a_body_in_many_pieces_is_read_whole() -> None:
    """An agent's answer larger than one read arrives in pieces: all of it is decoded."""
    import asyncio

    import aiohttp
    from aiohttp import web

    from kubling.apiserver.metricsscraper import _read_body

    line = b'container_cpu_usage_seconds_total{container="c",namespace="n",pod="p"} 1.5 1\n'

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(40):
            await response.write(line * 50)
            await asyncio.sleep(0.001)
        await response.write_eof()
        return response

    async def scenario() -> bytes:
        app = web.Application()
        app.router.add_get("/metrics/resource", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with aiohttp.ClientSession() as session, session.get(
                    f"http://127.0.0.1:{port}/metrics/resource") as resp:
                return await _read_body(resp)
        finally:
            await runner.cleanup()

    assert asyncio.run(scenario()) == line * 50 * 40
