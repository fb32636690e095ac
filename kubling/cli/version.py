"""``kubling version``: what this kubling is and which Kubernetes it speaks."""

from __future__ import annotations

import argparse
import platform
from typing import Any

import kubling


def register(sub: Any) -> None:
    parser = sub.add_parser("version", help="print versions",
                            description="Print kubling's version and the Kubernetes API "
                            "version it serves.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(f"kubling version v{kubling.__version__} (Kubernetes v{kubling.KUBERNETES_VERSION}, "
          f"Python {platform.python_version()})")
    return 0
