"""pods/log on the API server's side, without a node: options, container choice, where
the agent is."""

from __future__ import annotations

from typing import Any

import pytest

from kubling.apiserver import errors, nodeproxy


def pod(*names: str, init: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"metadata": {"name": "p"},
            "spec": {"containers": [{"name": n} for n in names],
                     "initContainers": [{"name": n} for n in init]}}


def test_the_query_forwarded_to_the_agent() -> None:
    container, forward, skip = nodeproxy.log_query(
        {"container": "c", "follow": "true", "previous": "false", "tailLines": "2",
         "sinceTime": "2024-05-01T14:00:00+02:00", "insecureSkipTLSVerifyBackend": "true"}, "p")
    assert container == "c" and skip
    assert forward == {"follow": "true", "tailLines": "2", "sinceTime": "2024-05-01T12:00:00Z"}


@pytest.mark.parametrize(("query", "code", "message"), [
    ({"tailLines": "-1"}, 422, 'PodLogOptions "p" is invalid: tailLines: Invalid value: -1: '
                               "must be greater than or equal to 0"),
    ({"limitBytes": "0"}, 422, "limitBytes: Invalid value: 0: must be greater than 0"),
    ({"sinceSeconds": "0"}, 422, "sinceSeconds: Invalid value: 0: must be greater than 0"),
    ({"sinceSeconds": "5", "sinceTime": "2024-05-01T12:00:00Z"}, 422,
     "sinceSeconds: Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"),
    ({"tailLines": "x"}, 400, 'strconv.ParseInt: parsing "x": invalid syntax'),
    ({"follow": "yes"}, 400, 'strconv.ParseBool: parsing "yes": invalid syntax'),
    ({"sinceTime": "yesterday"}, 400, 'parsing time "yesterday"'),
])
def test_bad_options(query: dict[str, str], code: int, message: str) -> None:
    with pytest.raises(errors.APIError) as caught:
        nodeproxy.log_query(query, "p")
    assert caught.value.code == code
    assert message in caught.value.message


def test_container_choice() -> None:
    assert nodeproxy.choose_container(pod("a"), "") == "a"
    assert nodeproxy.choose_container(pod("a", "b", init=("i",)), "i") == "i"
    with pytest.raises(errors.APIError, match=r"^a container name must be specified for pod p, "
                       r"choose one of: \[a b\] or one of the init containers: \[i j\]$"):
        nodeproxy.choose_container(pod("a", "b", init=("i", "j")), "")
    with pytest.raises(errors.APIError, match=r"^container x is not valid for pod p$"):
        nodeproxy.choose_container(pod("a"), "x")


def test_kubelet_address() -> None:
    node = {"metadata": {"name": "n"},
            "status": {"addresses": [{"type": "Hostname", "address": "n"},
                                     {"type": "InternalIP", "address": "10.0.0.5"}],
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": 12345}}}}
    assert nodeproxy.kubelet_address(node) == ("10.0.0.5", 12345)
    assert nodeproxy.kubelet_address({"metadata": {"name": "n"}}) == ("n", 10250)
