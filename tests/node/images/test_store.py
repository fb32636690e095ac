"""The content store and the image store: verified blobs, names, shared layers,
reference counting, prune and image GC."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from kubling.node.images import manifest as mf
from kubling.node.images.content import ContentStore, DigestError, sha256_digest
from kubling.node.images.store import ImageError, ImageNotFound, ImageStore
from tests.node.images.imagefactory import BUSYBOXISH, Built, Layout


def load(store: ImageStore, layout: Layout) -> None:
    """Copy every blob of a layout into the store's content (as a pull would)."""
    for blob in (layout.root / "blobs" / "sha256").iterdir():
        store.content.put(blob.read_bytes(), "sha256:" + blob.name)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "layout")


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


# ---- content store ----------------------------------------------------------------


def test_blob_verified_on_write(tmp_path: Path) -> None:
    cs = ContentStore(tmp_path)
    data = b"hello"
    d = cs.put(data)
    assert d == sha256_digest(data) and cs.read(d) == data
    with pytest.raises(DigestError, match="does not match"):
        cs.put(b"other", expected=d)
    w = cs.writer(sha256_digest(b"abc"), size=3)
    w.write(b"abd")
    with pytest.raises(DigestError):
        w.commit()
    assert not any(cs.ingest.iterdir()), "a refused blob leaves no ingest behind"
    assert cs.digests() == [d]


def test_blob_verified_on_read(tmp_path: Path) -> None:
    cs = ContentStore(tmp_path)
    d = cs.put(b"x" * 1000)
    cs.path(d).write_bytes(b"y" * 1000)
    with pytest.raises(DigestError, match="corrupted"):
        cs.read(d)
    with pytest.raises(DigestError, match="corrupted"):
        cs.verify(d)


def test_ingest_resumes(tmp_path: Path) -> None:
    cs = ContentStore(tmp_path)
    data = os.urandom(10_000)
    d = sha256_digest(data)
    w = cs.writer(d, size=len(data), key=d)
    w.write(data[:4000])
    w.close()  # interrupted download
    w2 = cs.writer(d, size=len(data), key=d)
    assert w2.offset == 4000
    w2.write(data[4000:])
    assert w2.commit() == d
    assert cs.read(d) == data
    with pytest.raises(DigestError, match="larger than"):
        w3 = cs.writer(sha256_digest(b"abc"), size=2, key="x")
        w3.write(b"abc")


@pytest.mark.parametrize("bad", ["sha256:../../etc", "md5:abc", "sha256:" + "A" * 64, ""])
def test_digests_are_checked_before_becoming_paths(tmp_path: Path, bad: str) -> None:
    with pytest.raises(DigestError):
        ContentStore(tmp_path).path(bad)


# ---- image store --------------------------------------------------------------------


def test_add_and_find(store: ImageStore, layout: Layout) -> None:
    built = layout.image("app:v1", [BUSYBOXISH, {"app/": None, "app/run": b"go"}])
    load(store, layout)
    image = store.add(built.manifest_digest, ["app:v1"])
    assert image.id == built.config_digest
    assert image.names == ["docker.io/library/app:v1"]
    assert image.repo_digests == [f"docker.io/library/app@{built.manifest_digest}"]
    for ref in (
        "app:v1",
        "docker.io/library/app:v1",
        built.config_digest,
        built.config_digest[7:19],
        f"app@{built.manifest_digest}",
    ):
        found = store.get(ref)
        assert found is not None and found.id == image.id, ref
    assert store.get("app:v2") is None
    dirs = store.layer_dirs(image)
    assert (dirs[0] / "etc" / "passwd").read_bytes().startswith(b"root:")
    assert (dirs[1] / "app" / "run").read_bytes() == b"go"
    assert store.config(image).cmd == ("sh",)
    # a new store on the same directory (a restart) finds everything
    again = ImageStore(store.root).get("app:v1")
    assert again is not None and again.layers == image.layers


