"""Air-gap import of image archives. The archives are written by skopeo, an independent
implementation of both formats (OCI archive and docker save), then compressed with the
gzip and zstd command-line tools, or damaged on purpose with Python's tarfile."""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from kubling.node.images import manifest as mf
from kubling.node.images.archive import (
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    ArchiveError,
    import_archive,
    import_directory,
)
from kubling.node.images.store import Image, ImageStore
from tests.node.images.imagefactory import BUSYBOXISH, Files, Layout

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo")

APP_V1 = "docker.io/library/app:v1"
APP_V2 = "docker.io/library/app:v2"
V1_LAYERS: list[Files] = [BUSYBOXISH, {"app/": None, "app/main.py": b"print('v1')\n"}]
V2_LAYERS: list[Files] = [BUSYBOXISH, {"app/": None, "app/main.py": b"print('v2')\n"}]


# ---- making archives ------------------------------------------------------------------------


def skopeo(source: str, dest: str) -> None:
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--insecure-policy", source, dest],
        check=True,
        capture_output=True,
    )


def compress(path: Path, tool: str) -> Path:
    """``gzip`` or ``zstd`` a copy of ``path``; the name keeps no hint of the format."""
    out = path.with_name(f"{path.name}-{tool}")
    with path.open("rb") as src, out.open("wb") as dst:
        subprocess.run([tool, "-c", "-q"], stdin=src, stdout=dst, check=True)
    return out


