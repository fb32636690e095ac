"""Image references normalise as Docker and the kubelet normalise them."""

from __future__ import annotations

import pytest

from kubling.node.images.reference import InvalidReference, normalize, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.27", "docker.io/library/nginx:1.27"),
        ("bitnami/redis", "docker.io/bitnami/redis:latest"),
        ("docker.io/nginx", "docker.io/library/nginx:latest"),
        ("index.docker.io/library/nginx:1", "docker.io/library/nginx:1"),
        ("localhost:5000/mon-app:dev", "localhost:5000/mon-app:dev"),
        ("localhost/app", "localhost/app:latest"),
        ("registry.example.com/team/app:v1.2_3", "registry.example.com/team/app:v1.2_3"),
        ("127.0.0.1:5000/a/b/c", "127.0.0.1:5000/a/b/c:latest"),
        (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}"),
        (f"busybox:1.36@{DIGEST}", f"docker.io/library/busybox:1.36@{DIGEST}"),
        ("ghcr.io/org/my_app__x", "ghcr.io/org/my_app__x:latest"),
    ],
)
def test_normalize(given: str, expected: str) -> None:
    assert normalize(given) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        " nginx",
        "nginx:",
        "nginx:-tag",
        "nginx@sha256:short",
        "a//b",
        "-leading/x",
        "nginx:" + "t" * 200,
        "x/y:tag:more",
        "UPPER",
        "docker.io/Library/x",
    ],
)
def test_invalid(bad: str) -> None:
    with pytest.raises(InvalidReference) as err:
        parse_reference(bad)
    assert f'couldn\'t parse image name "{bad}"' in str(err.value)


def test_properties() -> None:
    ref = parse_reference("nginx")
    assert ref.name == "docker.io/library/nginx"
    assert ref.familiar == "nginx:latest"
    assert ref.is_latest
    assert not parse_reference("nginx:1.2").is_latest
    assert not parse_reference(f"nginx@{DIGEST}").is_latest
    assert parse_reference("localhost:5000/app:v1").familiar == "localhost:5000/app:v1"
    assert str(parse_reference("app:v1").with_digest(DIGEST)) == f"docker.io/library/app@{DIGEST}"
    assert parse_reference("nginx", default_tag=False).tag is None
