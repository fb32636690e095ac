"""Image benchmark: pull-and-unpack throughput from a local registry, and the time to
start a container root filesystem from an image already pulled.

    .venv/bin/python bench/images_bench.py [--mb 100] [--layers 5] [--mounts 50]

The image (``--layers`` layers, ``--mb`` MB uncompressed in all, half random bytes and
half text so that gzip has both kinds of work) is pushed with skopeo into the kubling
registry (the embedded one, on a loopback port) and then pulled by a second, empty store
— the pull path a node takes. Then ``--mounts`` overlay root filesystems are mounted from
the pulled image and unmounted, one at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from kubling.node.images import rootfs
from kubling.node.images.pull import pull_image
from kubling.node.images.registry import RegistryServer
from kubling.node.images.store import ImageStore
from tests.node.images.imagefactory import Files, Layout


def make_layers(total_mb: int, count: int) -> list[Files]:
    per_layer = total_mb * 1_000_000 // count
    layers: list[Files] = []
    words = b"kubling pulls and unpacks layers of text and of random bytes\n"
    for i in range(count):
        files: Files = {f"layer{i}/": None}
        half = per_layer // 2
        for j in range(50):  # many files, as real layers have
            files[f"layer{i}/random{j}"] = os.urandom(half // 50)
            files[f"layer{i}/text{j}.txt"] = (words * (half // 50 // len(words) + 1))[: half // 50]
        layers.append(files)
    return layers


async def push_and_pull(work: Path, total_mb: int, count: int) -> tuple[float, int, ImageStore]:
    layout = Layout(work / "layout")
    layout.image("bench:v1", make_layers(total_mb, count))
    source = ImageStore(work / "registry-store")
    registry = RegistryServer(source, "127.0.0.1", 0)
    await registry.start()
    try:
        push = await asyncio.create_subprocess_exec(
            "skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout.root}:bench:v1",
            f"docker://127.0.0.1:{registry.port}/bench:v1",
        )
        if await push.wait() != 0:
            raise SystemExit("skopeo push failed")
        node = ImageStore(work / "node-store")
        started = time.perf_counter()
        result = await pull_image(node, f"localhost:{registry.port}/bench:v1")
        seconds = time.perf_counter() - started
    finally:
        await registry.stop()
    uncompressed = total_mb * 1_000_000
    print(f"pull + unpack {total_mb} MB in {count} layers ({result.size / 1e6:.1f} MB "
          f"compressed): {seconds:.2f} s = {uncompressed / 1e6 / seconds:.0f} MB/s "
          "of image content")
    return seconds, result.size, node


def mounts(store: ImageStore, work: Path, count: int) -> None:
    image = store.images()[0]
    layers = store.layer_dirs(image)
    mount_ms, unmount_ms = [], []
    for i in range(count):
        container = work / "containers" / f"kubling-bench-{i}"
        t0 = time.perf_counter()
        rootfs.mount_rootfs(layers, container)
        t1 = time.perf_counter()
        rootfs.unmount_rootfs(container)
        t2 = time.perf_counter()
        mount_ms.append((t1 - t0) * 1000)
        unmount_ms.append((t2 - t1) * 1000)
    mount_ms.sort()
    print(f"root filesystem from a pulled image ({len(layers)} layers), {count} mounts: "
          f"p50 {statistics.median(mount_ms):.2f} ms, p99 {mount_ms[int(count * 0.99) - 1]:.2f} ms"
          f"; unmount + remove p50 {statistics.median(unmount_ms):.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--mounts", type=int, default=50)
    args = parser.parse_args()
    if subprocess.run(["which", "skopeo"], capture_output=True).returncode != 0:
        raise SystemExit("skopeo not found — apt-get install skopeo")
    with tempfile.TemporaryDirectory(prefix="kubling-bench-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        _, _, node = asyncio.run(push_and_pull(work, args.mb, args.layers))
        mounts(node, work, args.mounts)


if __name__ == "__main__":
    main()
