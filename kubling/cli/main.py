"""The ``kubling`` command: one entry point, one subcommand per job.

Exit codes follow PRODUCT.md: 0 success, 1 runtime failure, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kubling.cli import agent as agent_cmd
from kubling.cli import check as check_cmd
from kubling.cli import image as image_cmd
from kubling.cli import kubectl as kubectl_cmd
from kubling.cli import server as server_cmd
from kubling.cli import simulate as simulate_cmd
from kubling.cli import version as version_cmd

EPILOG = """examples:
  kubling server                       start a single-node cluster
  kubling agent --server URL --token T join this machine to a cluster as a node
  kubling kubectl get namespaces       talk to it with the admin kubeconfig
  kubling image ls                     list the node's images (also pull, import, build)
  kubling simulate --nodes 10          add simulated nodes (no containers) for tests
  kubling check                        check this host (kernel, runc, nftables, ports)
  kubling version                      show versions
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubling",
        description="kubling: a small, complete Kubernetes in Python.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    server_cmd.register(sub)
    agent_cmd.register(sub)
    kubectl_cmd.register(sub)
    image_cmd.register(sub)
    check_cmd.register(sub)
    simulate_cmd.register(sub)
    version_cmd.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # `kubling kubectl ...` passes everything after it to kubectl untouched.
    if args_list[:1] == ["kubectl"]:
        return kubectl_cmd.run_passthrough(args_list[1:])
    if args_list[:1] == ["server"]:
        return server_cmd.main(args_list[1:])
    if args_list[:1] == ["agent"]:
        return agent_cmd.main(args_list[1:])
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help()
        return 2
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
