"""The scraper behind ``metrics.k8s.io``: every resolution, read each node agent's
``/metrics/resource`` and hand the points to the ``MetricsStorage``.

This is metrics-server's job, done inside the API server rather than as a Deployment:
the API server already holds the kubelet client certificate the agents trust (the one
``kubectl logs`` goes through) and the watch cache of Nodes, and what it computes is only
ever served by its own handlers. It therefore lives in ``kubling.apiserver``, not among
the controllers (which see the cluster only through the API and hold no such
certificate).

Nodes are scraped concurrently, each with a timeout below the resolution, so a dead node
delays nothing; one that fails is left out of that round (its pods vanish from the API,
as with metrics-server) and logged once until it answers again. Nodes that are not Ready,
and the simulator's nodes (which have no agent), are not asked at all.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterator

import aiohttp

from kubling.api.meta import Object
from kubling.apiserver import nodeproxy
from kubling.apiserver.metricsstorage import Batch, MetricsPoint, MetricsStorage
from kubling.apiserver.registry.registry import Registry

log = logging.getLogger("kubling.apiserver.metrics")

DEFAULT_RESOLUTION = 15.0
RESOURCE_PATH = "/metrics/resource"
#: Set by ``kubling server --simulated-nodes`` on its nodes (``kubling.node.simulated``,
#: which the API server may not import): they have no agent to scrape.
SIMULATED_LABEL = "kubling.io/simulated"
#: The longest a scrape may wait for one node (metrics-server's kubelet request timeout).
MAX_SCRAPE_TIMEOUT = 10.0
#: The most of a ``/metrics/resource`` body read (a node with hundreds of pods is ~100 KiB).
MAX_BODY = 16 * 1024 * 1024


# -- the Prometheus text format ------------------------------------------------------------


class ParseError(ValueError):
    """A line of the exposition that is not ``name{labels} value [timestamp]``."""


def parse_samples(text: str) -> Iterator[tuple[str, dict[str, str], float, int | None]]:
    """(name, labels, value, timestamp in ms or None) of each sample line; comments and
    blank lines are skipped. Only what ``/metrics/resource`` uses of text format 0.0.4."""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            yield _sample(line)
        except (ValueError, IndexError) as err:
            raise ParseError(f"line {number}: {err}: {line[:200]!r}") from None


def _sample(line: str) -> tuple[str, dict[str, str], float, int | None]:
    brace = line.find("{")
    space = line.find(" ")
    labels: dict[str, str] = {}
    if brace != -1 and (space == -1 or brace < space):
        name = line[:brace]
        labels, end = _labels(line, brace + 1)
        rest = line[end:].split()
    else:
        name, *rest = line.split()
    if not name or not rest or len(rest) > 2:
        raise ValueError("expected a name, a value and an optional timestamp")
    value = float(rest[0])  # Go's ParseFloat spellings: 1e3, NaN, +Inf
    stamp = int(rest[1]) if len(rest) == 2 else None
    return name, labels, value, stamp


def _labels(line: str, at: int) -> tuple[dict[str, str], int]:
    """The ``key="value",...}`` starting at ``at``; returns them and the index after ``}``."""
    labels: dict[str, str] = {}
    while True:
        while line[at] in " ,":
            at += 1
        if line[at] == "}":
            return labels, at + 1
        eq = line.index("=", at)
        key = line[at:eq].strip()
        if line[eq + 1] != '"':
            raise ValueError(f"label {key} has no quoted value")
        at, chars = eq + 2, []
        while line[at] != '"':
            if line[at] == "\\":
                at += 1
                chars.append({"n": "\n", "\\": "\\", '"': '"'}.get(line[at], "\\" + line[at]))
            else:
                chars.append(line[at])
            at += 1
        labels[key] = "".join(chars)
        at += 1


def decode(text: str, node: str, *, now_ns: int) -> Batch:
    """One node's ``/metrics/resource`` as a Batch. Points lacking CPU or memory, or
    reporting zero for either (a container just made, a cgroup already gone), are dropped,
    as metrics-server drops incomplete points."""
    node_cpu: tuple[int, int] | None = None
    node_memory: int | None = None
    cpu: dict[tuple[str, str, str], tuple[int, int]] = {}
    memory: dict[tuple[str, str, str], int] = {}
    started: dict[tuple[str, str, str], int] = {}
    for name, labels, value, stamp in parse_samples(text):
        if not math.isfinite(value) or value < 0:
            continue
        at = stamp * 1_000_000 if stamp is not None else now_ns
        key = (labels.get("namespace", ""), labels.get("pod", ""), labels.get("container", ""))
        if name == "node_cpu_usage_seconds_total":
            node_cpu = (round(value * 1e9), at)
        elif name == "node_memory_working_set_bytes":
            node_memory = int(value)
        elif name == "container_cpu_usage_seconds_total":
            cpu[key] = (round(value * 1e9), at)
        elif name == "container_memory_working_set_bytes":
            memory[key] = int(value)
        elif name == "container_start_time_seconds":
            started[key] = round(value * 1e9)
    batch = Batch()
    if node_cpu is not None and node_cpu[0] > 0 and node_memory:
        batch.nodes[node] = MetricsPoint(node_cpu[1], node_cpu[0], node_memory)
    for key, (cpu_ns, at) in cpu.items():
        namespace, pod, container = key
        working = memory.get(key)
        if not (namespace and pod and container) or cpu_ns <= 0 or not working:
            continue
        batch.pods.setdefault((namespace, pod), {})[container] = MetricsPoint(
            at, cpu_ns, working, started.get(key, 0))
    return batch


# -- the loop ------------------------------------------------------------------------------


def scrapable(node: Object) -> bool:
    """A Ready node with an agent: the simulator's nodes and NotReady ones are skipped."""
    md = node.get("metadata") or {}
    if (md.get("labels") or {}).get(SIMULATED_LABEL) == "true":
        return False
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


