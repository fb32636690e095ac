"""``kubling image``: the node's image store from the command line — list, pull, import
air-gap archives, remove, prune, and build the offline test images.

It works on ``<data-dir>/images`` directly (the store locks itself), so it works with or
without a running server, as ``k3s ctr images`` does for k3s's containerd.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubling.node.images import archive, build, pull, registries
from kubling.node.images import service as node_images
from kubling.node.images.credentials import Credentials
from kubling.node.images.reference import InvalidReference, parse_reference
from kubling.node.images.store import Image, ImageError, ImageStore

EPILOG = """examples:
  kubling image ls
  kubling image pull nginx:1.27
  kubling image pull localhost:5000/mon-app:dev
  kubling image import images.tar            (docker save or OCI archives, plain/gzip/zstd)
  kubling image build busybox                (offline, from this machine's Debian packages)
  kubling image build nginx --output nginx.tar
  kubling image rm nginx:1.27
  kubling image prune
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "image", help="manage the node's images (ls, pull, import, rm, prune, build)",
        description="Manage the images of this node's store (<data-dir>/images). Works "
        "whether or not `kubling server` is running.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_dir = os.environ.get("KUBLING_DATA_DIR", "/var/lib/kubling")
    parser.add_argument("--data-dir", default=default_dir,
                        help="kubling's data directory (default $KUBLING_DATA_DIR or "
                        "/var/lib/kubling)")
    parser.set_defaults(func=lambda a: _usage(parser))
    # Each verb takes --data-dir too, so it can come after the verb as users type it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=argparse.SUPPRESS,
                        help="kubling's data directory")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    ls = verbs.add_parser("ls", parents=[common], help="list images", description="List the images.")
    ls.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    ls.add_argument("--digests", action="store_true", help="show repo digests")
    ls.set_defaults(func=_ls)

    p = verbs.add_parser("pull", parents=[common], help="pull an image from a registry",
                         description="Pull an image, honouring <data-dir>/registries.yaml "
                         "(mirrors, rewrites, auth, TLS).")
    p.add_argument("image", help="image reference, e.g. nginx or localhost:5000/app:dev")
    p.add_argument("--creds", default="", metavar="USER:PASSWORD",
                   help="registry credentials (otherwise registries.yaml's)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds without progress before giving up (default %(default)s)")
    p.set_defaults(func=_pull)

    imp = verbs.add_parser("import", parents=[common], help="import image archives (air-gap)",
                           description="Import docker save or OCI image archives (plain, "
                           "gzip or zstd). Archives in <data-dir>/images/import/ are imported "
                           "by `kubling server` at start.")
    imp.add_argument("files", nargs="+", metavar="FILE")
    imp.set_defaults(func=_import)

    rm = verbs.add_parser("rm", parents=[common], help="remove images", description="Remove images by name "
                          "or ID (an ID removes all its names).")
    rm.add_argument("images", nargs="+", metavar="IMAGE")
    rm.set_defaults(func=_rm)

    prune = verbs.add_parser("prune", parents=[common], help="remove images no container uses",
                             description="Remove every image no container uses.")
    prune.set_defaults(func=_prune)

    b = verbs.add_parser("build", parents=[common], help="build a test image offline from Debian packages",
                         description="Build a small image from this machine's Debian packages "
                         f"({', '.join(sorted(build.IMAGES))}) and add it to the store, or "
                         "write it as an OCI archive with --output.")
    b.add_argument("recipe", choices=sorted(build.IMAGES))
    b.add_argument("--name", default=None, help="reference to tag it with (default per recipe)")
    b.add_argument("--output", default="", metavar="FILE",
                   help="write an OCI archive instead of adding to the store")
    b.set_defaults(func=_build)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


class Progress:
    """One line per step; on a terminal the line is rewritten in place."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self._dirty = False

    def __call__(self, line: str) -> None:
        if self.tty:
            sys.stderr.write("\r\033[K" + line[:200])
            self._dirty = True
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self._dirty:
            sys.stderr.write("\n")
            self._dirty = False


def _store(args: argparse.Namespace) -> ImageStore:
    return ImageStore(Path(args.data_dir) / "images")


def human_size(n: int) -> str:
    """Sizes as crictl prints them (decimal units)."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.3g}{unit}" if unit != "B" else f"{int(size)}B"
        size /= 1000
    return f"{n}B"


