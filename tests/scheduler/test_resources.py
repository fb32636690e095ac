"""Quantities and pod requests as the scheduler counts them."""

from __future__ import annotations

from fractions import Fraction

import pytest

from kubling.scheduler import resources
from tests.scheduler.util import make_pod


@pytest.mark.parametrize(("text", "value"), [
    ("1", Fraction(1)), ("100m", Fraction(1, 10)), ("1.5", Fraction(3, 2)),
    ("128Mi", Fraction(128 * 2**20)), ("1Gi", Fraction(2**30)), ("2k", Fraction(2000)),
    ("1e3", Fraction(1000)), ("1E", Fraction(10**18)), ("500u", Fraction(1, 2000)),
])
def test_parse_quantity(text: str, value: Fraction) -> None:
    assert resources.parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1Qi", "1.2.3"])
def test_parse_quantity_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        resources.parse_quantity(text)


def test_amount_rounds_up_like_upstream() -> None:
    assert resources.amount("cpu", "0.0001") == 1  # MilliValue rounds up
    assert resources.amount("cpu", "2") == 2000
    assert resources.amount("memory", "1.5") == 2
    assert resources.amount("memory", "bogus") == 0
    assert resources.amount("cpu", 1) == 1000


def test_requests_sum_containers_and_take_max_of_init() -> None:
    pod = make_pod("p", cpu="100m", memory="100Mi", init_containers=[
        {"name": "i", "resources": {"requests": {"cpu": "500m", "memory": "10Mi"}}},
    ])
    pod["spec"]["containers"].append(
        {"name": "c2", "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}})
    reqs = resources.pod_requests(pod)
    assert (reqs.milli_cpu, reqs.memory) == (500, 200 * 2**20)


def test_sidecars_run_alongside_everything_after_them() -> None:
    pod = make_pod("p", cpu="100m", init_containers=[
        {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"cpu": "200m"}}},
        {"name": "init", "resources": {"requests": {"cpu": "1"}}},
    ])
    # app + sidecar = 300m; init runs next to the sidecar = 1200m; max wins.
    assert resources.pod_requests(pod).milli_cpu == 1200
    pod["spec"]["initContainers"][1]["resources"]["requests"]["cpu"] = "50m"
    assert resources.pod_requests(pod).milli_cpu == 300


def test_overhead_is_added() -> None:
    pod = make_pod("p", cpu="100m", overhead={"cpu": "250m", "memory": "64Mi"})
    reqs = resources.pod_requests(pod)
    assert (reqs.milli_cpu, reqs.memory) == (350, 64 * 2**20)


def test_non_missing_defaults_only_replace_missing_requests() -> None:
    pod = make_pod("p", cpu="0")
    reqs = resources.pod_requests(pod, non_missing=True)
    assert reqs.milli_cpu == 0  # explicit zero stays zero
    assert reqs.memory == resources.DEFAULT_MEMORY_REQUEST


def test_extended_resources_are_scalar() -> None:
    pod = make_pod("p", requests={"example.com/gpu": "2"})
    assert resources.pod_requests(pod).scalar == {"example.com/gpu": 2}
