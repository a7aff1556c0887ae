"""Every file and directory the workload commands publish goes through here: written under a
temporary name beside its target, flushed to disk, then renamed into place, so a reader (verl,
`soundmind train`, a dashboard) sees the old content or the new, never half of it; a failed or
interrupted write leaves no temporary behind. An `OSError` becomes an `OutputError` naming the path
(exit 73)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from soundmind.errors import OutputError

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def ensure_directory(path: str | os.PathLike) -> Path:
    """`path` as an existing directory (made with its parents); OutputError when it cannot be."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(path, "it exists and is not a directory") from None
    except OSError as exc:
        raise OutputError(path, exc) from None
    return path


def check_writable(path: str | os.PathLike) -> None:
    """Fail now, before any work, when a file could not later be published at `path`: its directory
    cannot be made or written to, or `path` is a directory."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(path, "it is a directory; give a file name")
    directory = ensure_directory(path.parent)
    try:
        with tempfile.NamedTemporaryFile(prefix=f".{path.name}.", suffix=".probe", dir=directory):
            pass
    except OSError as exc:
        raise OutputError(path, exc) from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed over `path` when the block ends without
    an error, removed otherwise."""
    path = Path(path)
    directory = ensure_directory(path.parent)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise OutputError(path, exc) from None
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        _fsync(temporary)
        os.chmod(temporary, 0o644)  # mkstemp makes it 0600; the published file is shared
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise OutputError(path, exc) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def staged_directory(target: str | os.PathLike) -> Iterator[Path]:
    """A new, empty directory beside `target` to fill; when the block ends without an error it
    replaces `target` as a whole (entries of the old `target` that the block did not write are
    carried over), so readers see the complete old set or the complete new one, never a mix.
    On an error `target` is left exactly as it was."""
    target = Path(target)
    parent = ensure_directory(target.parent)
    if target.exists() and not target.is_dir():
        raise OutputError(target, "it exists and is not a directory")
    if target.is_dir() and os.stat(target).st_dev != os.stat(parent).st_dev:
        raise OutputError(target, "it is a mount point; give a directory inside the volume instead")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".staging", dir=parent))
    except OSError as exc:
        raise OutputError(target, exc) from None
    try:
        yield staging
        try:
            if target.is_dir():
                _carry_over(target, staging)
            os.chmod(staging, 0o755)
            _publish(staging, target)
        except OSError as exc:
            raise OutputError(target, exc) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # the new set on failure, the old one on success


def _carry_over(old: Path, new: Path) -> None:
    """Hard links (no copy) of the entries of `old` that `new` does not have."""
    for entry in os.scandir(old):
        destination = new / entry.name
        if os.path.lexists(destination):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.copytree(entry.path, destination, symlinks=True, copy_function=_link_or_copy)
        elif entry.is_symlink():
            os.symlink(os.readlink(entry.path), destination)
        else:
            _link_or_copy(entry.path, destination)


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except PermissionError:  # fs.protected_hardlinks: another user's file
        shutil.copy2(source, destination)


def _publish(staging: Path, target: Path) -> None:
    """Put `staging` at `target`; the old `target`, if any, ends up at `staging`."""
    if not target.exists():
        os.rename(staging, target)
        return
    if exchange(staging, target):
        return
    # No atomic exchange on this filesystem: for a moment `target` is absent, but never mixed.
    aside = staging.with_name(staging.name + ".old")
    os.rename(target, aside)
    os.rename(staging, target)
    os.rename(aside, staging)


def exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)
