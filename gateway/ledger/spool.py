"""The JSONL spool that holds usage rows while the database cannot take them.

Several worker processes may share one spool, so appends and replays take an exclusive `flock`:
a replay first renames the spool aside (new rows start a fresh file), then locks what it claimed,
which waits out an append already under way. An appender that finds, once it holds the lock, that
its file was renamed from under it opens the path again. These are blocking file calls: the usage
writer runs them in a thread, off the event loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

_CLAIMED = ".replay"


def append(path: Path, data: bytes) -> None:
    """Append whole lines to the spool and fsync them; raise OSError when that is impossible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(path, fd):
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
                return
        finally:
            os.close(fd)  # also releases the lock


def claim(path: Path) -> list[Path]:
    """Move the live spool aside for replay; return it with any claimed earlier and never finished."""
    with contextlib.suppress(FileNotFoundError):
        os.rename(path, path.with_name(f"{path.name}.{os.getpid()}.{time.time_ns()}{_CLAIMED}"))
    return sorted(path.parent.glob(f"{path.name}.*{_CLAIMED}"))


class Claim:
    """One claimed spool file, locked from `read()` until `release()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def read(self) -> bytes | None:
        """The file's contents, or None if another process is replaying it or already has."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not _same_file(self.path, fd):  # replayed and removed meanwhile
                raise BlockingIOError
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return b"".join(chunks)

    def release(self, replayed: bool) -> None:
        """Unlock; remove the file first if its rows are now in the database."""
        if replayed:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _same_file(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