class Scraper:
    """Scrapes every ``resolution`` seconds into ``storage`` until cancelled."""

    def __init__(self, registry: Registry, storage: MetricsStorage,
                 connector: nodeproxy.KubeletConnector, *,
                 resolution: float = DEFAULT_RESOLUTION) -> None:
        self.registry = registry
        self.storage = storage
        self.connector = connector
        self.resolution = resolution
        self.timeout = min(resolution * 0.9, MAX_SCRAPE_TIMEOUT)
        nodes = registry.catalogue.lookup("", "v1", "nodes")
        assert nodes is not None
        self._nodes = registry.store(nodes)
        #: Nodes whose last scrape failed: logged when they start failing, not every round.
        self._failing: set[str] = set()

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                started = time.monotonic()
                try:
                    await self.scrape(session)
                except Exception:  # never let one bad round end the loop
                    log.exception("metrics scrape failed")
                await asyncio.sleep(max(0.0, self.resolution - (time.monotonic() - started)))

    async def scrape(self, session: aiohttp.ClientSession) -> None:
        """One round: every scrapable node at once, then one ``store`` of the lot."""
        nodes = [c.obj for c in self._nodes.cache.snapshot("") if scrapable(c.obj)]
        self._failing &= {n["metadata"]["name"] for n in nodes}  # gone or NotReady: forget
        batches = await asyncio.gather(*(self._scrape_node(session, n) for n in nodes))
        batch = Batch()
        for found in batches:
            if found is not None:
                batch.merge(found)
        self.storage.store(batch)

    async def _scrape_node(self, session: aiohttp.ClientSession, node: Object) -> Batch | None:
        name = str(node["metadata"]["name"])
        host, port = nodeproxy.kubelet_address(node)
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        url = f"https://{netloc}{RESOURCE_PATH}"
        try:
            async with session.get(url, ssl=self.connector.context(skip_verify=False)) as resp:
                if resp.status != 200:
                    raise ValueError(f'request failed, status: "{resp.status} {resp.reason}"')
                body = await _read_body(resp)
            batch = decode(body.decode(errors="replace"), name, now_ns=time.time_ns())
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            if name not in self._failing:
                self._failing.add(name)
                log.warning("metrics: cannot scrape node %s: %s", name,
                            _why(url, netloc, err))
            return None
        if name in self._failing:
            self._failing.discard(name)
            log.info("metrics: node %s answers again", name)
        return batch


def _why(url: str, netloc: str, err: Exception) -> str:
    """The failure as Go words it (``Get "https://...": dial tcp ...: connection refused``),
    the same text ``kubectl logs`` shows for an unreachable agent."""
    if isinstance(err, aiohttp.ClientError):
        return nodeproxy._unreachable(url, netloc, err).message
    if isinstance(err, TimeoutError):
        return f'Get "{url}": context deadline exceeded'
    return f"{url}: {err}"  # a bad status or an unparsable document


async def _read_body(resp: aiohttp.ClientResponse) -> bytes:
    """The whole body, at most ``MAX_BODY`` bytes (``read(n)`` returns what is buffered,
    which for a body of several TLS records is only its beginning)."""
    body = bytearray()
    async for chunk in resp.content.iter_any():
        body += chunk
        if len(body) > MAX_BODY:
            raise ValueError(f"the answer is larger than {MAX_BODY} bytes")
    return bytes(body)