def test_index_selects_the_host_platform(store: ImageStore, layout: Layout) -> None:
    host = mf.host_platform().architecture
    other = "arm64" if host != "arm64" else "amd64"
    built = layout.multi_platform(
        "multi:1", {other: [{"which": b"other"}], host: [{"which": b"host"}]}
    )
    load(store, layout)
    image = store.add(built.manifest_digest, ["multi:1"])
    assert (store.layer_dirs(image)[0] / "which").read_bytes() == b"host"
    only_other = layout.multi_platform("foreign:1", {other: [{"x": b"y"}]})
    load(store, layout)
    with pytest.raises(ImageError, match=f"no image for linux/{host}"):
        store.add(only_other.manifest_digest, ["foreign:1"])


def test_incomplete_or_inconsistent_images_are_refused(store: ImageStore, layout: Layout) -> None:
    built = layout.image("app:v1", [BUSYBOXISH])
    for blob in (layout.root / "blobs" / "sha256").iterdir():
        if "sha256:" + blob.name != built.layer_digests[0]:
            store.content.put(blob.read_bytes())
    with pytest.raises(ImageError, match="missing"):
        store.add(built.manifest_digest, ["app:v1"])
    assert store.images() == []
    # a layer whose uncompressed digest is not the config's diff_id
    bad = layout.image("bad:v1", [BUSYBOXISH], config={"Cmd": ["sh"]})
    cfg = mf.parse_config((layout.root / "blobs/sha256" / bad.config_digest[7:]).read_bytes())
    assert cfg.diff_ids == tuple(bad.diff_ids)
    import json

    raw = json.loads((layout.root / "blobs/sha256" / bad.config_digest[7:]).read_bytes())
    raw["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    cfg_bytes = json.dumps(raw).encode()
    cfg_digest = layout.blob(cfg_bytes)
    manifest = json.loads((layout.root / "blobs/sha256" / bad.manifest_digest[7:]).read_bytes())
    manifest["config"] = {"mediaType": mf.OCI_CONFIG, "digest": cfg_digest, "size": len(cfg_bytes)}
    m_digest = layout.blob(json.dumps(manifest).encode())
    load(store, layout)
    with pytest.raises(ImageError, match="does not match the config's diff_id"):
        store.add(m_digest, ["bad:v1"])
    assert store.images() == []
    assert not list(store.layers_dir.iterdir()), "a refused layer leaves nothing unpacked"


def test_corrupted_layer_blob_is_not_unpacked(store: ImageStore, layout: Layout) -> None:
    built = layout.image("app:v1", [BUSYBOXISH])
    load(store, layout)
    path = store.content.path(built.layer_digests[0])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="corrupted"):
        store.add(built.manifest_digest, ["app:v1"])
    assert store.images() == []


def _two_images(store: ImageStore, layout: Layout) -> tuple[Built, Built]:
    shared = {"shared/": None, "shared/lib": b"x" * 100}
    a = layout.image("a:1", [shared, {"a": b"a"}])
    b = layout.image("b:1", [shared, {"b": b"b"}])
    load(store, layout)
    store.add(a.manifest_digest, ["a:1", "a:latest"])
    store.add(b.manifest_digest, ["b:1"])
    return a, b


def test_layers_are_shared_and_reference_counted(store: ImageStore, layout: Layout) -> None:
    a, b = _two_images(store, layout)
    assert a.diff_ids[0] == b.diff_ids[0]
    assert len(list(store.layers_dir.iterdir())) == 3
    assert store.remove("a:latest") == ["docker.io/library/a:latest"]
    assert store.get("a:1") is not None, "the image keeps its other name"
    assert store.remove(a.config_digest) == ["docker.io/library/a:1"]
    assert store.get("a:1") is None
    assert not store.content.has(a.layer_digests[1]), "a's own layer blob is gone"
    assert store.content.has(a.layer_digests[0]), "the shared layer stays for b"
    assert sorted(p.name for p in store.layers_dir.iterdir()) == sorted(
        d[7:] for d in b.diff_ids
    )
    assert not store.content.has(a.config_digest) and not store.content.has(a.manifest_digest)
    with pytest.raises(ImageNotFound):
        store.remove("a:1")


