"""Image archives written without a container engine (tests/support/oci_archive.py): what
``ctr images import`` and ``docker load`` read from them."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.support.oci_archive import (
    LayerFile,
    go_architecture,
    image_archive,
    image_config,
    layered_archive,
    normalized_reference,
    write_image_archive,
)


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("busybox:dev", "docker.io/library/busybox:dev"),
        ("busybox", "docker.io/library/busybox:latest"),
        ("soundmind/operator:dev", "docker.io/soundmind/operator:dev"),
        ("localhost/pause:dev", "localhost/pause:dev"),
        ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
        ("localhost:5000/x", "localhost:5000/x:latest"),
    ],
)
def test_references_normalize_as_the_cri_reads_them(name: str, reference: str):
    assert normalized_reference(name) == reference


def members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def blob(files: dict[str, bytes], digest: str) -> bytes:
    data = files[f"blobs/sha256/{digest.removeprefix('sha256:')}"]
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest, "a blob's name is its digest"
    return data


@pytest.fixture
def archive(tmp_path: Path) -> bytes:
    program = tmp_path / "program"
    program.write_bytes(b"\x7fELF pretend")
    files = [LayerFile("bin/tool", program), LayerFile("bin/sh", link="tool"), LayerFile("tmp", mode=0o1777)]
    return image_archive("soundmind-tool:dev", files, ["/bin/tool", "run"], env=("PATH=/bin",), machine="x86_64")


def test_archive_is_an_oci_layout_naming_the_image_for_containerd(archive: bytes):
    files = members(archive)

    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    (entry,) = json.loads(files["index.json"])["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == "docker.io/library/soundmind-tool:dev"
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "dev"
    manifest = json.loads(blob(files, entry["digest"]))
    assert manifest["mediaType"] == entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    config = json.loads(blob(files, manifest["config"]["digest"]))
    assert config["os"] == "linux" and config["architecture"] == "amd64"
    assert config["config"] == {"Entrypoint": ["/bin/tool", "run"], "Env": ["PATH=/bin"]}
    # An uncompressed layer's diff id is its digest.
    assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in manifest["layers"]]


def test_archive_is_also_what_docker_load_reads(archive: bytes):
    files = members(archive)

    (image,) = json.loads(files["manifest.json"])
    assert image["RepoTags"] == ["soundmind-tool:dev"]
    assert image["Config"] in files and all(layer in files for layer in image["Layers"])


def test_layer_holds_the_files_links_and_directories_with_their_parents_first(archive: bytes):
    files = members(archive)
    (entry,) = json.loads(files["index.json"])["manifests"]
    (layer,) = json.loads(blob(files, entry["digest"]))["layers"]

    with tarfile.open(fileobj=io.BytesIO(blob(files, layer["digest"]))) as tar:
        entries = {m.name: m for m in tar.getmembers()}
        assert list(entries) == ["bin", "tmp", "bin/sh", "bin/tool"]
        assert entries["bin"].isdir() and entries["tmp"].isdir() and entries["tmp"].mode == 0o1777
        assert entries["bin/sh"].issym() and entries["bin/sh"].linkname == "tool"
        assert tar.extractfile("bin/tool").read() == b"\x7fELF pretend"
        assert {m.mtime for m in entries.values()} == {0}, "reproducible: fixed times"


def test_same_files_give_the_same_archive(tmp_path: Path):
    program = tmp_path / "program"
    program.write_bytes(b"x")

    def build() -> bytes:
        return image_archive("t:1", [LayerFile("p", program)], ["/p"], machine="aarch64")

    assert build() == build()


def test_a_layer_on_top_of_a_saved_image_keeps_its_layers_and_sets_its_environment(archive: bytes, tmp_path: Path):
    base = tmp_path / "base.tar"
    base.write_bytes(archive)
    source = tmp_path / "module.py"
    source.write_text("VERSION = 'old'\n")

    out = layered_archive(
        base, tmp_path / "layered.tar", "soundmind-tool:old", [LayerFile("opt/old/module.py", source, mode=0o644)],
        env=("PATH=/opt/old/bin", "PYTHONPATH=/opt/old"),
    )  # fmt: skip

    files, based_on = members(out.read_bytes()), members(archive)
    (image,) = json.loads(files["manifest.json"])
    (under,) = json.loads(based_on["manifest.json"])
    assert image["RepoTags"] == ["soundmind-tool:old"]
    assert image["Layers"][:-1] == under["Layers"] and all(files[p] == based_on[p] for p in under["Layers"])
    config = json.loads(files[image["Config"]])
    old_config = json.loads(based_on[under["Config"]])
    assert config["config"]["Entrypoint"] == old_config["config"]["Entrypoint"]
    assert config["config"]["Env"] == ["PATH=/opt/old/bin", "PYTHONPATH=/opt/old"]  # PATH replaced, not doubled
    top = files[image["Layers"][-1]]
    assert config["rootfs"]["diff_ids"] == [
        *old_config["rootfs"]["diff_ids"],
        "sha256:" + hashlib.sha256(top).hexdigest(),
    ]
    with tarfile.open(fileobj=io.BytesIO(top)) as tar:
        assert tar.extractfile("opt/old/module.py").read() == b"VERSION = 'old'\n"
        assert tar.getmember("opt/old/module.py").mode == 0o644 and tar.getmember("opt").isdir()


def test_unknown_machine_is_refused():
    with pytest.raises(ValueError, match="mips"):
        go_architecture("mips")


def test_the_config_is_read_back_through_dockers_manifest(tmp_path: Path):
    archive = write_image_archive(tmp_path / "x.tar", "x:dev", [LayerFile("d")], ["/bin/x"], env=("A=1",))
    config = image_config(archive)
    assert config["config"] == {"Entrypoint": ["/bin/x"], "Env": ["A=1"]}
    assert config["os"] == "linux"
