"""The pod network sandbox against the real CNI plugins, in real network namespaces.

Nothing is mocked: each test gets its own bridge (``kubling-t<hex>``), its own /24 in
10.254.0.0/16, and its own configuration, cache and IPAM directories, so it never touches a
real ``kubling0``. The fixture tears everything down by running DEL, the way the node agent
will, and then fails the test if any iptables rule for its CIDR, veth or namespace is left.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kubling.network import bridgequirk, netns
from kubling.network.cni import (
    CNI,
    CNIError,
    NetworkConfigList,
    PortMapping,
    Result,
    ensure_default_config,
    load_network_config,
)

PLUGINS = Path("/usr/lib/cni")


def run(*cmd: str, check: bool = True) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=20).stdout


def nat_rules_mentioning(text: str) -> list[str]:
    rules = run("iptables-save", "-t", "nat") + run("ip6tables-save", "-t", "nat")
    return [line for line in rules.splitlines() if text in line]


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def wait_until(predicate: Any, timeout: float = 3.0) -> bool:
    """The kernel frees a dead namespace's devices asynchronously; give it a moment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


@dataclass
class NetFixture:
    """One test's private network: bridge, CIDR, directories, and what it made."""

    tag: str
    bridge: str
    cidr: ipaddress.IPv4Network
    base: Path
    namespaces: list[str] = field(default_factory=list)

    @property
    def conf_dir(self) -> Path:
        return self.base / "net.d"

    @property
    def cache_dir(self) -> Path:
        return self.base / "cache"

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def lease_dir(self) -> Path:
        return self.data_dir / "cni" / "networks" / "kubling"

    @property
    def cidr_prefix(self) -> str:
        """The text every rule about this network contains (``10.254.N.``)."""
        return str(self.cidr.network_address).rsplit(".", 1)[0] + "."

    def cni(self) -> CNI:
        return CNI(self.conf_dir, cache_dir=self.cache_dir)

    def sandbox(self, suffix: str) -> tuple[str, Path]:
        """A fresh namespace; its name is also the sandbox's container ID."""
        name = f"kubling-{self.tag}-{suffix}"
        path = netns.create(name)
        self.namespaces.append(name)
        return name, path

    async def add(self, cni: CNI, suffix: str, **kwargs: Any) -> tuple[str, Path, Result]:
        name, path = self.sandbox(suffix)
        result = await cni.add(name, path, pod_namespace="default", pod_name=f"pod-{suffix}",
                               pod_uid=f"uid-{self.tag}-{suffix}", **kwargs)
        return name, path, result


@pytest.fixture
def net(tmp_path: Path) -> Iterator[NetFixture]:
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root: run the tests as root")
    tag = "t" + secrets.token_hex(3)
    test_net = NetFixture(tag=tag, bridge=f"kubling-{tag}",
                       cidr=ipaddress.IPv4Network(f"10.254.{random.randrange(256)}.0/24"),
                       base=tmp_path)
    ensure_default_config(test_net.conf_dir, str(test_net.cidr), data_dir=test_net.data_dir,
                          bridge=test_net.bridge)
    try:
        yield test_net
    finally:
        _tear_down(test_net)


def _tear_down(test_net: NetFixture) -> None:
    """DEL whatever the test left attached, then check that nothing of it survives."""
    cni = test_net.cni()
    cached = sorted(p.stem for p in test_net.cache_dir.glob("*.json"))

    async def detach() -> None:
        for container_id in cached:
            path = netns.path(container_id) if container_id.startswith("kubling-") else None
            await cni.delete(container_id, path)

    ports: list[Any] = []
    try:
        asyncio.run(detach())
        if link_exists(test_net.bridge):
            ports = json.loads(run("ip", "-j", "link", "show", "master", test_net.bridge))
    finally:
        for name in test_net.namespaces:
            netns.delete(name)
        run("ip", "link", "del", test_net.bridge, check=False)
    assert not ports, f"veths left on {test_net.bridge}: {[p['ifname'] for p in ports]}"
    leftovers = nat_rules_mentioning(test_net.cidr_prefix)
    assert not leftovers, f"iptables rules left for {test_net.cidr}: {leftovers}"
    assert not [n for n in netns.list_kubling() if test_net.tag in n]


