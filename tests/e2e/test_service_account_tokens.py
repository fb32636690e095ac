"""Service-account tokens end to end: ``kubectl create token``, authenticating with the
token, bound-token revocation, the official client's TokenRequest, and the pod's
injected token volume."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.e2e.test_kubectl_crud import _versioned
from tests.server_fixture import KublingServer


@pytest.fixture(autouse=True)
def _default_account(kubling: KublingServer) -> None:
    """The serviceaccount controller makes ``default`` a moment after the server starts."""
    deadline = time.monotonic() + 15
    while kubling.kubectl("get", "serviceaccount", "default", check=False).returncode != 0:
        assert time.monotonic() < deadline, "no default service account"
        time.sleep(0.1)


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    padded = payload + "=" * (-len(payload) % 4)
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return result


def _token_kubeconfig(server: KublingServer, tmp_path: Path) -> Path:
    """A kubeconfig with the cluster's CA and no credentials: ``--token`` is the only one
    (with the admin's client certificate present, x509 would win, as upstream)."""
    path = tmp_path / "token-kubeconfig.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "c", "cluster": {
            "server": server.url,
            "certificate-authority": str(server.data_dir / "tls" / "ca.crt")}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "t", "context": {"cluster": "c", "user": "u"}}],
    }))
    return path


def _as_token(server: KublingServer, kubeconfig: Path, token: str,
              *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "--cache-dir",
                           str(server.cache_dir), "--token", token, *args],
                          capture_output=True, text=True, timeout=60, check=False)


def _namespace(server: KublingServer) -> str:
    ns = "sat-" + uuid.uuid4().hex[:8]
    server.kubectl("create", "namespace", ns)
    return ns


def test_create_token_then_whoami(kubling: KublingServer, tmp_path: Path) -> None:
    token = kubling.kubectl("create", "token", "default").stdout.strip()
    claims = _claims(token)
    assert claims["sub"] == "system:serviceaccount:default:default"
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["aud"] == ["https://kubernetes.default.svc.cluster.local"]
    result = _as_token(kubling, _token_kubeconfig(kubling, tmp_path), token, "auth", "whoami")
    assert result.returncode == 0, result.stderr
    assert "system:serviceaccount:default:default" in result.stdout
    assert "system:serviceaccounts:default" in result.stdout


@pytest.mark.parametrize("binary", ["kubectl.1.27", "kubectl.1.33"])
def test_create_token_with_old_and_new_kubectl(kubling: KublingServer, binary: str) -> None:
    token = kubling.kubectl("create", "token", "default", "--duration", "20m",
                            binary=_versioned(binary)).stdout.strip()
    claims = _claims(token)
    assert claims["exp"] - claims["iat"] == 1200


def test_create_token_duration_audience_and_errors(kubling: KublingServer) -> None:
    token = kubling.kubectl("create", "token", "default", "--duration", "10m",
                            "--audience", "vault").stdout.strip()
    claims = _claims(token)
    assert claims["exp"] - claims["iat"] == 600 and claims["aud"] == ["vault"]
    short = kubling.kubectl("create", "token", "default", "--duration", "1m", check=False)
    assert short.returncode == 1
    assert ('TokenRequest.authentication.k8s.io "" is invalid: spec.expirationSeconds: '
            "Invalid value: 60: may not specify a duration less than 10 minutes") in short.stderr
    missing = kubling.kubectl("create", "token", "nobody", check=False)
    assert missing.returncode == 1
    assert 'serviceaccounts "nobody" not found' in missing.stderr


def test_token_for_another_audience_is_unauthorized(kubling: KublingServer,
                                                    tmp_path: Path) -> None:
    token = kubling.kubectl("create", "token", "default", "--audience", "vault").stdout.strip()
    result = _as_token(kubling, _token_kubeconfig(kubling, tmp_path), token, "auth", "whoami")
    assert result.returncode == 1
    assert "Unauthorized" in result.stderr


