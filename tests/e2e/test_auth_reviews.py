"""kubectl auth whoami / can-i answered by the review APIs (never stored)."""

from __future__ import annotations

from kubernetes import client

from tests.server_fixture import KublingServer


def test_whoami(kubling: KublingServer) -> None:
    out = kubling.kubectl("auth", "whoami").stdout
    assert "system:admin" in out and "system:masters" in out


def test_can_i_and_list(kubling: KublingServer) -> None:
    result = kubling.kubectl("auth", "can-i", "create", "deployments", "-n", "default")
    assert result.returncode == 0 and result.stdout.strip() == "yes"
    listing = kubling.kubectl("auth", "can-i", "--list").stdout
    assert "*.*" in listing


def test_subject_access_review_and_nothing_stored(kubling: KublingServer) -> None:
    api = client.AuthorizationV1Api(kubling.api_client())
    review = api.create_subject_access_review(client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user="alice", groups=["system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(
                verb="get", resource="pods", namespace="default"))))
    assert review.status.allowed is True
    anonymous = api.create_subject_access_review(client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user="system:anonymous", groups=["system:unauthenticated"],
            non_resource_attributes=client.V1NonResourceAttributes(path="/api", verb="get"))))
    assert anonymous.status.allowed is False
    result = kubling.kubectl("get", "selfsubjectaccessreviews", check=False)
    assert result.returncode != 0  # create-only: there is nothing to list