def in_netns(name: str, code: str, timeout: float = 10.0) -> str:
    """Run Python code inside a namespace (``ip netns exec``, as an operator would)."""
    return subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c", code],
                          capture_output=True, text=True, check=True, timeout=timeout).stdout


SERVER = """
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", {port})); srv.listen(); print("ready", flush=True)
for _ in range({count}):
    conn, peer = srv.accept()
    conn.sendall(("hello " + peer[0]).encode()); conn.close()
"""

CLIENT = """
import socket
with socket.create_connection(("{host}", {port}), timeout=5) as s:
    print(s.recv(100).decode())
"""


class Listener:
    """A TCP server in a pod that greets each client with the address it came from."""

    def __init__(self, namespace: str, port: int, count: int) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-c",
             SERVER.format(port=port, count=count)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def connect_from_host(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=5) as conn:
        return conn.recv(100).decode()


def addresses_in(namespace: str, ifname: str = "eth0") -> list[str]:
    links = json.loads(run("ip", "-n", namespace, "-j", "addr", "show", "dev", ifname))
    return [f"{a['local']}/{a['prefixlen']}" for link in links for a in link["addr_info"]
            if a["family"] == "inet"]


def add_plugin(net: NetFixture, plugin: dict[str, Any]) -> None:
    """Append a plugin to the test network's list."""
    conf = net.conf_dir / "10-kubling.conflist"
    doc = json.loads(conf.read_text())
    doc["plugins"].append(plugin)
    conf.write_text(json.dumps(doc))


def host_veth(result: Result, bridge: str) -> str:
    names = [i.name for i in result.interfaces if not i.sandbox and i.name != bridge]
    assert len(names) == 1, result.interfaces
    return names[0]


# -- configuration ------------------------------------------------------------------------


def test_default_config_is_a_valid_list(tmp_path: Path) -> None:
    path = ensure_default_config(tmp_path / "net.d", "10.42.0.0/24", data_dir=tmp_path / "data")
    assert path == tmp_path / "net.d" / "10-kubling.conflist"
    config = load_network_config(tmp_path / "net.d")
    assert (config.name, config.cni_version) == ("kubling", "1.0.0")
    assert [p["type"] for p in config.plugins] == ["bridge", "portmap"]
    bridge, portmap = config.plugins
    assert bridge["bridge"] == "kubling0" and bridge["mtu"] == 1500
    assert bridge["isGateway"] and bridge["ipMasq"] and bridge["hairpinMode"]
    assert bridge["ipam"] == {"type": "host-local", "ranges": [[{"subnet": "10.42.0.0/24"}]],
                              "routes": [{"dst": "0.0.0.0/0"}],
                              "dataDir": str(tmp_path / "data" / "cni" / "networks")}
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}


def test_default_config_never_overwrites(tmp_path: Path) -> None:
    conf_dir = tmp_path / "net.d"
    first = ensure_default_config(conf_dir, "10.42.0.0/24", data_dir=tmp_path)
    before = first.read_bytes()
    assert ensure_default_config(conf_dir, "10.99.0.0/24", data_dir=tmp_path,
                                 bridge="other") == first
    assert first.read_bytes() == before
    other = tmp_path / "calico"
    other.mkdir()
    (other / "05-calico.conflist").write_text(
        '{"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [{"type": "calico"}]}')
    assert ensure_default_config(other, "10.42.0.0/24", data_dir=tmp_path) == (
        other / "05-calico.conflist")
    assert sorted(p.name for p in other.iterdir()) == ["05-calico.conflist"]


