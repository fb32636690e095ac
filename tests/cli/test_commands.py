"""The ``kubling`` command's surface: help, usage errors (exit 2), clear messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def kubling(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubling.cli.main", *args],
                          capture_output=True, text=True, timeout=60, env=env, check=False)


def test_help_on_every_command() -> None:
    for args in ([], ["--help"], ["server", "--help"], ["version", "--help"],
                 ["check", "--help"], ["image", "--help"], ["simulate", "--help"],
                 *(["image", verb, "--help"] for verb in
                   ("ls", "pull", "import", "rm", "prune", "build"))):
        result = kubling(*args)
        assert "usage: kubling" in result.stdout, args
        if args and args[-1] == "--help":
            assert result.returncode == 0, args
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


def test_cluster_dns_must_be_an_address_in_the_service_cidr(tmp_path: Path) -> None:
    result = kubling("server", "--data-dir", str(tmp_path), "--cluster-dns", "nope")
    assert result.returncode == 2 and "--cluster-dns: not an IP address: 'nope'" in result.stderr
    result = kubling("server", "--data-dir", str(tmp_path), "--disable-registry",
                     "--cluster-dns", "10.99.0.10")
    assert result.returncode == 2
    assert "--cluster-dns: 10.99.0.10 is not in --service-cidr 10.43.0.0/16" in result.stderr
    help_text = kubling("server", "--help").stdout
    for flag in ("--cluster-dns", "--disable-cluster-dns", "--disable-kube-proxy",
                 "--disable-agent", "--registry-port", "--service-node-port-range"):
        assert flag in help_text


def test_check_reports_each_part_and_says_how_to_fix(tmp_path: Path) -> None:
    import socket

    result = kubling("check")
    assert result.returncode == 0, result.stdout + result.stderr
    for part in ("runc", "conmon", "nft", "CNI plugins", "cgroups", "overlay filesystem"):
        assert any(line.startswith("ok") and part in line for line in result.stdout.splitlines())
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        result = kubling("check", "--https-port", str(busy), "--cni-bin-dir", str(tmp_path))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith("FAIL") and f"port {busy}" in line and "--https-port" in line
               for line in lines)
    assert any(line.startswith("FAIL") and "CNI plugins" in line
               and "apt-get install containernetworking-plugins" in line for line in lines)
    assert "required check(s) failed" in result.stderr
