"""A kind node image assembled without any registry, for ``make test-kind`` where none is reachable.

``kind build node-image`` cannot work offline: it pulls etcd, CoreDNS, pause and kindnetd from a
registry. This makes the same kind of image from parts this machine already has or builds:

* the base: Debian bookworm debootstrapped from the mirror apt uses here (:mod:`hack.images.base`,
  cached as a tarball), with systemd 252 (trixie's 257 refuses cgroup v1), Debian's containerd
  1.6, runc, the CNI plugins, nftables and iptables: the packages :data:`NODE_PACKAGES` lists;
* kind's own ``images/base/files`` (the entrypoint, systemd units, containerd's config) from the
  ``sigs.k8s.io/kind`` module at the version of the kind binary hack/tools.sh builds;
* kubeadm, kubelet and kubectl at ``/usr/bin``, and the control plane's images (kube-apiserver,
  kube-controller-manager, kube-scheduler, kube-proxy, etcd, pause), by the names and tags
  ``kubeadm config images list`` gives, made as one-layer archives of hack/tools.sh's binaries
  (:mod:`tests.support.oci_archive`) and imported into the node's containerd while the image builds;
  kube-proxy runs in nftables mode, so its image also holds ``nft`` and the libraries it links;
* no CoreDNS (the cluster config skips kubeadm's addon: nothing in the suite resolves names) and no
  kindnetd: a static CNI config (ptp, host-local, portmap) for a single node's pods;
* ``/kind/version``.

The cluster config (:func:`cluster_config`, for this image or kind's own) turns on gang scheduling
as the local cluster does; with this image it also disables kind's default CNI, skips CoreDNS, uses
kube-proxy's nftables mode and sets the kubelet's ``failCgroupV1: false`` (kubelet >= 1.35 refuses
cgroup v1 otherwise, and kind does not set it).

The image is tagged ``soundmind.local/kind-node:<kubernetes version>-<key>``, the key a hash of all
its inputs (the binaries, kind's files, the base's key, this file); an engine that has that tag
already gets nothing built. Built with ``docker build --network none`` into the engine
``DOCKER_HOST`` names.

``python -m hack.kind_node`` builds it and prints the tag, ``--config local|upstream`` prints the
cluster config.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python hack/kind_node.py` as well as `python -m hack.kind_node`
    sys.path.insert(0, str(ROOT))

from hack.images import base as bases  # noqa: E402
from hack.images.docker import Docker, Dockerd, DockerError  # noqa: E402
from tests.support.localcluster import (  # noqa: E402
    GANG_SCHEDULING_FEATURE_GATES,
    GANG_SCHEDULING_RUNTIME_CONFIG,
    default_bin_dir,
    default_cache_dir,
)
from tests.support.oci_archive import LayerFile, write_image_archive  # noqa: E402

REPOSITORY = "soundmind.local/kind-node"
KEY_LABEL = "ai.soundmind.kind-node-key"
# kind's Dockerfile's packages (images/base/Dockerfile), less the storage ones (nfs-common,
# open-iscsi) and fuse-overlayfs (rootless), plus what kind builds from source there: containerd,
# runc, the CNI plugins (crictl: none in bookworm; kind does not need it).
NODE_PACKAGES = (
    "systemd", "conntrack", "iptables", "nftables", "iproute2", "ethtool", "util-linux", "mount", "kmod",
    "libseccomp2", "pigz", "e2fsprogs", "bash", "ca-certificates", "jq", "procps",
    "containerd", "runc", "containernetworking-plugins",
)  # fmt: skip
# The control-plane binaries each image runs (hack/tools.sh builds them all; kubeadm as well).
IMAGE_BINARIES = {
    "kube-apiserver": "kube-apiserver",
    "kube-controller-manager": "kube-controller-manager",
    "kube-scheduler": "kube-scheduler",
    "kube-proxy": "kube-proxy",
    "etcd": "etcd",
}
NODE_BINARIES = ("kubeadm", "kubelet", "kubectl")
# kube-proxy's nftables mode runs `nft`; its image gets it and the libraries it links, from the base.
KUBE_PROXY_PROGRAMS = ("/usr/sbin/nft",)
POD_SUBNET = "10.244.0.0/16"  # kind's default podSubnet
# Pods of the one node: host-local hands out addresses of POD_SUBNET's first /24 (kind's node podCIDR).
CNI_CONFLIST = {
    "cniVersion": "0.4.0",
    "name": "soundmind-kind",
    "plugins": [
        {
            "type": "ptp",
            "ipMasq": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.244.0.0/24"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
            "mtu": 1500,
        },
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}
RUNC_WRAPPER = ROOT / "hack" / "kind" / "runc-drop-sys-resource"
RUNC_WRAPPER_IN_NODE = "/usr/local/sbin/soundmind-runc"
CAP_SYS_RESOURCE = 24


class NodeImageError(RuntimeError):
    pass


def lacks_sys_resource(status: str | None = None) -> bool:
    """Whether this machine's capability bounding set lacks CAP_SYS_RESOURCE (some sandboxes'), so
    that runc refuses --privileged containers unless the runc wrapper drops that capability."""
    status = status if status is not None else Path("/proc/self/status").read_text()
    bounding = re.search(r"^CapBnd:\s*([0-9a-f]+)$", status, re.M)
    return bool(bounding) and not (int(bounding.group(1), 16) >> CAP_SYS_RESOURCE) & 1


def _settings(flags: str) -> dict[str, str]:
    """``"a=true,b=false"`` (a command-line flag's value) as a mapping."""
    return dict(item.split("=", 1) for item in flags.split(","))


def cluster_config(offline: bool) -> str:
    """kind's cluster config (one control-plane node), for either node image: kind's own, or this
    module's (``offline``).

    Both serve what the suite needs of Kubernetes v1.37 that is off by default, as the local cluster
    does (:mod:`tests.support.localcluster`): the PodGroup API and the scheduler's GangScheduling plugin.
    The offline image also needs its static CNI config instead of kindnetd, no CoreDNS, nftables for
    kube-proxy, and the kubelet allowed onto cgroup v1."""
    gates = "".join(f"  {gate}: {value}\n" for gate, value in _settings(GANG_SCHEDULING_FEATURE_GATES).items())
    apis = "".join(f'  "{api}": "{value}"\n' for api, value in _settings(GANG_SCHEDULING_RUNTIME_CONFIG).items())
    config = f"""\
# hack/test-kind.sh's cluster ({"hack/kind_node.py's node image" if offline else "kind's own node image"})
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
featureGates:  # gang scheduling: the PodGroup API (beta in v1.37) and the scheduler's plugin
{gates}runtimeConfig:
{apis}"""
    if not offline:
        return config
    return (
        config
        + f"""\
networking:
  disableDefaultCNI: true  # the image's static CNI config (ptp) serves the one node
  kubeProxyMode: nftables  # the kube-proxy image carries nft, not iptables
  podSubnet: {POD_SUBNET}
kubeadmConfigPatches:
  - |
    kind: InitConfiguration
    skipPhases: [preflight, addon/coredns]
  - |
    kind: KubeletConfiguration
    failCgroupV1: false
"""
    )


def kind_version(kind: Path) -> str:
    """The version of a kind binary (hack/tools.sh's pin): ``kind version`` says "kind v0.33.0 go1.26.3 linux/amd64"."""
    said = subprocess.run([str(kind), "version"], capture_output=True, text=True)
    found = re.match(r"kind (v\d+\.\d+\.\d+)\s", said.stdout)
    if said.returncode != 0 or not found:
        raise NodeImageError(f"`{kind} version` did not name a version: {said.stdout}{said.stderr}")
    return found.group(1)


def kind_module_dir(version: str) -> Path:
    """The unpacked ``sigs.k8s.io/kind`` module (the Go module cache's copy)."""
    found = subprocess.run(
        ["go", "mod", "download", "-json", f"sigs.k8s.io/kind@{version}"],
        cwd="/",  # outside any module
        env={**os.environ, "GOFLAGS": "-mod=mod"},
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        raise NodeImageError(f"go mod download sigs.k8s.io/kind@{version} failed: {found.stdout}{found.stderr}")
    return Path(json.loads(found.stdout)["Dir"])


def kubeadm_images(kubeadm: Path, kubernetes_version: str) -> dict[str, str]:
    """The images kubeadm runs, by component: ``{"kube-apiserver": "registry.k8s.io/kube-apiserver:v1.37.2", ...}``."""
    listed = subprocess.run(
        [str(kubeadm), "config", "images", "list", f"--kubernetes-version={kubernetes_version}"],
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:
        raise NodeImageError(f"kubeadm config images list failed: {listed.stderr.strip()}")
    images = {}
    for reference in listed.stdout.split():
        name = reference.rsplit("/", 1)[1].split(":")[0]
        images[name] = reference
    return images


def _digest_files(paths: list[Path], digest) -> None:
    for path in paths:
        digest.update(str(path).encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)


class NodeImage:
    """The node image's inputs, its key and tag, and its build."""

    def __init__(self, bin_dir: Path, kubernetes_version: str, cache: Path | None = None):
        self.bin_dir = bin_dir
        self.version = kubernetes_version
        self.cache = cache or default_cache_dir()
        mirrors = bases.choose_mirrors(bases.host_sources(), os.environ.get(bases.MIRROR_ENV))
        self.base = bases.Base(tuple(sorted(NODE_PACKAGES)), mirrors)
        missing = [
            name
            for name in (*NODE_BINARIES, *IMAGE_BINARIES.values(), "pause", "kind")
            if not (bin_dir / name).exists()
        ]
        if missing:
            raise NodeImageError(
                f"{', '.join(missing)} missing in {bin_dir} (build them: hack/tools.sh {' '.join(missing)})"
            )
        # kind's base files (entrypoint, units, containerd's config) come from the kind that runs it.
        self.kind_version = kind_version(bin_dir / "kind")
        self.kind_dir = kind_module_dir(self.kind_version)

    def kind_files(self) -> list[Path]:
        return sorted(p for p in (self.kind_dir / "images" / "base" / "files").rglob("*") if p.is_file())

    @property
    def key(self) -> str:
        digest = hashlib.sha256()
        digest.update(Path(__file__).read_bytes() + RUNC_WRAPPER.read_bytes())
        digest.update(f"{self.version}\n{self.kind_version}\n{self.base.key}\n".encode())
        binaries = [self.bin_dir / name for name in (*NODE_BINARIES, *IMAGE_BINARIES.values(), "pause")]
        _digest_files([b.resolve() for b in binaries], digest)
        _digest_files(self.kind_files(), digest)
        return digest.hexdigest()[:12]

    def tag(self, key: str | None = None) -> str:
        return f"{REPOSITORY}:{self.version}-{key or self.key}"

    def ensure(self, docker: Docker) -> str:
        """The image's tag in ``docker``'s engine, built unless it is there already."""
        key = self.key
        tag = self.tag(key)
        if docker.image_label(tag, KEY_LABEL) == key:
            return tag
        started = time.monotonic()
        bases.ensure_rootfs(self.base, self.cache / "images")
        base_tag = bases.ensure_imported(docker, self.base, self.cache / "images")
        work = Path(tempfile.mkdtemp(prefix="kind-node-", dir=self.cache))
        try:
            self._context(work)
            docker(
                "build", "--network=none", "--progress=plain", f"--build-arg=BASE={base_tag}",
                f"--label={KEY_LABEL}={key}", f"--tag={tag}", str(work),
            )  # fmt: skip
        finally:
            shutil.rmtree(work, ignore_errors=True)
        # Earlier node images (other keys) go: each is a gigabyte.
        docker("image", "prune", "--force", f"--filter=label={KEY_LABEL}")
        for line in docker(
            "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", REPOSITORY, capture=True
        ).stdout.split():
            if line != tag:
                docker("image", "rm", line, check=False)
        print(f"{tag}: assembled in {time.monotonic() - started:.0f} s", file=sys.stderr)
        return tag

    def _context(self, work: Path) -> None:
        files = work / "files"
        shutil.copytree(self.kind_dir / "images" / "base" / "files", files)
        for path in files.rglob("*"):
            path.chmod(0o755 if path.is_dir() or "bin" in path.parent.parts else 0o644)
        (files / "usr/bin").mkdir(parents=True, exist_ok=True)
        for name in NODE_BINARIES:
            shutil.copy(self.bin_dir / name, files / "usr/bin" / name)
        (files / "usr/local/sbin").mkdir(parents=True, exist_ok=True)
        shutil.copy(RUNC_WRAPPER, files / RUNC_WRAPPER_IN_NODE.lstrip("/"))
        (files / "kind/version").write_text(self.version + "\n")
        (files / "etc/cni/net.d").mkdir(parents=True)
        (files / "etc/cni/net.d/10-soundmind.conflist").write_text(json.dumps(CNI_CONFLIST, indent=2) + "\n")
        images = kubeadm_images(self.bin_dir / "kubeadm", self.version)
        config = files / "etc/containerd/config.toml"
        config.write_text(containerd_config(config.read_text(), images["pause"], lacks_sys_resource()))
        archives = work / "images"
        archives.mkdir()
        env = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
        rootfs = self._extract(work / "rootfs", KUBE_PROXY_PROGRAMS)
        for name, reference in images.items():
            if name == "coredns":
                continue  # skipped (cluster_config)
            if name == "pause":
                layer, entrypoint = [LayerFile("pause", self.bin_dir / "pause")], ["/pause"]
            else:
                binary = IMAGE_BINARIES[name]
                layer = [LayerFile(f"usr/local/bin/{binary}", self.bin_dir / binary), LayerFile("tmp", mode=0o1777)]
                entrypoint = [f"/usr/local/bin/{binary}"]
                if name == "kube-proxy":
                    layer += _with_libraries(rootfs, KUBE_PROXY_PROGRAMS)
            write_image_archive(archives / f"{name}.tar", reference, layer, entrypoint, env=env)
        shutil.rmtree(rootfs)
        (work / "Dockerfile").write_text(DOCKERFILE)

    def _extract(self, target: Path, programs: tuple[str, ...]) -> Path:
        """The base's root file system, unpacked (no devices) for ldd to read in a chroot."""
        target.mkdir()
        subprocess.run(
            ["tar", "--extract", f"--file={self.base.tarball(self.cache / 'images')}", f"--directory={target}",
             "--exclude=./dev/*", "--no-same-owner"],
            check=True,
        )  # fmt: skip
        return target


def _with_libraries(rootfs: Path, programs: tuple[str, ...]) -> list[LayerFile]:
    """``programs`` and the shared libraries they load (ldd in the base's chroot), as layer files:
    each at its real path, with a link where ldd names it by another (``/lib64/ld-linux...``), and
    the base's top-level links (bookworm is usr-merged: /lib -> usr/lib)."""

    def inside(*argv: str) -> str:
        return subprocess.run(["chroot", str(rootfs), *argv], capture_output=True, text=True, check=True).stdout

    named: set[str] = set(programs)
    for program in programs:
        named.update(re.findall(r"(/\S+) \(0x", inside("ldd", program)))
    files: dict[str, LayerFile] = {}
    for link in ("bin", "sbin", "lib", "lib64"):
        if (rootfs / link).is_symlink():
            files[link] = LayerFile(link, link=os.readlink(rootfs / link))
    for path in sorted(named):
        real = inside("readlink", "-f", path).strip()
        files[real] = LayerFile(real.lstrip("/"), rootfs / real.lstrip("/"))
        # the name ldd gave, through its directory's links: /lib64/x is usr/lib64/x
        alias = inside("readlink", "-f", os.path.dirname(path)).strip().rstrip("/") + "/" + os.path.basename(path)
        if alias != real:
            files[alias] = LayerFile(alias.lstrip("/"), link=real)
    return list(files.values())


def containerd_config(text: str, pause: str, wrap_runc: bool) -> str:
    """kind's containerd config with the sandbox image kubeadm's pause, and runc the wrapper where
    this machine lacks CAP_SYS_RESOURCE."""
    text, count = re.subn(r'^(\s*sandbox_image = )".*"$', rf'\1"{pause}"', text, flags=re.M)
    if count != 1:
        raise NodeImageError("kind's containerd config.toml has no sandbox_image line to set")
    if wrap_runc:
        text, count = re.subn(
            r"^(\s*)SystemdCgroup = true$",
            rf'\1SystemdCgroup = true\n\1BinaryName = "{RUNC_WRAPPER_IN_NODE}"',
            text,
            flags=re.M,
        )
        if count == 0:
            raise NodeImageError("kind's containerd config.toml has no runc options to name the wrapper in")
    return text


# kind's Dockerfile's steps (images/base/Dockerfile), on the debootstrapped base; then the images
# imported by a containerd started for the purpose (content only: containerd unpacks at first use).
DOCKERFILE = r"""
ARG BASE
FROM ${BASE}
COPY files/ /
# The archives only pass through: bound for the one step, not copied into a layer.
RUN --mount=type=bind,source=images,target=/kind/images set -eux; \
    find /lib/systemd/system/sysinit.target.wants/ -name "systemd-tmpfiles-setup.service" -delete; \
    rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
      /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
      /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*; \
    echo "ReadKMsg=no" >> /etc/systemd/journald.conf; \
    ln -sf /usr/lib/systemd/systemd /sbin/init; \
    ln -sf /usr/bin/containerd /usr/local/bin/containerd; \
    mkdir -p /opt/cni; ln -sfn /usr/lib/cni /opt/cni/bin; \
    systemctl enable kubelet.service containerd.service undo-mount-hacks.service; \
    systemctl mask systemd-binfmt.service; \
    mkdir -p /etc/kubernetes/manifests; \
    ctr oci spec \
      | jq '.hooks.createContainer[.hooks.createContainer | length] |= . + \
            {"path": "/kind/bin/mount-product-files.sh"}' \
      | jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json; \
    printf 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n' >/tmp/containerd-build.toml; \
    sock=/run/containerd-build.sock; \
    containerd --address $sock --config /tmp/containerd-build.toml >/tmp/containerd.log 2>&1 & \
    pid=$!; \
    for i in $(seq 600); do ctr --address $sock version >/dev/null 2>&1 && break; sleep 0.1; done; \
    for archive in /kind/images/*.tar; do \
      ctr --address $sock --namespace k8s.io images import --no-unpack --all-platforms "$archive"; \
    done; \
    ctr --address $sock --namespace k8s.io images ls; \
    kill $pid; wait $pid || true; \
    rm -rf /tmp/containerd.log /tmp/containerd-build.toml /run/containerd-build.sock /var/lib/containerd/tmpmounts
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
"""


class KindDockerd(Dockerd):
    """A private dockerd for kind, where no Docker engine answers: unlike the image builds' (no
    network at all), kind needs one that makes bridge networks (it creates its own, ``kind``) and
    publishes the API server's port on 127.0.0.1. No default bridge, no iptables rules (the one node
    reaches nothing outside; the port is published by docker-proxy), containers in cgroup
    namespaces of their own (kind's entrypoint then scopes the node's cgroups itself). On a machine
    whose bounding set lacks CAP_SYS_RESOURCE, the runc wrapper is its default runtime."""

    def argv(self) -> list[str]:
        argv = [arg for arg in super().argv() if arg not in ("--bridge=none", "--iptables=false", "--ip-masq=false")]
        argv += ["--bridge=none", "--iptables=false", "--ip-masq=false", "--default-cgroupns-mode=private"]
        if lacks_sys_resource():
            argv += [f"--add-runtime=soundmind-runc={RUNC_WRAPPER}", "--default-runtime=soundmind-runc"]
        return argv


def serve_dockerd(home: Path) -> int:
    """Runs :class:`KindDockerd` until SIGTERM or SIGINT, then stops it (its containers first). Prints
    its DOCKER_HOST once it answers."""
    import signal

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    daemon = KindDockerd(home)
    try:
        daemon.start()
    except DockerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"unix://{daemon.socket}", flush=True)
    try:
        while not stop and daemon.process.poll() is None:
            time.sleep(0.5)
    finally:
        daemon.stop()
    if not stop:
        print(f"error: dockerd exited; the end of its log ({daemon.log}):\n{daemon.log_tail()}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.kind_node", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", type=Path, default=default_bin_dir(), help="hack/tools.sh's binaries")
    parser.add_argument("--kubernetes-version", help="e.g. v1.37.2 (hack/tools/k8s's pin)")
    parser.add_argument(
        "--config",
        choices=("local", "upstream"),
        help="print kind's cluster config for this module's node image or kind's own, build nothing",
    )
    parser.add_argument(
        "--serve-dockerd", type=Path, metavar="HOME", help="run a private dockerd for kind under HOME until TERM"
    )
    args = parser.parse_args(argv)
    if args.serve_dockerd:
        return serve_dockerd(args.serve_dockerd)
    if args.config:
        print(cluster_config(offline=args.config == "local"), end="")
        return 0
    if not args.kubernetes_version:
        parser.error("--kubernetes-version is required")
    host = os.environ.get("DOCKER_HOST")
    if not host:
        print("error: DOCKER_HOST must name the engine kind uses", file=sys.stderr)
        return 2
    try:
        image = NodeImage(args.bin_dir, args.kubernetes_version)
        docker = Docker(host, image.cache / "kind" / "client")
        print(image.ensure(docker))
    except (NodeImageError, DockerError, bases.BaseError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