def test_default_config_dual_stack_and_bad_input(tmp_path: Path) -> None:
    path = ensure_default_config(tmp_path, "10.42.0.0/24,fd42::/64", data_dir=tmp_path)
    ipam = load_network_config(path.parent).plugins[0]["ipam"]
    assert ipam["ranges"] == [[{"subnet": "10.42.0.0/24"}], [{"subnet": "fd42::/64"}]]
    assert ipam["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    with pytest.raises(ValueError, match=re.escape("10.42.0.1/24")):
        ensure_default_config(tmp_path / "x", "10.42.0.1/24", data_dir=tmp_path)
    with pytest.raises(ValueError, match="interface name"):
        ensure_default_config(tmp_path / "y", "10.42.0.0/24", data_dir=tmp_path,
                              bridge="kubling-much-too-long")


def test_first_file_wins_and_a_conf_is_wrapped(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("not a config")
    (tmp_path / "20-b.conflist").write_text(
        '{"cniVersion": "1.0.0", "name": "b", "plugins": [{"type": "bridge"}]}')
    (tmp_path / "10-a.conf").write_text('{"cniVersion": "0.4.0", "name": "a", "type": "ptp"}')
    config = load_network_config(tmp_path)
    assert config == NetworkConfigList(name="a", cni_version="0.4.0",
                                       plugins=({"cniVersion": "0.4.0", "name": "a",
                                                 "type": "ptp"},))
    assert config.source == tmp_path / "10-a.conf"


def test_broken_config_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "10-kubling.conflist"
    broken.write_text('{"cniVersion": "1.0.0", "name": "kubling", "plugins": [')
    with pytest.raises(CNIError, match=re.escape(f"{broken}: invalid JSON")):
        load_network_config(tmp_path)
    broken.write_text('{"cniVersion": "1.0.0", "name": "kubling", "plugins": []}')
    with pytest.raises(CNIError, match=re.escape(f'{broken}: no "plugins"')):
        load_network_config(tmp_path)
    broken.write_text('{"cniVersion": "1.0.0", "name": "k", "plugins": [{"type": "../sh"}]}')
    with pytest.raises(CNIError, match='plugin 0 has no valid "type"'):
        load_network_config(tmp_path)
    with pytest.raises(CNIError, match="no network config found"):
        load_network_config(tmp_path / "empty")


def test_debian_plugins_speak_cni_1_0(tmp_path: Path) -> None:
    cni = CNI(tmp_path, cache_dir=tmp_path)

    async def versions() -> list[list[str]]:
        return [await cni.supported_versions(p) for p in ("bridge", "host-local", "portmap")]

    for supported in asyncio.run(versions()):
        assert "1.0.0" in supported


RECORDER = """#!{python}
import json, os, sys
conf = json.load(sys.stdin)
env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}
with open(conf["log"], "a") as log:
    log.write(json.dumps({{"env": env, "conf": conf}}) + "\\n")
if conf.get("fail") and env["CNI_COMMAND"] == "ADD":
    print(json.dumps({{"cniVersion": "1.0.0", "code": 7, "msg": "told to fail",
                      "details": conf["tag"]}}))
    sys.exit(1)
if env["CNI_COMMAND"] == "ADD":
    result = conf.get("prevResult") or {{
        "cniVersion": conf["cniVersion"],
        "interfaces": [{{"name": "veth0"}}, {{"name": "eth0", "sandbox": env["CNI_NETNS"]}}],
        "ips": [{{"address": "10.1.2.3/24", "gateway": "10.1.2.1", "interface": 1}},
                {{"address": "192.168.0.1/24", "interface": 0}}]}}
    result["dns"] = {{"search": result.get("dns", {{}}).get("search", []) + [conf["tag"]]}}
    print(json.dumps(result))
"""


@pytest.fixture
def recorder(tmp_path: Path) -> tuple[CNI, Path, Path]:
    """A CNI whose list is two recording plugins: the protocol itself, seen from a plugin."""
    bin_dir, conf_dir, log = tmp_path / "bin", tmp_path / "net.d", tmp_path / "calls.jsonl"
    bin_dir.mkdir()
    conf_dir.mkdir()
    plugin = bin_dir / "kubling-recorder"
    plugin.write_text(RECORDER.format(python=sys.executable))
    plugin.chmod(0o755)
    (conf_dir / "10-rec.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "rec", "plugins": [
            {"type": "kubling-recorder", "tag": "first", "log": str(log),
             "capabilities": {"portMappings": True, "bandwidth": True}},
            {"type": "kubling-recorder", "tag": "second", "log": str(log)}]}))
    return CNI(conf_dir, [bin_dir, tmp_path / "nowhere"], cache_dir=tmp_path / "cache"), log, bin_dir


