"""Container images written without a container engine: one layer of files from this machine, as a
tar that both ``ctr images import`` and ``docker load`` accept; or such a layer on top of an image
that ``docker save`` wrote (:func:`layered_archive`); and the config read back from such an archive,
or from one ``docker save`` wrote (:func:`image_config`).

The real node has no registry to pull from, so its images arrive as archives: the pause image
(the kubernetes module's ``build/pause/linux/pause.c``, compiled by hack/tools.sh) and a busybox
image (Debian's ``busybox-static``) for tests that need a shell, a web server and a TCP client in a
pod. The archive is an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/...``) with
Docker's ``manifest.json`` beside it, as ``docker save`` writes since Docker 25.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import tarfile
from dataclasses import dataclass
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
# Go's names for this machine's architecture (the image config's `architecture`): containerd
# unpacks only images whose platform matches its own.
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x"}


@dataclass(frozen=True)
class LayerFile:
    """An entry of the layer at ``path`` (relative, e.g. ``bin/busybox``): the bytes of ``source``, a
    symbolic link to ``link``, or, with neither, a directory."""

    path: str
    source: Path | None = None
    link: str | None = None
    mode: int = 0o755


def normalized_reference(name: str) -> str:
    """The full reference the CRI looks an image up by: ``busybox:dev`` is
    ``docker.io/library/busybox:dev``, as Docker's reference grammar normalizes it (a first
    component with a dot or a port, or ``localhost``, is a registry)."""
    first, _, rest = name.partition("/")
    if not (rest and ("." in first or ":" in first or first == "localhost")):
        name = f"docker.io/{name if rest else 'library/' + name}"
    return name if ":" in name.rsplit("/", 1)[1] else f"{name}:latest"


def go_architecture(machine: str | None = None) -> str:
    machine = machine or platform.machine()
    try:
        return _GO_ARCH[machine]
    except KeyError:
        raise ValueError(f"no Go architecture name known for machine {machine!r}") from None


def _layer(files: list[LayerFile]) -> bytes:
    """An uncompressed, reproducible layer tar (fixed times and owners), parent directories first."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        given = {f.path for f in files if f.source is None and f.link is None}
        parents = {str(parent) for f in files for parent in Path(f.path).parents} - {"."} - given
        for directory in sorted(parents, key=lambda d: (d.count("/"), d)):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for file in sorted(files, key=lambda f: (f.path.count("/"), f.path)):
            info = tarfile.TarInfo(file.path)
            info.mode = file.mode
            if file.source is None and file.link is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            if file.link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, file.link
                tar.addfile(info)
                continue
            data = file.source.read_bytes()
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def image_archive(
    name: str, files: list[LayerFile], entrypoint: list[str], *, env: tuple[str, ...] = (), machine: str | None = None
) -> bytes:
    """The archive of a one-layer image called ``name`` (``repository:tag``) that runs
    ``entrypoint``."""
    blobs: dict[str, bytes] = {}

    def blob(media_type: str, data: bytes) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    layer = blob(OCI_LAYER, _layer(files))
    config = {
        "architecture": go_architecture(machine),
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": list(env)},
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},  # uncompressed: the same digest
    }
    config_descriptor = blob(OCI_CONFIG, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_descriptor,
        "layers": [layer],
    }
    manifest_descriptor = blob(OCI_MANIFEST, json.dumps(manifest, sort_keys=True).encode())
    reference = normalized_reference(name)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                **manifest_descriptor,
                # containerd names the imported image after the first; OCI tools after the second.
                "annotations": {
                    "io.containerd.image.name": reference,
                    "org.opencontainers.image.ref.name": reference.rsplit(":", 1)[1],
                },
            }
        ],
    }
    docker_manifest = [
        {
            "Config": f"blobs/sha256/{config_descriptor['digest'].split(':')[1]}",
            "RepoTags": [name],
            "Layers": [f"blobs/sha256/{layer['digest'].split(':')[1]}"],
        }
    ]
    members = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index, sort_keys=True).encode(),
        "manifest.json": json.dumps(docker_manifest).encode(),
        **{f"blobs/sha256/{digest.split(':')[1]}": data for digest, data in blobs.items()},
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_image_archive(path: Path, name: str, files: list[LayerFile], entrypoint: list[str], **kwargs) -> Path:
    path.write_bytes(image_archive(name, files, entrypoint, **kwargs))
    return path


def image_config(archive: Path) -> dict:
    """The image config (``config.Labels``, ``config.Entrypoint``...) of the one image in an archive,
    found through Docker's ``manifest.json``, which both this module and ``docker save`` write."""
    with tarfile.open(archive) as tar:
        manifests = json.load(tar.extractfile("manifest.json"))
        if len(manifests) != 1:
            raise ValueError(f"{archive} holds {len(manifests)} images, not one")
        return json.load(tar.extractfile(manifests[0]["Config"]))


def layered_archive(base: Path, out: Path, name: str, files: list[LayerFile], env: tuple[str, ...] = ()) -> Path:
    """Write to ``out`` the image ``name``: the image archived in ``base`` (by ``docker save``, either
    layout: both have its ``manifest.json``), one layer of ``files`` on top, and ``env`` added to its
    environment (a variable already set there is replaced). Written in ``docker save``'s form, which
    ``ctr images import`` reads too; the base's layers are copied as they are."""
    with tarfile.open(base) as source:
        (image,) = json.loads(source.extractfile("manifest.json").read())
        config = json.loads(source.extractfile(image["Config"]).read())
        layer = _layer(files)
        layer_path = f"blobs/sha256/{hashlib.sha256(layer).hexdigest()}"
        config["rootfs"]["diff_ids"].append("sha256:" + hashlib.sha256(layer).hexdigest())
        config.setdefault("history", []).append({"created_by": f"tests.support.oci_archive: {len(files)} files"})
        names = {variable.split("=", 1)[0] for variable in env}
        kept = [v for v in config["config"].get("Env") or [] if v.split("=", 1)[0] not in names]
        config["config"]["Env"] = kept + list(env)
        config_data = json.dumps(config, sort_keys=True).encode()
        config_path = f"blobs/sha256/{hashlib.sha256(config_data).hexdigest()}"
        manifest = [{"Config": config_path, "RepoTags": [name], "Layers": [*image["Layers"], layer_path]}]
        with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
            for member in source.getmembers():
                if member.isfile() and member.name in image["Layers"]:
                    tar.addfile(member, source.extractfile(member))
            for path, data in ((layer_path, layer), (config_path, config_data)):
                info = tarfile.TarInfo(path)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
            data = json.dumps(manifest).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out
