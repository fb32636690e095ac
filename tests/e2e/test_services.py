"""Services that route, end to end: real pods behind ClusterIP, NodePort and LoadBalancer
Services, the nftables proxy, the cluster DNS and ServiceLB, driven with the real kubectl.

One agent-enabled server for the module and one Deployment ``web`` of three busybox httpd
pods that serve their own pod name at ``/``, ``<name> <client address>`` at ``/cgi-bin/ip``
(busybox httpd's CGI sets ``REMOTE_ADDR``), an echo server on port 9000 (``nc -ll -e cat``),
and a readiness file that ``/cgi-bin/down`` and ``/cgi-bin/up`` remove and restore. Client
pods run their requests and print the answers, read back with ``kubectl logs``. The last
two tests restart the server and then clean the host, so they run last, in that order.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_fixture import AgentServer, agent_server, link_exists, nft_table_exists, wait_for
from tests.server_fixture import REPO, KublingServer

IMAGE = {"image": "busybox:latest", "imagePullPolicy": "IfNotPresent"}

#: The backend: its name at /, "<name> <peer>" at /cgi-bin/ip, readiness at /ready.html.
WEB_SCRIPT = r"""
mkdir -p /www/cgi-bin
hostname > /www/index.html
touch /www/ready.html
printf '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n%%s %%s\\n" "$(cat /www/index.html)" "$REMOTE_ADDR"\n' > /www/cgi-bin/ip
printf '#!/bin/sh\nrm -f /www/ready.html\nprintf "Content-Type: text/plain\\r\\n\\r\\ndown\\n"\n' > /www/cgi-bin/down
printf '#!/bin/sh\ntouch /www/ready.html\nprintf "Content-Type: text/plain\\r\\n\\r\\nup\\n"\n' > /www/cgi-bin/up
chmod +x /www/cgi-bin/*
nc -ll -p 9000 -e cat &
exec httpd -f -p 8080 -h /www
"""

WEB = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
    "spec": {
        "replicas": 3, "selector": {"matchLabels": {"app": "web"}},
        "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
            "terminationGracePeriodSeconds": 10,
            "containers": [{
                "name": "web", **IMAGE, "command": ["sh", "-c", WEB_SCRIPT],
                "ports": [{"containerPort": 8080, "name": "http"},
                          {"containerPort": 9000, "name": "echo"}],
                "readinessProbe": {"httpGet": {"path": "/ready.html", "port": 8080},
                                   "periodSeconds": 1, "timeoutSeconds": 1,
                                   "failureThreshold": 1},
                # What users configure so that proxies stop sending before the pod stops.
                "lifecycle": {"preStop": {"exec": {"command": ["sleep", "2"]}}},
            }]}}}}


def service(name: str, *, svc_type: str = "ClusterIP", selector: str = "web",
            ports: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"type": svc_type, "selector": {"app": selector},
                     "ports": ports or [{"name": "http", "port": 80, "targetPort": "http"}],
                     **spec}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    with agent_server(tmp_path_factory.mktemp("services")) as srv:
        apply(srv, WEB, service("web", ports=[
            {"name": "http", "port": 80, "targetPort": "http"},
            {"name": "echo", "port": 9000, "targetPort": "echo"}]))
        srv.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
        wait_for(lambda: len(ready_endpoints(srv, "web")) == 3, 20, "three ready endpoints")
        yield srv


# -- helpers -----------------------------------------------------------------------------


def apply(srv: KublingServer, *objects: dict[str, Any]) -> None:
    srv.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                      "items": list(objects)}))


def get(srv: KublingServer, *args: str) -> Any:
    return json.loads(srv.kubectl("get", *args, "-o", "json").stdout)


def web_pods(srv: KublingServer) -> dict[str, str]:
    """Running, not terminating ``web`` pods: name → pod IP."""
    items = get(srv, "pods", "-l", "app=web")["items"]
    return {p["metadata"]["name"]: p["status"].get("podIP", "") for p in items
            if p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")}


def ready_endpoints(srv: KublingServer, name: str) -> list[str]:
    slices = get(srv, "endpointslices", "-l", f"kubernetes.io/service-name={name}")["items"]
    return sorted(a for s in slices for e in s.get("endpoints") or []
                  if (e.get("conditions") or {}).get("ready") for a in e["addresses"])


def node_ip(srv: KublingServer) -> str:
    node = get(srv, "nodes")["items"][0]
    return str(next(a["address"] for a in node["status"]["addresses"]
                    if a["type"] == "InternalIP"))


def http(url: str, timeout: float = 3) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body: bytes = resp.read()
        return body.decode().strip()


def try_http(url: str) -> str:
    with contextlib.suppress(OSError):
        return http(url)
    return ""


def answers(url: str, count: int) -> list[str]:
    return [try_http(url) for _ in range(count)]


def all_answer(url: str, count: int) -> list[str]:
    """``count`` answers, or [] if any request failed (for ``wait_for``)."""
    found = answers(url, count)
    return found if all(found) else []


def run_client(srv: KublingServer, name: str, script: str, *, timeout: float = 60) -> str:
    """Run ``script`` in a busybox pod to completion; its output (``kubectl logs``)."""
    apply(srv, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "main", **IMAGE,
                                         "command": ["sh", "-c", script]}]}})

    def finished() -> bool:
        phase = get(srv, "pod", name).get("status", {}).get("phase")
        return phase in ("Succeeded", "Failed")

    wait_for(finished, timeout, f"client pod {name} to finish")
    text = srv.kubectl("logs", name).stdout
    srv.kubectl("delete", "pod", name, "--wait=false")
    return text


def svc_field(srv: KublingServer, name: str) -> dict[str, Any]:
    return dict(get(srv, "service", name))


# -- ClusterIP ---------------------------------------------------------------------------


def test_cluster_ip_answers_from_every_pod_from_the_host_and_from_a_pod(
        server: AgentServer) -> None:
    names = set(web_pods(server))
    assert len(names) == 3
    cluster_ip = svc_field(server, "web")["spec"]["clusterIP"]
    seen = set(answers(f"http://{cluster_ip}/", 60))
    assert seen == names, seen
    out = run_client(server, "all-three", "for i in $(seq 60); do timeout 5 wget -qO- "
                     "http://web/; done")
    assert set(out.split()) == names, out


def test_describe_service_lists_its_endpoints(server: AgentServer) -> None:
    described = server.kubectl("describe", "service", "web").stdout
    line = next(x for x in described.splitlines() if x.startswith("Endpoints:"))
    for ip in web_pods(server).values():
        assert f"{ip}:8080" in line or f"{ip}:9000" in line, described
    assert "TargetPort:" in described and "http/TCP" in described


# -- NodePort and LoadBalancer -----------------------------------------------------------


def test_node_port_and_load_balancer_answer_on_the_node_address(server: AgentServer) -> None:
    address = node_ip(server)
    names = set(web_pods(server))
    apply(server, service("web-np", svc_type="NodePort"))
    node_port = svc_field(server, "web-np")["spec"]["ports"][0]["nodePort"]
    seen = set(wait_for(lambda: all_answer(f"http://{address}:{node_port}/", 30), 15,
                        "the NodePort"))
    assert seen == names, seen
    # As the course does it: expose, then curl the EXTERNAL-IP.
    server.kubectl("expose", "deployment", "web", "--name=web-lb", "--type=LoadBalancer",
                   "--port=18080", "--target-port=8080")

    def external_ip() -> str:
        row = server.kubectl("get", "service", "web-lb", "--no-headers").stdout.split()
        return row[3] if row and row[3] != "<pending>" else ""

    assert wait_for(external_ip, 15, "the EXTERNAL-IP") == address
    status = svc_field(server, "web-lb")["status"]["loadBalancer"]
    assert status == {"ingress": [{"ip": address, "ipMode": "VIP"}]}
    seen = set(wait_for(lambda: all_answer(f"http://{address}:18080/", 30), 15,
                        "the LoadBalancer"))
    assert seen == names, seen
    # A second load balancer on the same port has no node to run on: pending, and why.
    apply(server, service("web-lb2", svc_type="LoadBalancer",
                          ports=[{"port": 18080, "targetPort": 8080}]))

    def warned() -> str:
        events = get(server, "events", "--field-selector", "involvedObject.name=web-lb2")
        return next((e["message"] for e in events["items"]
                     if e["reason"] == "UnAvailableLoadBalancer"), "")

    assert "port 18080/TCP is used by service default/web-lb" in wait_for(
        warned, 15, "the UnAvailableLoadBalancer event")
    assert server.kubectl("get", "service", "web-lb2", "--no-headers").stdout.split()[3] == \
        "<pending>"
    assert try_http(f"http://{address}:18080/") in names  # still the first one's
    server.kubectl("delete", "service", "web-np", "web-lb", "web-lb2")


# -- readiness, affinity, source addresses -----------------------------------------------


def test_a_pod_failing_readiness_leaves_the_rotation_and_comes_back(
        server: AgentServer) -> None:
    pods = web_pods(server)
    flaky, ip = sorted(pods.items())[0]
    cluster_ip = svc_field(server, "web")["spec"]["clusterIP"]
    assert http(f"http://{ip}:8080/cgi-bin/down") == "down"
    try:
        wait_for(lambda: ip not in ready_endpoints(server, "web"), 15, f"{flaky} to be unready")
        time.sleep(0.3)  # the proxy's sync
        seen = set(answers(f"http://{cluster_ip}/", 40))
        assert seen == set(pods) - {flaky}, seen
    finally:
        assert http(f"http://{ip}:8080/cgi-bin/up") == "up"
    wait_for(lambda: ip in ready_endpoints(server, "web"), 15, f"{flaky} to be ready again")
    wait_for(lambda: flaky in answers(f"http://{cluster_ip}/", 20), 10,
             f"{flaky} back in the rotation")


def test_client_ip_session_affinity_sticks(server: AgentServer) -> None:
    apply(server, service("web-sticky", sessionAffinity="ClientIP",
                          sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}}))
    cluster_ip = svc_field(server, "web-sticky")["spec"]["clusterIP"]
    wait_for(lambda: try_http(f"http://{cluster_ip}/"), 15, "the sticky service")
    seen = answers(f"http://{cluster_ip}/", 30)
    assert len(set(seen)) == 1 and seen[0] in web_pods(server), seen
    out = run_client(server, "sticky", "for i in $(seq 20); do timeout 5 wget -qO- "
                     "http://web-sticky/; done")
    assert len(set(out.split())) == 1, out
    server.kubectl("delete", "service", "web-sticky")


@contextlib.contextmanager
def outside_client(tag: str) -> Iterator[str]:
    """A network namespace standing for a machine outside the cluster: routed to the host
    through a veth (10.255.77.0/30), so its packets arrive at the node address from a
    source that is neither local nor in the pod network. Yields its name."""
    ns, host_end, peer = f"kubling-e2e-{tag}", f"kublinge2e{tag}h", f"kublinge2e{tag}c"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    try:
        ip("netns", "add", ns)
        ip("link", "add", host_end, "type", "veth", "peer", "name", peer, "netns", ns)
        ip("addr", "add", "10.255.77.1/30", "dev", host_end)
        ip("link", "set", host_end, "up")
        ip("-n", ns, "addr", "add", "10.255.77.2/30", "dev", peer)
        ip("-n", ns, "link", "set", peer, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "route", "add", "default", "via", "10.255.77.1")
        yield ns
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def peer(answer: str) -> str:
    """The client address in a ``/cgi-bin/ip`` answer (httpd listens on an IPv6 socket, so
    an IPv4 peer reads ``[::ffff:a.b.c.d]``)."""
    return answer.split()[1].removeprefix("[::ffff:").removesuffix("]")


def fetch_in(ns: str, url: str) -> str:
    result = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                             "import sys, urllib.request; print(urllib.request.urlopen("
                             "sys.argv[1], timeout=3).read().decode().strip())", url],
                            capture_output=True, text=True, check=False, timeout=20)
    return result.stdout.strip()


def test_external_traffic_policy_local_keeps_the_client_address(server: AgentServer) -> None:
    address = node_ip(server)
    pods = web_pods(server)
    apply(server, service("web-local", svc_type="NodePort", externalTrafficPolicy="Local"),
          service("web-cluster", svc_type="NodePort"))
    local = svc_field(server, "web-local")["spec"]["ports"][0]["nodePort"]
    cluster = svc_field(server, "web-cluster")["spec"]["ports"][0]["nodePort"]
    with outside_client("x") as ns:
        url = f"http://{address}:{{}}/cgi-bin/ip"
        seen = wait_for(lambda: fetch_in(ns, url.format(local)), 15, "the Local node port")
        assert seen.split()[0] in pods and peer(seen) == "10.255.77.2", seen  # kept
        seen = wait_for(lambda: fetch_in(ns, url.format(cluster)), 15, "the Cluster node port")
        assert peer(seen) != "10.255.77.2", seen  # masqueraded: replies come back here
    # From a pod: Local keeps the pod's address too; Cluster masquerades it.
    out = run_client(server, "source", f"hostname -i; timeout 5 wget -qO- "
                     f"http://{address}:{local}/cgi-bin/ip; timeout 5 wget -qO- "
                     f"http://{address}:{cluster}/cgi-bin/ip")
    own, via_local, via_cluster = out.strip().splitlines()
    assert peer(via_local) == own.strip(), out
    assert peer(via_cluster) != own.strip(), out
    server.kubectl("delete", "service", "web-local", "web-cluster")


# -- DNS ---------------------------------------------------------------------------------


def test_dns_answers_every_record_type_from_a_pod(server: AgentServer) -> None:
    member = {"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": "member", "labels": {"app": "member"}},
              "spec": {"hostname": "h1", "subdomain": "members",
                       "terminationGracePeriodSeconds": 1,
                       "containers": [{"name": "main", **IMAGE,
                                       "command": ["sh", "-c", "exec httpd -f -p 8080"],
                                       "ports": [{"containerPort": 8080, "name": "http"}]}]}}
    apply(server, member,
          service("members", selector="member", clusterIP="None"),
          {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
           "spec": {"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}})
    wait_for(lambda: ready_endpoints(server, "members"), 20, "the member's endpoint")
    member_ip = get(server, "pod", "member")["status"]["podIP"]
    cluster_ip = svc_field(server, "web")["spec"]["clusterIP"]
    script = "; ".join(f"echo '== {label}'; nslookup {args}" for label, args in [
        ("FQDN", "web.default.svc.cluster.local"),
        ("HEADLESS", "members.default.svc.cluster.local"),
        ("HOSTNAME", "h1.members.default.svc.cluster.local"),
        ("SRV", "-type=srv _http._tcp.web.default.svc.cluster.local"),
        ("SRV-HEADLESS", "-type=srv _http._tcp.members.default.svc.cluster.local"),
        ("PTR", cluster_ip),
        ("POD", f"{member_ip.replace('.', '-')}.default.pod.cluster.local"),
        ("CNAME", "ext.default.svc.cluster.local"),
        ("MISSING", "nothing-here.default.svc.cluster.local"),
    ])
    out = run_client(server, "dns", script)
    sections = {part.split("\n", 1)[0].strip(): part for part in out.split("== ")[1:]}
    assert cluster_ip in sections["FQDN"], out
    assert member_ip in sections["HEADLESS"] and member_ip in sections["HOSTNAME"], out
    assert "service = 0 " in sections["SRV"] and "80 web.default.svc.cluster.local" in \
        sections["SRV"], out
    assert "8080 h1.members.default.svc.cluster.local" in sections["SRV-HEADLESS"], out
    assert "web.default.svc.cluster.local" in sections["PTR"], out
    assert member_ip in sections["POD"], out
    assert "canonical name = web.default.svc.cluster.local" in sections["CNAME"], out
    assert cluster_ip in sections["CNAME"], out
    assert "NXDOMAIN" in sections["MISSING"], out
    server.kubectl("delete", "pod", "member", "--wait=false")
    server.kubectl("delete", "service", "members", "ext")


# -- rolling update, restart, cleanup ----------------------------------------------------


def test_a_rolling_update_loses_no_request(server: AgentServer) -> None:
    before = set(web_pods(server))
    apply(server, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "loop"},
                   "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                            "containers": [{"name": "main", **IMAGE, "command": [
                                "sh", "-c", "while true; do if body=$(timeout 5 wget -qO- "
                                "http://web/); then echo \"ok $body\"; else echo FAIL; fi; "
                                "sleep 0.05; done"]}]}})

    def count() -> tuple[int, str]:
        text = server.kubectl("logs", "loop", check=False).stdout
        return text.count("ok "), text

    wait_for(lambda: count()[0] >= 10, 30, "the client loop to run")
    server.kubectl("rollout", "restart", "deployment/web")
    server.kubectl("rollout", "status", "deployment/web", "--timeout=120s", timeout=130)
    wait_for(lambda: not (set(web_pods(server)) & before) and
             len(ready_endpoints(server, "web")) == 3, 30, "the old pods to go")
    time.sleep(1)
    after = set(web_pods(server))
    served, text = count()
    server.kubectl("delete", "pod", "loop", "--wait=false")
    assert "FAIL" not in text, text
    answered = {line.split()[1] for line in text.splitlines() if line.startswith("ok ")}
    assert before <= answered and after <= answered, (before, after, answered)
    assert served >= 20


def test_established_flows_survive_a_server_restart(server: AgentServer) -> None:
    cluster_ip = svc_field(server, "web")["spec"]["clusterIP"]
    with socket.create_connection((cluster_ip, 9000), timeout=5) as flow:
        flow.sendall(b"before\n")
        assert flow.recv(100) == b"before\n"
        server.stop()
        assert nft_table_exists("kubling")  # the table outlives the proxy
        server.start()
        wait_for(lambda: "Ready" in server.kubectl("get", "nodes", "--no-headers",
                                                   check=False).stdout, 20, "the node")
        time.sleep(1.0)  # the proxy's first full sync after the restart
        flow.sendall(b"after\n")
        assert flow.recv(100) == b"after\n"
    names = set(web_pods(server))
    wait_for(lambda: set(answers(f"http://{cluster_ip}/", 40)) == names, 20,
             "every pod answering after the restart")


def test_cleanup_removes_what_kubling_made_on_the_host(server: AgentServer) -> None:
    runtime = server.data_dir / "runtime" / "runc"
    assert web_pods(server) and link_exists("kubling0") and nft_table_exists("kubling")
    server.stop()
    result = subprocess.run([sys.executable, "-m", "kubling.cli.main", "server", "--cleanup",
                             "--data-dir", str(server.data_dir)], capture_output=True,
                            text=True, cwd=REPO, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "nftables table: ip kubling" in result.stderr, result.stderr
    assert not nft_table_exists("kubling") and not link_exists("kubling0")
    listing = subprocess.run(["runc", "--root", str(runtime), "list", "-q"],
                             capture_output=True, text=True, check=False).stdout
    assert listing.split() == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f" {server.data_dir}/" not in mounts
    netns = Path("/run/netns")
    assert not [n for n in (netns.iterdir() if netns.is_dir() else [])
                if n.name.startswith("kubling-") and len(n.name) == 20]
    nat = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True,
                         check=False).stdout
    assert 'name: \\"kubling\\"' not in nat