def tar_directory(directory: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w") as tar:
        for path in sorted(directory.rglob("*")):
            tar.add(path, path.relative_to(directory).as_posix(), recursive=False)
    return archive


Edit = Callable[[tarfile.TarInfo, bytes], bytes | None]


def rewrite(src: Path, dst: Path, edit: Edit, extra: dict[str, bytes] | None = None) -> Path:
    """Copy a tar member by member through ``edit`` (returns the new content, or None to
    drop the member), then append ``extra`` members."""
    with tarfile.open(src) as old, tarfile.open(dst, "w") as new:
        for member in old.getmembers():
            data = old.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            changed = edit(member, data)
            if changed is None:
                continue
            member.size = len(changed)
            new.addfile(member, io.BytesIO(changed) if member.isfile() else None)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            new.addfile(info, io.BytesIO(data))
    return dst


def keep(_: tarfile.TarInfo, data: bytes) -> bytes:
    return data


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One source layout (app:v1, app:v2) and the archives skopeo makes of it."""
    root = tmp_path_factory.mktemp("archives")
    layout = Layout(root / "layout")
    layout.image(APP_V1, V1_LAYERS)
    layout.image(APP_V2, V2_LAYERS, compression="none")  # skopeo 1.9 makes no zstd docker
    out = {"layout": layout.root}
    out["oci"] = root / "oci.tar"
    skopeo(f"oci:{layout.root}:{APP_V1}", f"oci-archive:{out['oci']}:{APP_V1}")
    out["docker"] = root / "docker.tar"
    skopeo(f"oci:{layout.root}:{APP_V1}", f"docker-archive:{out['docker']}:app:v1")
    out["docker-v2"] = root / "docker-v2.tar"
    skopeo(f"oci:{layout.root}:{APP_V2}", f"docker-archive:{out['docker-v2']}:app:v2")
    for kind in ("oci", "docker"):
        for tool in ("gzip", "zstd"):
            out[f"{kind}-{tool}"] = compress(out[kind], tool)
    out["oci-xz"] = compress(out["oci"], "xz")
    out["docker-bzip2"] = compress(out["docker"], "bzip2")
    return out


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


# ---- checking the store ---------------------------------------------------------------------


def tree(directory: Path) -> Files:
    """A layer directory as the factory describes layers: bytes, symlink target, None."""
    found: Files = {}
    for path in sorted(directory.rglob("*")):
        name = path.relative_to(directory).as_posix()
        if path.is_symlink():
            found[name] = os.readlink(path)
        elif path.is_dir():
            found[name] = None
        else:
            found[name] = path.read_bytes()
    return found


def as_tree(files: Files) -> Files:
    return {name.rstrip("/"): content for name, content in files.items()}


def assert_rootfs(store: ImageStore, image: Image, layers: list[Files]) -> None:
    dirs = store.layer_dirs(image)
    assert [tree(d) for d in dirs] == [as_tree(files) for files in layers]


def assert_untouched(store: ImageStore, before: list[Image]) -> None:
    """A refused import records nothing and leaves no half-unpacked layer or ingest."""
    assert [i.id for i in store.images()] == [i.id for i in before]
    assert not [p.name for p in store.layers_dir.iterdir() if p.name.startswith(".tmp-")]
    assert not list(store.content.ingest.iterdir())


# ---- formats --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    [
        "oci",
        "oci-gzip",
        "oci-zstd",
        "oci-xz",
        "docker",
        "docker-gzip",
        "docker-zstd",
        "docker-bzip2",
    ],
)
def test_archive_formats_import_with_names_and_root_filesystem(
    made: dict[str, Path], store: ImageStore, kind: str
) -> None:
    lines: list[str] = []
    images = import_archive(store, made[kind], progress=lines.append)
    assert [i.names for i in images] == [[APP_V1]]
    assert_rootfs(store, images[0], V1_LAYERS)
    assert lines[0] == f"importing {made[kind].name}"
    short = images[0].id[:19]
    assert re.fullmatch(rf"imported {APP_V1} \({short}…, [0-9.]+ k?B\)", lines[1]), lines[1]
    found = store.get("app:v1")
    assert found is not None and found.id == images[0].id
    assert store.config(found).cmd == ("sh",)


def test_both_formats_give_the_same_image_and_layers(
    made: dict[str, Path], store: ImageStore
) -> None:
    oci = import_archive(store, made["oci-zstd"])[0]
    docker = import_archive(store, made["docker-gzip"])[0]
    assert oci.id == docker.id  # the image ID is the config digest, the same in both
    assert [la.diff_id for la in oci.layers] == [la.diff_id for la in docker.layers]
    assert docker.manifest != oci.manifest  # docker save has no manifest: one is made
    doc = mf.parse(store.content.read(docker.manifest))
    assert doc.media_type == mf.DOCKER_MANIFEST


@pytest.mark.parametrize("gzip_layers", [False, True])
def test_classic_docker_save_layout(
    made: dict[str, Path], store: ImageStore, tmp_path: Path, gzip_layers: bool
) -> None:
    """Docker before 25 writes each layer as ``<id>/layer.tar`` (a real file, where skopeo
    writes a link to ``<hex>.tar``), sometimes gzip'd; manifest.json names those paths."""
    with tarfile.open(made["docker"]) as src:
        links = {m.name: m.linkname.removeprefix("../") for m in src.getmembers() if m.issym()}
        blobs = {t: src.extractfile(t).read() for t in links.values()}  # type: ignore[union-attr]
    layer_path = {target: name for name, target in links.items()}

    def classic(member: tarfile.TarInfo, data: bytes) -> bytes | None:
        if member.issym():
            member.type, member.linkname = tarfile.REGTYPE, ""
            content = blobs[links[member.name]]
            return gzip.compress(content, mtime=0) if gzip_layers else content
        if member.name in blobs:
            return None  # only the <id>/layer.tar copies remain
        if member.name == "manifest.json":
            doc = json.loads(data)
            doc[0]["Layers"] = [layer_path[p] for p in doc[0]["Layers"]]
            return json.dumps(doc).encode()
        return data

    images = import_archive(store, rewrite(made["docker"], tmp_path / "classic.tar", classic))
    assert [i.names for i in images] == [[APP_V1]]
    assert_rootfs(store, images[0], V1_LAYERS)
    expected = DOCKER_LAYER_GZIP if gzip_layers else DOCKER_LAYER
    assert {la.media_type for la in images[0].layers} == {expected}


def test_multi_image_oci_archive(made: dict[str, Path], store: ImageStore, tmp_path: Path) -> None:
    both = tmp_path / "both"
    for name in (APP_V1, APP_V2):
        skopeo(f"oci:{made['layout']}:{name}", f"oci:{both}:{name}")
    images = import_archive(store, tar_directory(both, tmp_path / "both.tar"))
    assert sorted(n for i in images for n in i.names) == [APP_V1, APP_V2]
    by_name = {i.names[0]: i for i in images}
    assert_rootfs(store, by_name[APP_V2], V2_LAYERS)
    assert by_name[APP_V1].layers[0].diff_id == by_name[APP_V2].layers[0].diff_id


def test_multi_image_docker_save(made: dict[str, Path], store: ImageStore, tmp_path: Path) -> None:
    """`docker save app:v1 app:v2`: one manifest.json listing both; the shared layer is
    stored once and linked (``<id>/layer.tar -> ../<hex>.tar``)."""
    with tarfile.open(made["docker-v2"]) as v2:
        v2_entries = json.loads(v2.extractfile("manifest.json").read())  # type: ignore[union-attr]
        v2_files = {m.name: m for m in v2.getmembers()}
        v2_data = {m.name: v2.extractfile(m).read() for m in v2.getmembers() if m.isfile()}  # type: ignore[union-attr]

    def merge(member: tarfile.TarInfo, data: bytes) -> bytes:
        if member.name == "manifest.json":
            return json.dumps(json.loads(data) + v2_entries).encode()
        return data

    merged = rewrite(made["docker"], tmp_path / "first.tar", merge)
    with tarfile.open(merged, "a") as tar:
        present = set(tar.getnames())
        for name, member in v2_files.items():
            if name not in present:
                tar.addfile(member, io.BytesIO(v2_data[name]) if member.isfile() else None)
    images = import_archive(store, merged)
    assert sorted(n for i in images for n in i.names) == [APP_V1, APP_V2]
    assert_rootfs(store, next(i for i in images if APP_V2 in i.names), V2_LAYERS)


def test_docker_25_archive_takes_names_from_repo_tags(store: ImageStore, tmp_path: Path) -> None:
    """Docker 25+ writes an OCI layout and manifest.json; when index.json gives only a tag,
    the name comes from RepoTags."""
    layout = Layout(tmp_path / "layout")
    built = layout.image("v1", V1_LAYERS, compression="zstd")
    manifest_json = [
        {
            "Config": f"blobs/sha256/{built.config_digest.removeprefix('sha256:')}",
            "RepoTags": ["app:v1"],
            "Layers": [f"blobs/sha256/{d.removeprefix('sha256:')}" for d in built.layer_digests],
        }
    ]
    (layout.root / "manifest.json").write_text(json.dumps(manifest_json))
    images = import_archive(store, tar_directory(layout.root, tmp_path / "d25.tar"))
    assert images[0].names == [APP_V1]
    assert images[0].manifest == built.manifest_digest


def test_containerd_name_annotation_wins(store: ImageStore, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "layout")
    layout.image("v1", V1_LAYERS)
    index = json.loads((layout.root / "index.json").read_text())
    index["manifests"][0]["annotations"]["io.containerd.image.name"] = "registry.local/team/app:1"
    (layout.root / "index.json").write_text(json.dumps(index))
    images = import_archive(store, tar_directory(layout.root, tmp_path / "ctr.tar"))
    assert images[0].names == ["registry.local/team/app:1"]


def test_image_without_a_name_is_imported_by_digest(store: ImageStore, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "layout")
    built = layout.image("latest", V1_LAYERS)  # a bare tag is not a name
    lines: list[str] = []
    images = import_archive(
        store, tar_directory(layout.root, tmp_path / "x.tar"), progress=lines.append
    )
    assert images[0].names == [] and images[0].id == built.config_digest
    assert store.get(built.config_digest) is not None
    assert "<none>" in lines[-1]


def test_other_platform_is_refused_and_the_rest_imported(store: ImageStore, tmp_path: Path) -> None:
    other = "arm64" if mf.host_platform().architecture != "arm64" else "amd64"
    layout = Layout(tmp_path / "layout")
    layout.image(APP_V1, V1_LAYERS)
    layout.image("docker.io/library/app:single", V2_LAYERS, architecture=other)
    layout.multi_platform("docker.io/library/app:multi", {other: V2_LAYERS})
    with pytest.raises(ArchiveError) as caught:
        import_archive(store, tar_directory(layout.root, tmp_path / "mixed.tar"))
    err = caught.value
    assert "2 of 3 images could not be imported" in str(err)
    assert f"image docker.io/library/app:single: the image is for linux/{other}" in str(err)
    assert f"image docker.io/library/app:multi: no image for {mf.host_platform()}" in str(err)
    assert [i.names for i in err.images] == [[APP_V1]]
    assert [i.names for i in store.images()] == [[APP_V1]]


# ---- idempotence and restarts ---------------------------------------------------------------


def test_reimport_is_idempotent_and_survives_restart(
    made: dict[str, Path], store: ImageStore
) -> None:
    first = import_archive(store, made["docker-zstd"])
    blobs = store.content.digests()
    layers = sorted(p.name for p in store.layers_dir.iterdir())
    again = import_archive(store, made["docker-zstd"])
    assert [(i.id, i.manifest, i.names) for i in again] == [
        (i.id, i.manifest, i.names) for i in first
    ]
    assert store.content.digests() == blobs
    assert sorted(p.name for p in store.layers_dir.iterdir()) == layers

    restarted = ImageStore(store.root)
    found = restarted.get(APP_V1)
    assert found is not None and found.id == first[0].id
    assert_rootfs(restarted, found, V1_LAYERS)


# ---- the import directory -------------------------------------------------------------------


def test_import_directory_imports_all_skips_unchanged_and_survives_a_bad_file(
    made: dict[str, Path], store: ImageStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "import"
    directory.mkdir()
    shutil.copy(made["oci-gzip"], directory / "a-app-v1.tar.gz")
    (directory / "b-broken.tar").write_bytes(made["oci"].read_bytes()[:3000])
    shutil.copy(made["docker-v2"], directory / "c-app-v2")  # no extension: magic decides
    (directory / "d-notes.txt").write_text("not an archive\n")

    lines: list[str] = []
    with caplog.at_level(logging.ERROR, logger="kubling.node.images.archive"):
        images = import_directory(store, directory, progress=lines.append)
    assert sorted(n for i in images for n in i.names) == [APP_V1, APP_V2]
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 2
    assert "b-broken.tar" in errors[0] and "truncated or corrupt" in errors[0]
    assert "d-notes.txt" in errors[1] and "not an image archive" in errors[1]
    state = json.loads((directory / ".imported.json").read_text())
    assert sorted(state) == ["a-app-v1.tar.gz", "c-app-v2"]

    lines.clear()
    assert import_directory(store, directory, progress=lines.append) == []
    assert [line for line in lines if line.startswith("importing")] == [
        "importing b-broken.tar",  # failed ones are tried again
        "importing d-notes.txt",
    ]

    os.utime(directory / "c-app-v2", ns=(0, 10**18))  # changed: imported again
    (directory / "b-broken.tar").unlink()
    again = import_directory(store, directory)
    assert [i.names for i in again] == [[APP_V2]]
    assert sorted(json.loads((directory / ".imported.json").read_text())) == [
        "a-app-v1.tar.gz",
        "c-app-v2",
    ]


# ---- refusals -------------------------------------------------------------------------------


def blob_member(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def oci_manifest(made: dict[str, Path]) -> tuple[str, mf.Manifest]:
    index = json.loads((made["layout"] / "index.json").read_text())
    digest = next(
        e["digest"]
        for e in index["manifests"]
        if e["annotations"]["org.opencontainers.image.ref.name"] == APP_V1
    )
    doc = mf.parse((made["layout"] / blob_member(digest)).read_bytes())
    assert isinstance(doc, mf.Manifest)
    return digest, doc


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF])


def test_corrupted_blob_is_refused(
    made: dict[str, Path], store: ImageStore, tmp_path: Path
) -> None:
    _, manifest = oci_manifest(made)
    layer = manifest.layers[1].digest

    def corrupt(member: tarfile.TarInfo, data: bytes) -> bytes:
        return flip_last_byte(data) if member.name == blob_member(layer) else data

    bad = rewrite(made["oci"], tmp_path / "bad.tar", corrupt)
    before = store.images()
    with pytest.raises(ArchiveError) as caught:
        import_archive(store, bad)
    assert str(caught.value) == (
        f"{bad}: image {APP_V1}: blob {layer} is corrupted: its content does not match its "
        "digest (the archive is damaged; copy or export it again)"
    )
    assert_untouched(store, before)


def test_corrupted_docker_layer_is_refused(
    made: dict[str, Path], store: ImageStore, tmp_path: Path
) -> None:
    """docker save names layers by file, not by digest: the config's diff_ids catch it."""

    def corrupt(member: tarfile.TarInfo, data: bytes) -> bytes:
        if member.name.endswith(".tar") and b"main.py" in data:
            return data.replace(b"print('v1')", b"print('v9')")
        return data

    bad = rewrite(made["docker"], tmp_path / "bad.tar", corrupt)
    with pytest.raises(
        ArchiveError,
        match=r"bad\.tar: image docker\.io/library/app:v1: layer "
        r"sha256:\w+: uncompressed digest sha256:\w+ does not match",
    ):
        import_archive(store, bad)
    assert_untouched(store, [])


@pytest.mark.parametrize("how", ["content", "size", "digest"])
def test_manifest_that_does_not_match_index_json_is_refused(
    made: dict[str, Path], store: ImageStore, tmp_path: Path, how: str
) -> None:
    digest, _ = oci_manifest(made)
    wrong = "sha256:" + "0" * 64

    def tamper(member: tarfile.TarInfo, data: bytes) -> bytes:
        if how == "content" and member.name == blob_member(digest):
            return data + b" "  # still valid JSON, but not the manifest index.json names
        if how != "content" and member.name == "index.json":
            index = json.loads(data)
            if how == "size":
                index["manifests"][0]["size"] += 1
            else:
                index["manifests"][0]["digest"] = wrong
            return json.dumps(index).encode()
        return data

    expected = {
        "content": f"blob {digest} is corrupted: its content does not match its digest",
        "size": f"manifest {digest} has",
        "digest": f"its manifest {wrong} is not in the archive",
    }[how]
    with pytest.raises(ArchiveError, match=expected):
        import_archive(store, rewrite(made["oci"], tmp_path / "bad.tar", tamper))
    assert_untouched(store, [])


@pytest.mark.parametrize("kind", ["oci", "docker", "oci-gzip", "docker-zstd"])
def test_truncated_archive_is_refused(
    made: dict[str, Path], store: ImageStore, tmp_path: Path, kind: str
) -> None:
    data = made[kind].read_bytes()
    cut = tmp_path / "cut"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match=rf"^{cut}: the file is truncated or corrupt \("):
        import_archive(store, cut)
    assert_untouched(store, [])