def calls(log: Path) -> list[dict[str, Any]]:
    """The invocations recorded since the last look (the log starts afresh)."""
    recorded = [json.loads(line) for line in log.read_text().splitlines()]
    log.unlink()
    return recorded


def test_plugins_are_invoked_as_the_spec_says(recorder: tuple[CNI, Path, Path]) -> None:
    cni, log, bin_dir = recorder
    sandbox = Path("/proc/self/ns/net")  # any network namespace file; the recorder ignores it
    result = asyncio.run(cni.add("pod1234", sandbox, pod_namespace="ns1", pod_name="web",
                                 pod_uid="u-1", port_mappings=[PortMapping(8080, 80)]))
    assert result.pod_ips == ["10.1.2.3"] and result.gateway == "10.1.2.1"
    assert result.dns.search == ("first", "second")  # each result fed into the next plugin
    first, second = calls(log)
    assert first["env"] == {
        "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "pod1234", "CNI_NETNS": str(sandbox),
        "CNI_IFNAME": "eth0", "CNI_PATH": f"{bin_dir}:{bin_dir.parent / 'nowhere'}",
        "CNI_ARGS": "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=pod1234;"
                    "K8S_POD_UID=u-1;IgnoreUnknown=1"}
    assert (first["conf"]["name"], first["conf"]["cniVersion"]) == ("rec", "1.0.0")
    assert "prevResult" not in first["conf"]
    assert first["conf"]["runtimeConfig"] == {"portMappings": [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]}
    assert "runtimeConfig" not in second["conf"]  # it declared no capability
    assert second["conf"]["prevResult"]["dns"] == {"search": ["first"]}

    asyncio.run(cni.delete("pod1234", None))
    second_del, first_del = calls(log)
    assert [second_del["conf"]["tag"], first_del["conf"]["tag"]] == ["second", "first"]
    for call in (second_del, first_del):
        assert call["env"]["CNI_COMMAND"] == "DEL" and call["env"]["CNI_NETNS"] == ""
        assert call["conf"]["prevResult"] == dict(result.raw)  # the cached final result
        assert call["env"]["CNI_ARGS"] == first["env"]["CNI_ARGS"]


def test_a_failing_plugin_is_undone_in_reverse(recorder: tuple[CNI, Path, Path]) -> None:
    cni, log, _ = recorder
    conf = cni.conf_dir / "10-rec.conflist"
    doc = json.loads(conf.read_text())
    doc["plugins"][1]["fail"] = True
    conf.write_text(json.dumps(doc))
    with pytest.raises(CNIError) as caught:
        asyncio.run(cni.add("pod1", Path("/proc/self/ns/net"), pod_namespace="n",
                            pod_name="p", pod_uid="u"))
    assert (caught.value.msg, caught.value.code, caught.value.details) == (
        "told to fail", 7, "second")
    assert str(caught.value) == "plugin 'kubling-recorder': told to fail: second"
    made = calls(log)
    assert [(c["env"]["CNI_COMMAND"], c["conf"]["tag"]) for c in made] == [
        ("ADD", "first"), ("ADD", "second"), ("DEL", "second"), ("DEL", "first")]
    assert made[2]["conf"]["prevResult"]["dns"] == {"search": ["first"]}
    assert asyncio.run(cni.cached_result("pod1")) is None


# -- namespaces ---------------------------------------------------------------------------


