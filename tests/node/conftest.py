"""Node tests run real containers under ``/kubling/...`` cgroups: each test removes its own,
and a module that made the ``/kubling`` parents removes them too when they are empty."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest


def _parents() -> set[Path]:
    return set(Path("/sys/fs/cgroup").glob("*/kubling")) | set(
        Path("/sys/fs/cgroup").glob("kubling"))


@pytest.fixture(scope="module", autouse=True)
def _kubling_cgroup_parents() -> Iterator[None]:
    before = _parents()
    yield
    for parent in _parents() - before:
        with contextlib.suppress(OSError):  # rmdir refuses a cgroup that is still in use
            os.rmdir(parent)
