"""The image service of a running server: the store, the embedded registry on its own
port, and the air-gap archives of ``<data-dir>/images/import/`` imported at start.

The import runs in the background so it never delays the API's readiness; each image
imported is logged as it lands, and the node agent finds it in the store as soon as it is
recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import Callable
from pathlib import Path

from kubling.node.images import archive
from kubling.node.images.registry import RegistryServer
from kubling.node.images.store import ImageStore

log = logging.getLogger("kubling.images")

#: Partial downloads and uploads older than this are dropped at start (a day: a pull or a
#: push interrupted by a restart resumes well within it).
INGEST_MAX_AGE_SECONDS = 24 * 3600.0


class NodeImages:
    def __init__(self, root: Path, *, registry_port: int = 5000, registry_host: str = "0.0.0.0"):
        self.root = root
        self.store = ImageStore(root)
        self.import_dir = root / "import"
        self.import_dir.mkdir(parents=True, exist_ok=True)
        self.registry: RegistryServer | None = None
        if registry_port:
            data_dir = root.parent
            self.registry = RegistryServer(
                self.store,
                registry_host,
                registry_port,
                domain=f"localhost:{registry_port}",
                in_use=lambda: images_in_use(data_dir),
            )
        self._import_task: asyncio.Task[None] | None = None

    async def start(self, on_phase: Callable[[str, float], None] | None = None) -> None:
        if self.registry is not None:
            started = time.perf_counter()
            try:
                await self.registry.start()
            except OSError as err:
                if err.errno == errno.EADDRINUSE:
                    raise OSError(
                        err.errno,
                        f"port {self.registry.port} is in use — stop what holds it or pass "
                        "--registry-port (or --disable-registry)",
                    ) from None
                raise
            if on_phase is not None:
                on_phase("registry", time.perf_counter() - started)
        self._import_task = asyncio.create_task(self._import_archives(), name="image-import")
        await asyncio.to_thread(self.store.content.clean_ingest, INGEST_MAX_AGE_SECONDS)

    async def _import_archives(self) -> None:
        try:
            images = await asyncio.to_thread(
                archive.import_directory, self.store, self.import_dir, progress=log.info
            )
        except Exception:  # one bad directory must not take the server down
            log.exception("importing the archives of %s failed", self.import_dir)
            return
        if images:
            log.info("imported %d image(s) from %s", len(images), self.import_dir)

    async def wait_imported(self) -> None:
        if self._import_task is not None:
            await asyncio.shield(self._import_task)

    async def stop(self) -> None:
        if self._import_task is not None and not self._import_task.done():
            self._import_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._import_task
        if self.registry is not None:
            await self.registry.stop()


def images_in_use(data_dir: Path) -> set[str]:
    """Image IDs that containers on this node use: the node agent records each
    container's image ID in ``<data-dir>/pods/<uid>/containers/<name>/image-id``; images
    listed there are never removed by ``rm``, ``prune``, a registry DELETE or image GC."""
    used: set[str] = set()
    for marker in (data_dir / "pods").glob("*/containers/*/image-id"):
        try:
            used.add(marker.read_text().strip())
        except OSError:
            continue
    return used
