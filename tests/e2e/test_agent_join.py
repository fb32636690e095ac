"""``kubling agent`` joins a ``kubling server`` as k3s agents do: with the server's token.

A pure control plane (``--disable-agent``) and a separate ``kubling agent`` process on the
same host, each with its own data dir: the agent checks the CA against the token, gets a
``system:node:<name>`` client certificate and a kubelet serving certificate for keys it
keeps, registers its Node (pod CIDR from the server), and runs pods that the real kubectl
reaches for logs and exec through the API server. The agent runs in this host's agent slot
(``tests.agent_fixture.agent_host``), which removes what it leaves on the host.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from tests.agent_fixture import agent_host, build_busybox, require_node_agent
from tests.server_fixture import REPO, KublingServer, free_port, running_server, wait_for

NODE = "kubling-join-test"
TOKEN_RE = re.compile(r"^K10([0-9a-f]{64})::server:([0-9a-f]{32})$")


def kubling(*args: str, env: Mapping[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubling.cli.main", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=timeout,
                          env=dict(env) if env is not None else None, check=False)


def token_of(srv: KublingServer) -> str:
    return (srv.data_dir / "token").read_text().strip()


@contextlib.contextmanager
def running_agent(srv: KublingServer, args: list[str], *, env: Mapping[str, str],
                  log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A ``kubling agent`` subprocess. If it still runs afterwards, the pods are deleted
    first (so that it removes their containers), then it is stopped by its PID."""
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "kubling.cli.main", "agent", *args],
                                   stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                   env=dict(env))
    try:
        yield process
    finally:
        if process.poll() is None:
            srv.kubectl("delete", "pods", "--all", "--grace-period=1", "--wait=true",
                        "--timeout=60s", check=False, timeout=90)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def node_ready(srv: KublingServer) -> bool:
    result = srv.kubectl("get", "node", NODE, "-o", "json", check=False)
    if result.returncode != 0:
        return False
    conditions = json.loads(result.stdout).get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def pod_json(srv: KublingServer, name: str) -> dict[str, Any]:
    result = srv.kubectl("get", "pod", name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def test_agent_help_lists_flags_and_examples() -> None:
    result = kubling("agent", "--help")
    assert result.returncode == 0, result.stderr
    for text in ("--server", "--token", "--node-name", "--node-ip", "--data-dir",
                 "/var/lib/kubling/agent", "--kubelet-port", "--cni-conf-dir", "--config",
                 "KUBLING_URL", "KUBLING_TOKEN", "examples:"):
        assert text in result.stdout, text
    assert "agent" in kubling("--help").stdout


def test_agent_without_server_or_token_is_a_usage_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBLING_")}
    result = kubling("agent", "--data-dir", str(tmp_path), env=env)
    assert result.returncode == 2
    assert "--server is required (or KUBLING_URL)" in result.stderr
    result = kubling("agent", "--server", "https://127.0.0.1:1", env=env)
    assert result.returncode == 2
    assert "--token is required (or KUBLING_TOKEN)" in result.stderr
    # Both may come from the config file (keys are flag names).
    config = tmp_path / "config.yaml"
    config.write_text("server: https://127.0.0.1:1\ntoken: K10abc::server:x\n")
    result = kubling("agent", "--config", str(config), env=env)
    assert result.returncode == 2
    assert "--token: the join token is malformed" in result.stderr


def test_server_makes_the_token_once_and_keeps_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = KublingServer(data)
    try:
        srv.start()
        token = token_of(srv)
        match = TOKEN_RE.match(token)
        assert match, token
        assert match.group(1) == hashlib.sha256((data / "tls" / "ca.crt").read_bytes()).hexdigest()
        assert (data / "token").stat().st_mode & 0o777 == 0o600
        # Nodes may do what a kubelet does: upstream's system:node role, bound to the group.
        binding = srv.kubectl_yaml("get", "clusterrolebinding", "system:node")
        assert binding["roleRef"]["name"] == "system:node"
        assert {"kind": "Group", "name": "system:nodes"}.items() <= binding["subjects"][0].items()
        rules = srv.kubectl_yaml("get", "clusterrole", "system:node")["rules"]
        assert any("pods/status" in r["resources"] and "patch" in r["verbs"] for r in rules)
        assert srv.stop() == 0
        srv.start()
        assert token_of(srv) == token
    finally:
        srv.stop()
    log = srv.log_path.read_text()
    assert log.count(token) == 1, "the token is printed on the first start only"
    assert f"agents join with the token in {data / 'token'}" in log


def test_wrong_token_or_server_fails_with_what_to_do(tmp_path: Path) -> None:
    require_node_agent()
    with running_server(tmp_path / "data") as srv:
        token = token_of(srv)
        agent_dir = str(tmp_path / "agent")
        wrong_secret = token.rsplit(":", 1)[0] + ":" + "0" * 32
        result = kubling("agent", "--server", srv.url, "--token", wrong_secret,
                         "--data-dir", agent_dir, "--node-name", NODE)
        assert result.returncode == 1, result.stderr
        assert (f"kubling: {srv.url} refused the join token — copy <data-dir>/token from "
                "the server again") in result.stderr
        assert "Traceback" not in result.stderr

        wrong_ca = "K10" + "a" * 64 + "::server:" + token.rsplit(":", 1)[1]
        result = kubling("agent", "--server", srv.url, "--token", wrong_ca,
                         "--data-dir", agent_dir, "--node-name", NODE)
        assert result.returncode == 1
        assert ("the join token does not match this server's CA — copy <data-dir>/token "
                "from the server again") in result.stderr

        closed = f"https://127.0.0.1:{free_port()}"
        result = kubling("agent", "--server", closed, "--token", token, "--data-dir", agent_dir)
        assert result.returncode == 1
        assert (f"could not reach {closed}: connection refused — is kubling server running?"
                in result.stderr)

        # A registered Node that never joined with a password (as the server's own) is not
        # a free name for the first token holder who asks for it.
        srv.kubectl("apply", "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "kubling-taken"}}))
        result = kubling("agent", "--server", srv.url, "--token", token,
                         "--data-dir", agent_dir, "--node-name", "kubling-taken")
        assert result.returncode == 1
        assert ("node 'kubling-taken' is already registered and did not join with a node "
                "password — pass another --node-name") in result.stderr, result.stderr
        assert not (tmp_path / "agent" / "kubelet.kubeconfig").exists()

        # The endpoint itself: a wrong secret is a 401 with a message, never a 500.
        context = ssl.create_default_context(cafile=str(srv.data_dir / "tls" / "ca.crt"))
        request = urllib.request.Request(
            srv.url + "/v1-kubling/client-kubelet.crt", data=b"not a csr", method="POST",
            headers={"Authorization": "Basic " + base64.b64encode(b"node:nope").decode(),
                     "Kubling-Node-Name": NODE})
        try:
            urllib.request.urlopen(request, context=context, timeout=10)
            raise AssertionError("a wrong token was accepted")
        except urllib.error.HTTPError as err:
            assert err.code == 401
            assert "the join token is not valid for this server" in err.read().decode()
        assert not (tmp_path / "agent" / "kubelet.kubeconfig").exists()
        # An escaped slash is no join route: the API's authentication applies (401, no 500).
        try:
            urllib.request.urlopen(srv.url + "/v1-kubling%2Fconfig", context=context, timeout=10)
            raise AssertionError("an escaped join path was served")
        except urllib.error.HTTPError as err:
            assert err.code == 401


def test_agent_joins_runs_pods_and_kubectl_reaches_them(tmp_path: Path) -> None:
    require_node_agent()
    agent_dir = tmp_path / "agent"
    build_busybox(agent_dir)
    with agent_host(), running_server(tmp_path / "data") as srv:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBLING_")}
        # The URL and token from the environment, as an install script passes them.
        env |= {"KUBLING_URL": srv.url, "KUBLING_TOKEN": token_of(srv)}
        log = tmp_path / "agent.log"
        args = ["--node-name", NODE, "--data-dir", str(agent_dir),
                "--cni-conf-dir", str(tmp_path / "cni"), "--kubelet-port", str(free_port())]
        try:
            with running_agent(srv, args, env=env, log=log) as agent:
                wait_for(lambda: agent.poll() is not None or node_ready(srv), 40,
                         "the joined node to be Ready")
                assert agent.poll() is None, log.read_text()
                _check_node(srv, agent_dir)
                _check_pod(srv)
                _check_impostor_is_refused(srv, env, tmp_path)
                agent.send_signal(signal.SIGTERM)
                assert agent.wait(20) == 0
            pod_uid = pod_json(srv, "joined")["metadata"]["uid"]
            # A restart joins again with the same keys and node password and adopts the pod.
            with running_agent(srv, args, env=env, log=log) as agent:
                wait_for(lambda: agent.poll() is not None or log.read_text().count(
                    "kubling agent is running") == 2, 30, "the agent to start again")
                assert agent.poll() is None, log.read_text()
                wait_for(lambda: srv.kubectl("exec", "joined", "--", "echo", "still-here",
                                             check=False).stdout.strip() == "still-here",
                         30, "kubectl exec to reach the pod after the agent's restart")
                assert pod_json(srv, "joined")["metadata"]["uid"] == pod_uid
                assert pod_json(srv, "joined")["status"]["containerStatuses"][0][
                    "restartCount"] == 0
                srv.kubectl("delete", "pods", "--all", "--grace-period=1", "--wait=true",
                            "--timeout=60s", timeout=90)
        except BaseException:
            print(log.read_text()[-6000:])
            raise
        assert "joined " + srv.url + " as node " + NODE in log.read_text()


def _check_node(srv: KublingServer, agent_dir: Path) -> None:
    node = srv.kubectl_yaml("get", "node", NODE)
    # The first joined node gets the second /24: the first is the server's own node's.
    assert node["spec"]["podCIDR"] == "10.42.1.0/24"
    assert "node-role.kubernetes.io/control-plane" not in node["metadata"]["labels"]
    # The agent is system:node:<name> in system:nodes, with keys that never left it.
    kubeconfig = yaml.safe_load((agent_dir / "kubelet.kubeconfig").read_text())
    cert_pem = base64.b64decode(kubeconfig["users"][0]["user"]["client-certificate-data"])
    subject = x509.load_pem_x509_certificate(cert_pem).subject.rfc4514_string()
    assert f"CN=system:node:{NODE}" in subject and "O=system:nodes" in subject
    assert (agent_dir / "kubelet.kubeconfig").stat().st_mode & 0o777 == 0o600
    assert (agent_dir / "tls" / "client-kubelet.key").stat().st_mode & 0o777 == 0o600
    serving = x509.load_pem_x509_certificate(
        (agent_dir / "tls" / "serving-kubelet.crt").read_bytes())
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert NODE in names.get_values_for_type(x509.DNSName)


def _check_impostor_is_refused(srv: KublingServer, env: Mapping[str, str],
                               tmp_path: Path) -> None:
    """Another agent (its own node password) cannot take the joined node's name."""
    result = kubling("agent", "--node-name", NODE, "--data-dir", str(tmp_path / "impostor"),
                     env=env)
    assert result.returncode == 1
    assert (f"refused to join this node: node '{NODE}' already joined with another node "
            "password") in result.stderr, result.stderr
    secret = srv.kubectl_yaml("get", "secret", "-n", "kube-system",
                              f"{NODE}.node-password.kubling")
    assert secret["type"] == "kubling.io/node-password"


def _check_pod(srv: KublingServer) -> None:
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "joined"},
                "spec": {"terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "main", "image": "busybox:latest",
                                         "imagePullPolicy": "IfNotPresent",
                                         "command": ["sh", "-c",
                                                     "echo hello-from-agent; sleep 3600"]}]}}
    srv.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    wait_for(lambda: pod_json(srv, "joined").get("status", {}).get("phase") == "Running", 60,
             "the pod on the joined node to run")
    pod = pod_json(srv, "joined")
    assert pod["spec"]["nodeName"] == NODE
    assert pod["status"]["podIP"].startswith("10.42.1."), pod["status"]
    wait_for(lambda: "hello-from-agent" in srv.kubectl("logs", "joined", check=False).stdout,
             20, "kubectl logs to reach the joined node")
    result = srv.kubectl("exec", "joined", "--", "sh", "-c", "echo exec-on-$(hostname)")
    assert result.stdout.strip() == "exec-on-joined"