def test_netns_lifecycle() -> None:
    name = f"kubling-t{secrets.token_hex(3)}-ns"
    try:
        path = netns.create(name)
        assert path == Path("/run/netns") / name
        assert netns.exists(name) and name in netns.list_kubling()
        assert name in run("ip", "netns", "list")
        lo = json.loads(run("ip", "-n", name, "-j", "link", "show", "lo"))[0]
        assert "UP" in lo["flags"]
        with pytest.raises(FileExistsError):
            netns.create(name)
    finally:
        netns.delete(name)
    assert not netns.exists(name) and not path.exists()
    netns.delete(name)  # idempotent
    path.touch()  # a placeholder left by a crash between create and mount
    assert not netns.exists(name)
    try:
        assert netns.exists(netns.create(name).name)
    finally:
        netns.delete(name)
    with pytest.raises(ValueError):
        netns.create("cni-1234")


# -- ADD / CHECK / DEL --------------------------------------------------------------------


def test_two_pods_get_distinct_addresses_and_reach_each_other(net: NetFixture) -> None:
    cni = net.cni()

    async def attach() -> list[tuple[str, Path, Result]]:
        return [await net.add(cni, "a"), await net.add(cni, "b")]

    (ns_a, _, res_a), (ns_b, _, res_b) = asyncio.run(attach())
    ip_a, ip_b = res_a.pod_ips[0], res_b.pod_ips[0]
    assert ip_a != ip_b
    assert {ipaddress.ip_address(ip_a), ipaddress.ip_address(ip_b)} <= set(net.cidr.hosts())
    assert res_a.gateway == res_b.gateway == str(net.cidr.network_address + 1)
    assert res_a.cni_version == "1.0.0"
    for namespace, result in ((ns_a, res_a), (ns_b, res_b)):
        assert addresses_in(namespace) == [str(ip.address) for ip in result.ips]
        assert [i.name for i in result.interfaces if i.sandbox] == ["eth0"]
        lo = json.loads(run("ip", "-n", namespace, "-j", "link", "show", "lo"))[0]
        assert "UP" in lo["flags"]

    server = Listener(ns_a, 8080, count=2)
    try:
        assert in_netns(ns_b, CLIENT.format(host=ip_a, port=8080)).strip() == f"hello {ip_b}"
        assert connect_from_host(ip_a, 8080) == f"hello {res_a.gateway}"
    finally:
        server.close()
    if shutil.which("busybox"):
        run("ip", "netns", "exec", ns_a, "busybox", "ping", "-c", "1", "-W", "2", ip_b)


def test_delete_frees_the_address_the_veth_and_the_rules(net: NetFixture) -> None:
    cni = net.cni()
    ns, path, result = asyncio.run(net.add(cni, "a"))
    ip = result.pod_ips[0]
    veth = host_veth(result, net.bridge)
    lease = net.lease_dir / ip
    assert lease.read_text().startswith(ns)
    assert link_exists(veth)
    assert nat_rules_mentioning(f"-j {bridgequirk.chain_name('kubling', ns)}")
    assert (net.cache_dir / f"{ns}.json").exists()

    asyncio.run(cni.delete(ns, path))
    assert not lease.exists()
    assert not link_exists(veth)
    assert not nat_rules_mentioning(f"{ip}/32")
    assert not (net.cache_dir / f"{ns}.json").exists()
    asyncio.run(cni.delete(ns, path))  # DEL is idempotent


def test_delete_after_the_namespace_is_gone(net: NetFixture) -> None:
    cni = net.cni()
    ns, path, result = asyncio.run(net.add(cni, "a"))
    ip, veth = result.pod_ips[0], host_veth(result, net.bridge)
    netns.delete(ns)
    assert wait_until(lambda: not link_exists(veth))  # the kernel took the veth with it

    asyncio.run(cni.delete(ns, path))
    assert not (net.lease_dir / ip).exists()
    assert not nat_rules_mentioning(f"{ip}/32"), "the masquerade rules must not leak"


def test_delete_after_a_restart_uses_the_cached_config_and_result(net: NetFixture) -> None:
    ns, path, result = asyncio.run(net.add(net.cni(), "a"))
    ip, veth = result.pod_ips[0], host_veth(result, net.bridge)
    for conf in net.conf_dir.iterdir():  # only the cache can now say how to undo the ADD
        conf.unlink()

    restarted = net.cni()
    cached = asyncio.run(restarted.cached_result(ns))
    assert cached is not None and cached.pod_ips == [ip]
    asyncio.run(restarted.delete(ns, path))
    assert not (net.lease_dir / ip).exists()
    assert not link_exists(veth)
    assert not nat_rules_mentioning(f"{ip}/32")
    assert asyncio.run(restarted.cached_result(ns)) is None