def test_images_in_use_are_never_removed(store: ImageStore, layout: Layout) -> None:
    a, b = _two_images(store, layout)
    with pytest.raises(ImageError, match="in use"):
        store.remove(b.config_digest, in_use={b.config_digest})
    removed = store.prune(in_use={b.config_digest})
    assert [i.id for i in removed] == [a.config_digest]
    assert [i.id for i in store.images()] == [b.config_digest]


def test_garbage_collection_thresholds(store: ImageStore, layout: Layout) -> None:
    a, b = _two_images(store, layout)
    c = layout.image("c:1", [{"c": b"c"}])
    load(store, layout)
    store.add(c.manifest_digest, ["c:1"])
    store.mark_used(b.config_digest)
    time.sleep(0.01)
    store.mark_used(a.config_digest)
    # below the high threshold: nothing happens
    assert store.garbage_collect(set(), usage=lambda: 84.0) == []
    # above: least recently used first, skipping what is in use, until below low
    readings = iter([90.0, 88.0, 79.0])
    removed = store.garbage_collect(
        {c.config_digest}, usage=lambda: next(readings), high=85, low=80
    )
    assert [i.id for i in removed] == [b.config_digest]
    assert {i.id for i in store.images()} == {a.config_digest, c.config_digest}


def test_fresh_unreferenced_blobs_survive_a_sweep(store: ImageStore, layout: Layout) -> None:
    _two_images(store, layout)
    uploading = store.content.put(b"a layer being pushed")
    store.remove("b:1")
    assert store.content.has(uploading), "an upload in progress is not swept"
    old = time.time() - 3600
    os.utime(store.content.path(uploading), (old, old))
    store.remove("a:latest")
    assert not store.content.has(uploading), "an abandoned upload is swept"
    assert store.get("a:1") is not None


def test_tag_keeps_foreign_platform_names(store: ImageStore, layout: Layout) -> None:
    host = mf.host_platform().architecture
    other = "arm64" if host != "arm64" else "amd64"
    foreign = layout.multi_platform("f:1", {other: [{"x": b"y"}]})
    load(store, layout)
    assert store.tag("localhost:5000/f:1", foreign.manifest_digest) is None
    assert store.names() == {"localhost:5000/f:1": foreign.manifest_digest}
    assert store.images() == []


def test_two_writers_of_one_blob_take_turns(tmp_path: Path) -> None:
    """A second process downloading the same blob waits for the first, then finds the
    blob published and discards its copy — no interleaved bytes, no corrupt blob."""
    import subprocess
    import sys

    cs = ContentStore(tmp_path)
    data = os.urandom(200_000)
    d = sha256_digest(data)
    first = cs.writer(d, size=len(data), key=d)
    first.write(data[:1000])
    script = (
        "import sys; from pathlib import Path; from kubling.node.images.content import "
        "ContentStore; cs = ContentStore(Path(sys.argv[1])); d = sys.argv[2]; "
        "w = cs.writer(d, size=200000, key=d); print(w.already_present, w.offset); "
        "w.write(b'x' * 200000); print(w.commit() == d)"
    )
    second = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path), d], stdout=subprocess.PIPE, text=True
    )
    time.sleep(0.5)
    assert second.poll() is None, "the second writer waits for the lock"
    first.write(data[1000:])
    assert first.commit() == d
    out, _ = second.communicate(timeout=30)
    assert out.split() == ["True", "0", "True"]
    assert cs.read(d) == data
    assert not any(cs.ingest.iterdir())


def test_stale_ingests_are_dropped_fresh_ones_kept(tmp_path: Path) -> None:
    cs = ContentStore(tmp_path)
    fresh = cs.writer(sha256_digest(b"fresh"), key="fresh")
    fresh.write(b"fre")
    fresh.close()
    stale = cs.writer(sha256_digest(b"stale"), key="stale")
    stale.write(b"sta")
    stale.close()
    old = time.time() - 7200
    os.utime(stale.path, (old, old))
    assert cs.clean_ingest(older_than=3600) == [stale.path]
    assert fresh.path.exists() and not stale.path.exists()
