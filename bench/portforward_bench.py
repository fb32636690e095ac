"""Port-forward throughput and exec latency through the API server to the node agent, with
the real kubectl.

    .venv/bin/python bench/portforward_bench.py [--megabytes 200] [--rounds 20]

Starts an agent-enabled ``kubling server`` (through ``tests.agent_fixture``, which holds
the host's agent slot), runs a busybox httpd serving a file of ``--megabytes``, and prints:

- port-forward throughput in MB/s with one stream and with ten at once (the sum), for
  both transports (WebSocket tunnel, raw SPDY);
- ``kubectl exec pod -- cat <file>`` throughput, both transports;
- ``kubectl exec pod -- true`` wall time (a whole kubectl run: process start, discovery
  cache, upgrade, runc exec);
- the round trip of one line through an open ``kubectl exec -i pod -- cat`` session (the
  stream path alone: kubectl → API server → agent → runc → cat and back).

Needs root, runc, conmon and the CNI plugins, as the agent does.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from tests.agent_fixture import AgentServer, agent_server, wait_for

TRANSPORTS = {"websocket": {}, "spdy": {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}}


def kubectl_argv(server: AgentServer, *args: str) -> list[str]:
    return ["kubectl", "--kubeconfig", str(server.kubeconfig), "--cache-dir",
            str(server.cache_dir), *args]


def start_httpd(server: AgentServer, megabytes: int) -> str:
    script = (f"mkdir /www && dd if=/dev/urandom of=/www/f bs=1M count={megabytes} "
              "2>/dev/null && touch /www/ready && httpd -f -p 8080 -h /www")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bench"},
           "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
               "name": "httpd", "image": "busybox:latest", "imagePullPolicy": "IfNotPresent",
               "command": ["sh", "-c", script]}]}}
    server.kubectl("apply", "-f", "-", input=json.dumps(pod))
    wait_for(lambda: server.kubectl("exec", "bench", "--", "test", "-f", "/www/ready",
                                    check=False).returncode == 0, 120, "the file")
    return "bench"


def throughput(server: AgentServer, transport: str, streams: int, megabytes: int) -> float:
    env = {**os.environ, **TRANSPORTS[transport]}
    process = subprocess.Popen(kubectl_argv(server, "port-forward", "--address", "127.0.0.1",
                                            "pod/bench", ":8080"),
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                               text=True)
    try:
        assert process.stdout is not None
        match = re.search(r":(\d+) ->", process.stdout.readline())
        assert match is not None, "port-forward did not start"
        url = f"http://127.0.0.1:{match.group(1)}/f"

        def fetch(_: int) -> int:
            with urllib.request.urlopen(url, timeout=300) as response:
                total = 0
                while chunk := response.read(1 << 20):
                    total += len(chunk)
                return total

        fetch(0)  # warm up: the connection to the agent, the file in the page cache
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(streams) as pool:
            moved = sum(pool.map(fetch, range(streams)))
        elapsed = time.monotonic() - started
        assert moved == streams * megabytes * 1024 * 1024
        return moved / elapsed / 1e6
    finally:
        process.terminate()
        process.wait(10)


def exec_throughput(server: AgentServer, megabytes: int, transport: str) -> float:
    """MB/s of ``kubectl exec pod -- cat <file>`` (stdout through the stream)."""
    env = {**os.environ, **({"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}
                            if transport == "spdy" else {})}
    started = time.monotonic()
    out = subprocess.run(kubectl_argv(server, "exec", "bench", "--", "cat", "/www/f"),
                         capture_output=True, check=True, env=env).stdout
    elapsed = time.monotonic() - started
    assert len(out) == megabytes * 1024 * 1024
    return len(out) / elapsed / 1e6


def exec_wall_times(server: AgentServer, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.monotonic()
        server.kubectl("exec", "bench", "--", "true")
        times.append(time.monotonic() - started)
    return times


def stream_round_trips(server: AgentServer, rounds: int) -> list[float]:
    process = subprocess.Popen(kubectl_argv(server, "exec", "-i", "bench", "--", "cat"),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert process.stdin is not None and process.stdout is not None
    times = []
    try:
        for i in range(rounds + 1):
            line = f"ping {i}\n".encode()
            started = time.monotonic()
            process.stdin.write(line)
            received = b""
            while len(received) < len(line):
                received += process.stdout.read(len(line) - len(received))
            if i:  # the first also waits for the session to start
                times.append(time.monotonic() - started)
    finally:
        process.stdin.close()
        process.wait(10)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubling-pf-bench-") as base, \
            agent_server(Path(base)) as server:
        start_httpd(server, args.megabytes)
        for transport in TRANSPORTS:
            for streams in (1, 10):
                rate = throughput(server, transport, streams, args.megabytes)
                print(f"port-forward {transport:9} {streams:2} stream(s): {rate:7.1f} MB/s")
        for transport in TRANSPORTS:
            rate = exec_throughput(server, args.megabytes, transport)
            print(f"exec stdout {transport:9} (cat of the file): {rate:7.1f} MB/s")
        walls = exec_wall_times(server, args.rounds)
        print(f"kubectl exec -- true (whole kubectl run): p50 "
              f"{statistics.median(walls) * 1000:.0f} ms, max {max(walls) * 1000:.0f} ms")
        trips = stream_round_trips(server, args.rounds * 10)
        print(f"exec stream round trip (one line through cat): p50 "
              f"{statistics.median(trips) * 1000:.2f} ms, p99 "
              f"{sorted(trips)[int(len(trips) * 0.99) - 1] * 1000:.2f} ms")


if __name__ == "__main__":
    main()
