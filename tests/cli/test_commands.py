"""The ``kubling`` command's surface: help, usage errors (exit 2), clear messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def kubling(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubling.cli.main", *args],
                          capture_output=True, text=True, timeout=60, env=env, check=False)


def test_help_on_every_command() -> None:
    for args in ([], ["--help"], ["server", "--help"], ["version", "--help"]):
        result = kubling(*args)
        assert "usage: kubling" in result.stdout, args
    assert kubling("--help").returncode == 0
    assert "examples:" in kubling("server", "--help").stdout
    assert kubling().returncode == 2  # no command is a usage error


def test_version() -> None:
    result = kubling("version")
    assert result.returncode == 0 and "Kubernetes v1.32" in result.stdout


def test_usage_errors_exit_2_with_a_message(tmp_path: Path) -> None:
    result = kubling("server", "--bogus")
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr
    result = kubling("server", "--data-dir", str(tmp_path), "--service-cidr", "nope")
    assert result.returncode == 2
    assert "--service-cidr: not a network in CIDR form: 'nope'" in result.stderr
    result = kubling("server", "--data-dir", str(tmp_path), "--https-port", "7999",
                     "--disable-registry",
                     "--datastore-endpoint", "etcd://x")
    assert result.returncode == 2
    assert "unsupported storage endpoint 'etcd://x'" in result.stderr
    assert "Traceback" not in result.stderr
