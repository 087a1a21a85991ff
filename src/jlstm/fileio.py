"""Safe writes: every file and directory jlstm writes goes through this module.

Rules it enforces (the README's safety promises rest on them):

- A file is written to an unpredictable temporary name created exclusively (``mkstemp``:
  ``O_CREAT | O_EXCL``) in the target's own directory, fsynced, then moved over the target
  with ``os.replace``. A crash leaves the old file or the new one, never half of one, and a
  symlink planted under a predictable name is never followed.
- ``os.replace`` replaces a symlink at the target itself, not the file it points to; callers
  that must not replace a user's file check first with :func:`refuse_symlink`.
- A directory is filled under a temporary sibling and swapped in; :func:`recover_dir` is the
  one recovery path for a crash in the middle of the swap.
- :class:`DirLock` holds an exclusive ``flock`` on a run directory for a run's lifetime.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import IO

__all__ = [
    "DirLock",
    "LockedError",
    "check_writable",
    "fsync_dir",
    "recover_dir",
    "refuse_symlink",
    "write_bytes_atomic",
    "write_dir_atomic",
    "write_text_atomic",
    "writing",
]

LOCK_FILE = ".jlstm.lock"


class LockedError(OSError):
    """Another process holds the lock on a run directory."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory, so a rename inside it survives a power cut (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def refuse_symlink(path: str | os.PathLike, what: str = "path") -> None:
    """Raise ``OSError`` if ``path`` is a symbolic link (jlstm never writes through one)."""
    if os.path.islink(path):
        raise OSError(
            errno.ELOOP,
            f"{what} {os.fspath(path)!r} is a symbolic link; jlstm does not write through "
            "links: remove it or point the option at a real path",
        )


@contextlib.contextmanager
def writing(path: str | os.PathLike, mode: str = "wb", *, replace: bool = True) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and move it to ``path``.

    The temporary file is created exclusively with an unpredictable name, so it cannot be a
    planted symlink. On any error it is removed and ``path`` is untouched. With
    ``replace=False`` the file is committed with ``link``, which fails with
    ``FileExistsError`` if ``path`` appeared meanwhile: an existing file is never replaced.

    Example::

        with writing("out.csv", "w") as f:
            f.write("a,b\\n")
    """
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it private (0600)
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as f:
            fd = -1
            yield f
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            os.unlink(tmp)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(parent)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, replace: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`writing`)."""
    with writing(path, "wb", replace=replace) as f:
        f.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically (see :func:`writing`)."""
    with writing(path, "w") as f:
        f.write(text)


def _aside(path: str, kind: str) -> list[str]:
    parent, base = os.path.split(os.path.abspath(path))
    pattern = os.path.join(glob.escape(parent), f".{glob.escape(base)}.{kind}-*")
    return sorted(glob.glob(pattern), key=lambda p: os.lstat(p).st_mtime)


def recover_dir(path: str | os.PathLike, *, complete: Callable[[str], bool]) -> bool:
    """Finish or undo a directory swap that a crash interrupted; the one recovery path.

    :func:`write_dir_atomic` moves the old ``path`` to ``.NAME.old-*`` and then the new
    ``.NAME.tmp-*`` to ``path``. After a crash between the two, ``path`` is missing: the newest
    aside copy for which ``complete(dir)`` holds is moved back (the swap is rolled back: the
    new copy was never committed). Leftover temporary and aside directories are removed once
    ``path`` is complete, never before, so nothing that could still be recovered is deleted.

    Returns:
        True if ``path`` is a directory for which ``complete`` holds afterwards.

    Raises:
        OSError: ``path`` is a symbolic link (recovery would write beside the link, not in
            the directory it points to).
    """
    path = os.path.abspath(os.fspath(path))
    refuse_symlink(path, "directory")
    if not os.path.lexists(path):
        for old in reversed(_aside(path, "old")):
            if os.path.isdir(old) and not os.path.islink(old) and complete(old):
                os.replace(old, path)
                fsync_dir(os.path.dirname(path))
                break
    if not (os.path.isdir(path) and complete(path)):
        return False
    for leftover in _aside(path, "old") + _aside(path, "tmp"):
        if os.path.islink(leftover):
            os.unlink(leftover)  # never rmtree through a planted link
        else:
            shutil.rmtree(leftover, ignore_errors=True)
    return True


def write_dir_atomic(path: str | os.PathLike, fill: Callable[[str], None]) -> None:
    """Fill a temporary sibling of ``path`` with ``fill(tmpdir)``, then swap it in for ``path``.

    Raises:
        OSError: ``path`` is a symbolic link, or the write failed (temporaries are removed).
    """
    path = os.path.abspath(os.fspath(path))
    refuse_symlink(path, "directory")
    parent, base = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    old = None
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private (0700)
        fill(tmp)
        fsync_dir(tmp)
        if os.path.exists(path):
            # os.replace cannot move a directory onto a non-empty one: move the old one aside.
            old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not os.path.exists(path):
            os.replace(old, path)
            old = None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_writable(directory: str | os.PathLike) -> None:
    """Create (if needed) ``directory`` and prove a file can be written in it.

    Raises:
        OSError: with the directory named, e.g. read-only, under a regular file, or full.
    """
    directory = os.fspath(directory)
    refuse_symlink(directory, "directory")
    os.makedirs(directory, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".jlstm-write-test-", dir=directory)
    try:
        os.write(fd, b"x")
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(probe)


class DirLock:
    """An exclusive, non-blocking lock on a directory, held until :meth:`release`.

    Uses ``flock`` on ``DIR/.jlstm.lock`` (opened without following symlinks), so the
    lock is dropped by the kernel if the process dies.

    Example::

        with DirLock("runs/a"):
            ...  # train into runs/a
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = os.fspath(directory)
        self._fd: int | None = None

    def acquire(self) -> DirLock:
        path = os.path.join(self.directory, LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(
                errno.EWOULDBLOCK,
                f"{self.directory!r} is in use by another jlstm run; wait for it to finish "
                "or choose another --out",
            ) from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