def test_pod_bound_token_dies_with_its_pod(kubling: KublingServer, tmp_path: Path) -> None:
    ns = _namespace(kubling)
    kubling.kubectl("-n", ns, "run", "web", "--image=busybox", "--restart=Never")
    token = kubling.kubectl("-n", ns, "create", "token", "default", "--bound-object-kind",
                            "Pod", "--bound-object-name", "web").stdout.strip()
    kubeconfig = _token_kubeconfig(kubling, tmp_path)
    whoami = _as_token(kubling, kubeconfig, token, "auth", "whoami", "-o", "json")
    assert whoami.returncode == 0, whoami.stderr
    info = json.loads(whoami.stdout)["status"]["userInfo"]
    assert info["username"] == f"system:serviceaccount:{ns}:default"
    assert info["extra"]["authentication.kubernetes.io/pod-name"] == ["web"]
    kubling.kubectl("-n", ns, "delete", "pod", "web", "--grace-period=0", "--force")
    gone = _as_token(kubling, kubeconfig, token, "auth", "whoami")
    assert gone.returncode == 1
    assert "Unauthorized" in gone.stderr
    kubling.kubectl("delete", "namespace", ns, "--wait=false")


def test_python_client_token_request(kubling: KublingServer) -> None:
    api = client.CoreV1Api(kubling.api_client())
    answer = api.create_namespaced_service_account_token(
        "default", "default", client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=1200)))
    assert answer.status.token and answer.spec.expiration_seconds == 1200
    assert answer.status.expiration_timestamp is not None
    configuration = client.Configuration()
    configuration.host = kubling.url
    configuration.ssl_ca_cert = str(kubling.data_dir / "tls" / "ca.crt")
    configuration.api_key = {"authorization": answer.status.token}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    with client.ApiClient(configuration) as as_account:
        review = client.AuthenticationV1Api(as_account).create_self_subject_review(
            client.V1SelfSubjectReview())
        assert review.status.user_info.username == "system:serviceaccount:default:default"
    with pytest.raises(ApiException) as caught:
        api.create_namespaced_service_account_token(
            "default", "default", client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=-1)))
    assert caught.value.status == 422


def test_token_subresource_in_discovery(kubling: KublingServer) -> None:
    resources = json.loads(kubling.kubectl("get", "--raw", "/api/v1").stdout)["resources"]
    [token] = [r for r in resources if r["name"] == "serviceaccounts/token"]
    assert token["kind"] == "TokenRequest" and token["group"] == "authentication.k8s.io"
    assert token["verbs"] == ["create"]


def test_pods_get_the_token_volume_and_need_their_account(kubling: KublingServer) -> None:
    ns = _namespace(kubling)  # a pod right after its namespace: ``default`` is waited for
    kubling.kubectl("-n", ns, "run", "web", "--image=busybox", "--restart=Never")
    spec = kubling.kubectl_yaml("-n", ns, "get", "pod", "web")["spec"]
    assert spec["serviceAccountName"] == "default"
    [volume] = spec["volumes"]
    assert volume["name"].startswith("kube-api-access-")
    assert [s for source in volume["projected"]["sources"] for s in source] == [
        "serviceAccountToken", "configMap", "downwardAPI"]
    assert spec["containers"][0]["volumeMounts"] == [{
        "name": volume["name"], "readOnly": True,
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]
    refused = kubling.kubectl("-n", ns, "run", "other", "--image=busybox",
                              "--overrides", '{"spec": {"serviceAccountName": "builder"}}',
                              check=False)
    assert refused.returncode == 1
    assert (f'Error from server (Forbidden): pods "other" is forbidden: error looking up '
            f'service account {ns}/builder: serviceaccount "builder" not found') in refused.stderr
    kubling.kubectl("delete", "namespace", ns, "--wait=false")


@pytest.mark.parametrize(("body", "message"), [
    ('{"spec": {"expirationSeconds": "abc"}}',
     "Error from server (BadRequest): TokenRequest in version \"v1\" cannot be handled as a "
     "TokenRequest"),
    ("not json", "Error from server (BadRequest)"),
    ('{"spec": {"boundObjectRef": {"kind": "Pod"}}}',
     "Error from server (BadRequest): Name parameter required."),
    ('{"spec": {"expirationSeconds": -1}}',
     'The TokenRequest "" is invalid: spec.expirationSeconds: Invalid value: -1: may not '
     "specify a duration less than 10 minutes"),
])
def test_malformed_token_requests_are_statuses(kubling: KublingServer, body: str,
                                               message: str) -> None:
    path = "/api/v1/namespaces/default/serviceaccounts/default/token"
    result = kubling.kubectl("create", "--raw", path, "-f", "-", input=body, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(message), result.stderr
    assert "InternalError" not in result.stderr