@pytest.mark.parametrize("evil", ["../evil", "/etc/evil", "blobs/../../evil"])
def test_member_outside_the_archive_is_refused(
    made: dict[str, Path], store: ImageStore, tmp_path: Path, evil: str
) -> None:
    bad = rewrite(made["oci"], tmp_path / "bad.tar", keep, extra={evil: b"gotcha"})
    with pytest.raises(ArchiveError, match=r"refusing the archive: its member .* points outside"):
        import_archive(store, bad)
    assert not (tmp_path / "evil").exists()
    assert_untouched(store, [])


def test_symlink_outside_the_archive_is_refused(
    made: dict[str, Path], store: ImageStore, tmp_path: Path
) -> None:
    def relink(member: tarfile.TarInfo, data: bytes) -> bytes:
        if member.issym():
            member.linkname = "../../etc/shadow"
        return data

    with pytest.raises(
        ArchiveError, match=re.escape("links to '../../etc/shadow', outside the archive")
    ):
        import_archive(store, rewrite(made["docker"], tmp_path / "bad.tar", relink))


def test_layer_with_parent_paths_is_refused(store: ImageStore, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "layout")
    layout.image(APP_V1, [BUSYBOXISH, {"../escape": b"x"}])
    before = store.images()
    with pytest.raises(ArchiveError, match=rf"image {APP_V1}: layer sha256:\w+: .*\.\./escape"):
        import_archive(store, tar_directory(layout.root, tmp_path / "evil.tar"))
    assert not (tmp_path / "escape").exists()
    assert_untouched(store, before)


def test_lz4_is_refused_clearly(made: dict[str, Path], store: ImageStore) -> None:
    with pytest.raises(ArchiveError, match=r"compressed with lz4, which is not supported"):
        import_archive(store, compress(made["oci"], "lz4"))


def test_not_an_archive(store: ImageStore, tmp_path: Path) -> None:
    text = tmp_path / "README"
    text.write_text("hello\n" * 200)
    with pytest.raises(ArchiveError, match="not an image archive"):
        import_archive(store, text)
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w"):
        pass
    with pytest.raises(ArchiveError, match=r"neither index\.json .* nor manifest\.json"):
        import_archive(store, empty)
