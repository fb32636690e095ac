#!/usr/bin/env python3
"""Compile Kubernetes' published API descriptors into kubling's one descriptor set.

Why: kubectl's typed generators (``kubectl create configmap|deployment|...``, ``auth can-i``,
``create token``) send request bodies as ``application/vnd.kubernetes.protobuf``, and kubectl
1.27/1.28 read ``/openapi/v2`` only as gnostic protobuf. kubling decodes and encodes those with
the pure-Python ``protobuf`` runtime, which needs the message descriptors. Rather than
hand-writing field numbers, we compile the ``generated.proto`` files that Kubernetes publishes
(kept as data under ``tools/k8s-proto/``) plus gnostic's ``OpenAPIv2.proto`` into ONE
serialized ``FileDescriptorSet`` at ``kubling/api/k8s_descriptors.binpb``; the runtime loads it
lazily (see ``kubling/api/protobuf.py``).

Tool-time only: needs ``grpcio-tools`` (its bundled ``protoc``), which is not a runtime
dependency of kubling::

    .venv/bin/pip install grpcio-tools
    .venv/bin/python tools/gen_k8s_protos.py          # rewrite the descriptor set
    .venv/bin/python tools/gen_k8s_protos.py --check  # fail if it is out of date

Source info (comments, spans) is left out so the committed file stays small.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "tools" / "k8s-proto"
OUTPUT = ROOT / "kubling" / "api" / "k8s_descriptors.binpb"


def proto_files() -> list[str]:
    """Every ``.proto`` under ``tools/k8s-proto``, as import paths, in a stable order."""
    return sorted(p.relative_to(PROTO_ROOT).as_posix() for p in PROTO_ROOT.rglob("*.proto"))


def well_known_root() -> Path:
    """grpcio-tools' copy of protobuf's well-known types.

    gnostic's ``OpenAPIv2.proto`` imports ``google/protobuf/any.proto``; ``--include_imports``
    then puts that file in the set too, so the runtime pool resolves it without relying on
    the ``protobuf`` package's own default pool.
    """
    from importlib import resources

    return Path(str(resources.files("grpc_tools") / "_proto"))


def compile_set(out: Path) -> None:
    """Run grpcio-tools' protoc over all files into one self-contained descriptor set."""
    try:
        from grpc_tools import protoc
    except ImportError:  # pragma: no cover - tool-time dependency
        sys.exit("grpcio-tools is required: .venv/bin/pip install grpcio-tools")
    args = [
        "protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known_root()}",
        f"--descriptor_set_out={out}",
        "--include_imports",
        *proto_files(),
    ]
    code = protoc.main(args)
    if code != 0:
        sys.exit(f"protoc failed with exit code {code}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the committed descriptor set differs from a fresh build")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    ns = parser.parse_args(argv)
    if ns.check:
        tmp = ns.output.with_suffix(".check.binpb")
        try:
            compile_set(tmp)
            same = tmp.read_bytes() == ns.output.read_bytes()
        finally:
            tmp.unlink(missing_ok=True)
        print("up to date" if same else f"{ns.output} is stale: rerun tools/gen_k8s_protos.py")
        return 0 if same else 1
    compile_set(ns.output)
    print(f"wrote {ns.output.relative_to(ROOT)} ({ns.output.stat().st_size} bytes, "
          f"{len(proto_files())} files)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
