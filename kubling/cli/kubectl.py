"""``kubling kubectl ...``: the installed kubectl, pointed at this node's admin kubeconfig.

Like ``k3s kubectl``: KUBECONFIG is set unless the user set it already.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Any

DEFAULT_KUBECONFIG = "/var/lib/kubling/kubeconfig.yaml"


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "kubectl",
        help="run kubectl against this cluster",
        description="Run the installed kubectl with kubling's admin kubeconfig "
        f"({DEFAULT_KUBECONFIG}, or $KUBLING_DATA_DIR/kubeconfig.yaml). "
        "Every argument is passed to kubectl.",
        epilog="examples:\n  kubling kubectl get nodes\n  kubling kubectl apply -f app.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help="kubectl arguments")
    parser.set_defaults(func=lambda a: run_passthrough(a.args))


def run_passthrough(args: list[str]) -> int:
    binary = shutil.which("kubectl")
    if binary is None:
        print("kubling: kubectl not found — install kubectl (1.27-1.33) and put it on PATH",
              file=sys.stderr)
        return 1
    env = dict(os.environ)
    if "KUBECONFIG" not in env:
        data_dir = env.get("KUBLING_DATA_DIR", "/var/lib/kubling")
        env["KUBECONFIG"] = os.path.join(data_dir, "kubeconfig.yaml")
    os.execve(binary, [binary, *args], env)
    return 0  # pragma: no cover - execve does not return
