"""ImageLocality: prefer nodes holding large images, discounted by how common they are."""

from __future__ import annotations

from kubling.scheduler.plugins import image_locality
from tests.scheduler.util import make_node, make_pod, scores

MB = 1024 * 1024


def image(name: str, size_mb: int) -> dict[str, object]:
    return {"names": [name], "sizeBytes": size_mb * MB}


def test_node_with_the_image_wins_and_spread_discounts() -> None:
    nodes = [make_node("has", images=[image("docker.io/library/app:1", 500)]),
             make_node("none")]
    got = scores("ImageLocality", make_pod("p", image="docker.io/library/app:1"), nodes)
    # 500MB * (1 of 2 nodes) = 250MB -> 100 * (250-23) // (1000-23) = 23
    assert got == {"has": 23, "none": 0}


def test_untagged_image_means_latest() -> None:
    nodes = [make_node("has", images=[image("nginx:latest", 800)])]
    got = scores("ImageLocality", make_pod("p", image="nginx"), nodes)
    assert got["has"] == image_locality.calculate_priority(800 * MB, 1)


def test_small_images_do_not_count() -> None:
    nodes = [make_node("has", images=[image("tiny:1", 5)]), make_node("none")]
    assert scores("ImageLocality", make_pod("p", image="tiny:1"), nodes) == {"has": 0, "none": 0}
