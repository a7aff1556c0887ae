"""The Docker engine the image builds talk to: one that is already running (``DOCKER_HOST``, or the
system's socket), or Debian's dockerd started here with all its state in one directory and stopped
again, by its pid, when the build is done.

The private engine needs no network: builds run with ``--network none``, so it gets no bridge and
touches no iptables rules. The client never reads this machine's Docker configuration (registry
credentials, credential helpers): ``DOCKER_CONFIG`` points into the cache.

:func:`remove_tree` removes a directory a daemon or debootstrap may have left mounts in.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

SYSTEM_SOCKET = Path("/var/run/docker.sock")
# Debian's client (docker.io) before PATH: another `docker` earlier on PATH may be a different product.
CLIENT_CANDIDATES = ("/usr/bin/docker",)
START_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 30  # dockerd stops its containers and its containerd first
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class DockerError(RuntimeError):
    pass


def _find(program: str, candidates: tuple[str, ...] = ()) -> str:
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    # dockerd lives in /usr/sbin, which a non-login root shell may not have on PATH.
    found = shutil.which(program, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"]))
    if not found:
        raise DockerError(f"{program} not found: install Debian's docker.io (`apt-get install docker.io`)")
    return found


class Docker:
    """The docker client bound to one engine; ``private`` when that is a dockerd started here."""

    def __init__(self, host: str, config_dir: Path, private: bool = False):
        self.private = private
        self.client = _find("docker", CLIENT_CANDIDATES)
        config_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "DOCKER_HOST": host, "DOCKER_CONFIG": str(config_dir), "DOCKER_BUILDKIT": "1"}

    def __call__(self, *args: str, capture: bool = False, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``docker ARGS``; its output goes to stderr (stdout is the build's list of tarballs)
        unless ``capture``; a failure raises DockerError naming the command."""
        result = subprocess.run(
            [self.client, *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else 2,
            stderr=subprocess.PIPE if capture else None,
            text=True,
        )
        if check and result.returncode != 0:
            detail = f":\n{result.stderr.strip()}" if capture else " (its output is above)"
            raise DockerError(f"docker {' '.join(args)} failed with exit code {result.returncode}{detail}")
        return result

    def answers(self) -> bool:
        return self("version", "--format", "{{.Server.Version}}", capture=True, check=False).returncode == 0

    def image_label(self, tag: str, label: str) -> str | None:
        """The value of ``label`` on the image ``tag``; None when there is no such image or label."""
        result = self(
            "image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', tag, capture=True, check=False
        )
        value = result.stdout.strip() if result.returncode == 0 else ""
        return value if value and value != "<no value>" else None


def _die_with_parent() -> None:
    """In the child: Linux sends it SIGTERM when the process that started it dies (even by SIGKILL),
    so no daemon outlives its build."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Dockerd:
    """Debian's dockerd with its data, run state and socket under ``home``; :meth:`start` waits until
    it answers, :meth:`stop` ends it by its pid. Used as a context manager."""

    def __init__(self, home: Path):
        self.home = home
        self.socket = home / "docker.sock"
        self.log = home / "dockerd.log"
        self.process: subprocess.Popen | None = None
        self.docker = Docker(f"unix://{self.socket}", home / "client", private=True)

    def argv(self) -> list[str]:
        # Where a system containerd runs (Docker CE's containerd.io), dockerd uses it rather than
        # starting its own: namespaces of this engine's own keep its containers apart from the system
        # engine's (a kind node, say: namespace "moby") and from another private engine's.
        namespace = "soundmind-" + hashlib.sha256(str(self.home).encode()).hexdigest()[:8]
        return [
            _find("dockerd"),
            f"--data-root={self.home / 'data'}",
            f"--exec-root={self.home / 'run'}",
            f"--host=unix://{self.socket}",
            f"--pidfile={self.home / 'dockerd.pid'}",
            # Builds and test containers run with --network none: no bridge, no NAT, no iptables.
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            f"--containerd-namespace={namespace}",
            f"--containerd-plugins-namespace={namespace}-plugins",
        ]

    def start(self) -> Docker:
        if os.geteuid() != 0:
            raise DockerError("starting dockerd needs root; or point DOCKER_HOST at a running Docker engine")
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # a Ctrl-C reaches only us, and we stop it, containers first
                preexec_fn=_die_with_parent,
            )
        give_up = time.monotonic() + START_TIMEOUT_SECONDS
        while not self.docker.answers():
            if self.process.poll() is not None or time.monotonic() > give_up:
                self.stop()
                raise DockerError(f"dockerd did not start; the end of its log ({self.log}):\n{self.log_tail()}")
            time.sleep(0.2)
        return self.docker

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Docker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Engine:
    """The engine for a build: DOCKER_HOST's or the system's when one answers, otherwise a private
    dockerd under ``home``, started on entry and stopped on exit."""

    def __init__(self, home: Path):
        self.home = home
        self._own: Dockerd | None = None

    def __enter__(self) -> Docker:
        named = os.environ.get("DOCKER_HOST")
        host = named or (f"unix://{SYSTEM_SOCKET}" if SYSTEM_SOCKET.exists() else None)
        if host:
            docker = Docker(host, self.home / "client")
            if docker.answers():
                return docker
            if named:
                raise DockerError(f"DOCKER_HOST={named} does not answer")
        self._own = Dockerd(self.home)
        return self._own.start()

    def __exit__(self, *exc) -> None:
        if self._own:
            self._own.stop()


def remove_tree(path: Path) -> None:
    """rm -rf that never follows into a mount: debootstrap mounts /proc and /sys in its target and
    dockerd its containers' file systems in its data root, and a failed run can leave them mounted;
    unmount those first, refuse if any remains."""
    path = path.resolve()
    if not path.exists():
        return
    mounted = [m for m in _mount_points() if m == path or path in m.parents]
    for point in sorted(mounted, key=lambda m: len(m.parts), reverse=True):
        subprocess.run(["umount", "--lazy", str(point)], check=False)
    if any(m == path or path in m.parents for m in _mount_points()):
        raise DockerError(f"{path} still has file systems mounted under it; unmount them, then remove it")
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def _mount_points() -> list[Path]:
    # /proc/self/mountinfo escapes spaces as \040; none of our paths has one.
    return [Path(line.split()[4]) for line in Path("/proc/self/mountinfo").read_text().splitlines()]