def _ls(args: argparse.Namespace) -> int:
    images = _store(args).images()
    if args.quiet:
        for image in images:
            print(image.id)
        return 0
    rows = [("IMAGE", "TAG", *(("DIGEST",) if args.digests else ()), "IMAGE ID", "SIZE")]
    for image in images:
        names = image.names or ["<none>"]
        for name in names:
            repo, tag = ("<none>", "<none>") if name == "<none>" else _split(name)
            digest = _digest_for(image, repo)
            row = (repo, tag, *((digest,) if args.digests else ()),
                   image.id.removeprefix("sha256:")[:13], human_size(image.size))
            rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _split(name: str) -> tuple[str, str]:
    ref = parse_reference(name)
    return ref.name, ref.tag or "<none>"


def _digest_for(image: Image, repo: str) -> str:
    for rd in image.repo_digests:
        if rd.startswith(repo + "@"):
            return rd.split("@", 1)[1][:19]
    return "<none>"


def _pull(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        config = registries.load_registries(Path(args.data_dir) / "registries.yaml")
    except registries.RegistryConfigError as err:
        print(f"kubling image pull: {err}", file=sys.stderr)
        return 1
    creds: list[Credentials] = []
    if args.creds:
        user, sep, password = args.creds.partition(":")
        if not sep:
            print("kubling image pull: --creds must be USER:PASSWORD", file=sys.stderr)
            return 2
        creds.append(Credentials(username=user, password=password))
    progress = Progress()
    try:
        result = asyncio.run(pull.pull_image(store, args.image, registries=config,
                                             credentials=creds, progress=progress,
                                             read_timeout=args.timeout))
    except pull.PullError as err:
        progress.done()
        print(f"kubling image pull: {err}", file=sys.stderr)
        return 1
    progress.done()
    print(f"{result.image.names[0] if result.image.names else args.image} "
          f"{result.image.id} ({human_size(result.size)} in {result.seconds:.1f}s)")
    return 0


def _import(args: argparse.Namespace) -> int:
    store = _store(args)
    progress = Progress()
    failed = 0
    for file in args.files:
        path = Path(file)
        if not path.is_file():
            progress.done()
            print(f"kubling image import: {file}: no such file", file=sys.stderr)
            failed += 1
            continue
        try:
            images = archive.import_archive(store, path, progress=progress)
        except archive.ArchiveError as err:
            progress.done()
            print(f"kubling image import: {err}", file=sys.stderr)
            failed += 1
            continue
        progress.done()
        for image in images:
            print(f"{', '.join(image.names) or '<none>'} {image.id}")
    return 1 if failed else 0


def _rm(args: argparse.Namespace) -> int:
    store = _store(args)
    status = 0
    for ref in args.images:
        try:
            for name in store.remove(ref, in_use=node_images.images_in_use(Path(args.data_dir))):
                print(f"Deleted: {name}")
        except (ImageError, InvalidReference) as err:
            print(f"kubling image rm: {err}", file=sys.stderr)
            status = 1
    return status


def _prune(args: argparse.Namespace) -> int:
    removed = _store(args).prune(node_images.images_in_use(Path(args.data_dir)))
    for image in removed:
        print(f"Deleted: {', '.join(image.names) or image.id}")
    total = sum(i.size for i in removed)
    print(f"Total reclaimed space: {human_size(total)}")
    return 0


def _build(args: argparse.Namespace) -> int:
    progress = Progress()
    started = time.monotonic()
    progress(f"building {args.recipe} from this machine's Debian packages")
    try:
        with tempfile.TemporaryDirectory(prefix="kubling-build-") as tmp:
            layout = Path(tmp) / "layout"
            built = build.build_image(args.recipe, layout, name=args.name)
            if args.output:
                build.write_archive(layout, Path(args.output))
                progress.done()
                print(f"wrote {built.name} ({human_size(built.size)}) to {args.output}")
                return 0
            tar = Path(tmp) / "image.tar"
            build.write_archive(layout, tar)
            images = archive.import_archive(_store(args), tar, progress=progress)
    except (build.BuildError, archive.ArchiveError) as err:
        progress.done()
        print(f"kubling image build: {err}", file=sys.stderr)
        return 1
    progress.done()
    for image in images:
        print(f"{built.name} {image.id} ({human_size(built.size)}, "
              f"{time.monotonic() - started:.1f}s)")
    return 0

