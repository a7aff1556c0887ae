"""Pods without Kubernetes: programs that each get what a pod gives its container, on this machine.

A :class:`PodNetwork` is two network namespaces joined by a veth pair: pod ``i`` has ``eth0`` with
10.99.0.<i+1>/30 and a default route through it (as a pod has), so a program that finds its own
address from its route (Ray does) finds that one. The namespaces reach nothing else: not the host,
not the internet, not each other's loopback.

A :class:`Pod` runs one program in one of those network namespaces with, besides, its own PID
namespace (the program is PID 1 and sees only its own processes: `ray stop --force` stops this pod's
Ray, not the machine's) and its own mount namespace with a fresh in-memory ``/dev/shm`` of the pod's
size, its own ``/tmp`` and home directory (Ray keeps its sessions, sockets and auth token there),
``/etc/hosts`` naming the other pods (how a pod finds index 0 through the headless Service), and
a read-only working directory (the trainer image's /workspace is not its user's to write).
The ``shared`` directory stays visible at its own path, like a ReadWriteMany volume every pod mounts.

Stopping a pod kills its PID 1, and Linux then kills everything in the pod. Needs root, ``ip``,
``nsenter`` and ``unshare`` (util-linux); namespaces are entered with ``nsenter --net``, not
``ip netns exec`` (see :mod:`tests.support.realnode`).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.support.processes import LocalProcess

PROGRAMS = ("ip", "nsenter", "unshare", "mount", "umount")
SUBNET = "10.99.0"  # inside the namespaces only: no route of the host can clash with it

_LIBC = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2

# PID 1 of the pod: mounts what the pod has, then execs the program. $1: the shared directory,
# $2: the hosts file, $3: /dev/shm's size in bytes; the program follows. HOME is the pod's own too:
# Ray keeps state there (~/.ray/auth_token turns token authentication on for `ray start --head`).
# The working directory is read-only, as the trainer image's /workspace is to its non-root user.
_POD_INIT = """\
set -eu
shared=$1 hosts=$2 shm=$3
shift 3
mount --bind "$shared" /mnt
mount --bind "$hosts" /etc/hosts
mount -t tmpfs -o "size=$shm" shm /dev/shm
mount -t tmpfs -o mode=1777 tmp /tmp
mkdir -p "$shared" /tmp/home
mount --bind /mnt "$shared"
umount /mnt
mount -t tmpfs -o ro,size=4k workspace /mnt
cd /mnt
export HOME=/tmp/home
exec "$@"
"""


def missing_prerequisites() -> list[str]:
    missing = [f"`{name}`" for name in PROGRAMS if shutil.which(name) is None]
    if os.geteuid() != 0:
        missing.append("root (it creates network, PID and mount namespaces)")
    return missing


def _run(argv: list[str], stdin: str | None = None) -> None:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` exited {done.returncode}: {done.stderr.strip()}")


class PodNetwork:
    """Two network namespaces, bound to files under ``directory``, joined by a veth pair."""

    count = 2

    def __init__(self, directory: Path):
        self.directory = directory

    def netns(self, index: int) -> Path:
        return self.directory / f"netns-{index}"

    def ip(self, index: int) -> str:
        return f"{SUBNET}.{index + 1}"

    def create(self) -> PodNetwork:
        self.directory.mkdir(parents=True, exist_ok=True)
        for index in range(self.count):
            self.netns(index).touch()
            _run(["unshare", f"--net={self.netns(index)}", "true"])
        # Made inside the namespaces, both ends named eth0: no interface name of the host's is taken.
        link = ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", str(self.netns(1))]
        _run(["nsenter", f"--net={self.netns(0)}", "--", *link])
        for index in range(self.count):
            commands = [
                "link set lo up",
                f"address add {self.ip(index)}/30 dev eth0",
                "link set eth0 up",
                "route add default dev eth0",  # a pod has one; Ray takes its own address from it
            ]
            _run(["nsenter", f"--net={self.netns(index)}", "--", "ip", "-batch", "-"], stdin="\n".join(commands) + "\n")
        return self

    def remove(self) -> None:
        """Unbind the namespaces: each goes (with its links) once its last process has exited."""
        for index in range(self.count):
            path = self.netns(index)
            if path.exists():
                _LIBC.umount2(str(path).encode(), _MNT_DETACH)
                path.unlink()


class Pod(LocalProcess):
    """``argv`` as PID 1 of a pod in ``network``'s namespace ``index`` (see the module's doc)."""

    def __init__(
        self,
        name: str,
        network: PodNetwork,
        index: int,
        argv: list[str],
        *,
        shared: Path,
        hosts: dict[str, str],
        shm_bytes: int,
        env: dict[str, str],
        log: Path,
    ):
        hosts_file = log.with_suffix(".hosts")
        hosts_file.parent.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1 localhost", *(f"{ip} {host}" for host, ip in hosts.items())]
        hosts_file.write_text("\n".join(lines) + "\n")
        pod = ["nsenter", f"--net={network.netns(index)}", "--"]
        pod += ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private", "--mount-proc"]
        pod += ["--", "sh", "-c", _POD_INIT, name, str(shared), str(hosts_file), str(shm_bytes), *argv]
        super().__init__(name, pod, log, env=env)
        self.started_at = 0.0
        self.pid_namespace: str | None = None  # e.g. "pid:[4026532890]", known once started

    def start(self, **kwargs) -> Pod:
        self.started_at = time.monotonic()
        super().start(**kwargs)
        deadline = time.monotonic() + 10
        while self.pid_namespace is None and time.monotonic() < deadline and not self.exited():
            init = self.init_pid()
            try:
                self.pid_namespace = os.readlink(f"/proc/{init}/ns/pid") if init else None
            except OSError:
                pass
            time.sleep(0.01)
        if self.pid_namespace is None:
            raise AssertionError(f"{self.name} did not start its PID namespace:\n{self.log_tail()}")
        return self

    def init_pid(self) -> int | None:
        """The pod's PID 1, as the host numbers it (the child of `unshare`)."""
        if self.process is None:
            return None
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def processes(self) -> dict[int, list[str]]:
        """Every process in the pod, by host PID: its argv (also after PID 1 has gone)."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "ns/pid") != self.pid_namespace:
                    continue
                argv = (entry / "cmdline").read_bytes().split(b"\0")[:-1]
            except OSError:
                continue
            found[int(entry.name)] = [part.decode(errors="replace") for part in argv]
        return found

    def leftovers(self, timeout: float = 10) -> dict[int, list[str]]:
        """What still runs in the pod after it was stopped (nothing, once Linux has reaped it)."""
        deadline = time.monotonic() + timeout
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left

    def kill(self) -> None:
        """The pod dies at once (its node lost, say): SIGKILL to PID 1 ends every process in it."""
        init = self.init_pid()
        if init is not None:
            os.kill(init, signal.SIGKILL)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for_output(self, text: str, timeout: float) -> float:
        """Seconds since the start until ``text`` is in the pod's output; AssertionError on timeout or exit."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.exited():
                raise AssertionError(
                    f"{self.name} exited ({self.process.returncode}) before printing {text!r}:\n" + self.log_tail(60)
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not print {text!r} in {timeout:g}s:\n" + self.log_tail(60))
            time.sleep(0.2)
        return time.monotonic() - self.started_at
