"""Shared fixtures: a real kubling server for the end-to-end tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server_fixture import KublingServer, running_server


@pytest.fixture(scope="session")
def kubling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KublingServer]:
    """One server shared by the end-to-end tests of a session (each test uses its own
    namespace or names, so they do not see each other's objects)."""
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is not on PATH: the end-to-end tests need the real kubectl")
    with running_server(tmp_path_factory.mktemp("kubling") / "data") as server:
        yield server


@pytest.fixture
def fresh_data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