def test_check_sees_a_broken_attachment(net: NetFixture) -> None:
    cni = net.cni()
    ns, path, _ = asyncio.run(net.add(cni, "a"))
    asyncio.run(cni.check(ns, path))
    run("ip", "-n", ns, "link", "del", "eth0")
    with pytest.raises(CNIError, match="eth0"):
        asyncio.run(cni.check(ns, path))


def test_host_port_is_forwarded_then_removed(net: NetFixture) -> None:
    cni = net.cni()
    host_port = random.randrange(20000, 30000)
    ns, path, result = asyncio.run(
        net.add(cni, "a", port_mappings=[PortMapping(host_port=host_port, container_port=8080)]))
    assert nat_rules_mentioning(f"--to-destination {result.pod_ips[0]}:8080")
    host_ip = result.gateway
    assert host_ip is not None
    server = Listener(ns, 8080, count=1)
    try:
        assert connect_from_host(host_ip, host_port).startswith("hello ")
    finally:
        server.close()
    asyncio.run(cni.delete(ns, path))
    assert not nat_rules_mentioning(f"--dport {host_port} ")


def test_missing_plugin_names_the_package_before_touching_the_host(net: NetFixture) -> None:
    add_plugin(net, {"type": "kubling-no-such-plugin"})
    with pytest.raises(CNIError) as caught:
        asyncio.run(net.add(net.cni(), "a"))
    assert str(caught.value) == (
        f'failed to find plugin "kubling-no-such-plugin" in path [{PLUGINS} /opt/cni/bin] '
        "— apt-get install containernetworking-plugins")
    assert caught.value.plugin == "kubling-no-such-plugin"
    assert not link_exists(net.bridge) and not net.lease_dir.exists()


def test_a_failed_add_undoes_the_plugins_that_ran(net: NetFixture) -> None:
    add_plugin(net, {"type": "tuning", "sysctl": {"net.kubling.no-such-sysctl": "1"}})
    with pytest.raises(CNIError) as caught:
        asyncio.run(net.add(net.cni(), "a"))
    assert caught.value.plugin == "tuning"
    # bridge had run: its address, veth and rules were given back before the error surfaced
    assert [p.name for p in net.lease_dir.iterdir() if p.name.startswith(net.cidr_prefix)] == []
    assert json.loads(run("ip", "-j", "link", "show", "master", net.bridge)) == []
    assert not nat_rules_mentioning(net.cidr_prefix)
    assert not list(net.cache_dir.glob("*.json"))


def test_plugin_error_object_becomes_cni_error(net: NetFixture) -> None:
    (net.conf_dir / "10-kubling.conflist").write_text(json.dumps(
        {"cniVersion": "9.9.9", "name": "kubling",
         "plugins": [{"type": "bridge", "bridge": net.bridge}]}))
    with pytest.raises(CNIError) as caught:
        asyncio.run(net.add(net.cni(), "a"))
    assert caught.value.msg == "incompatible CNI versions"
    assert caught.value.code == 1 and caught.value.plugin == "bridge"
    assert "1.0.0" in caught.value.details


def test_add_refuses_a_missing_namespace_and_a_second_add(net: NetFixture) -> None:
    cni = net.cni()
    with pytest.raises(CNIError, match="does not exist"):
        asyncio.run(cni.add("kubling-x", Path("/run/netns/kubling-nonexistent"),
                            pod_namespace="default", pod_name="p", pod_uid="u"))
    ns, path, _ = asyncio.run(net.add(cni, "a"))
    with pytest.raises(CNIError, match="already attached"):
        asyncio.run(cni.add(ns, path, pod_namespace="default", pod_name="p", pod_uid="u"))
