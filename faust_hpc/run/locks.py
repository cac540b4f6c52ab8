"""File locks of a run's state directory that work on every cluster filesystem.

Why not filelock alone: on Lustre mounted without ``-o flock`` the kernel
answers ``flock`` with ENOSYS, and filelock's own fallback (the plain
SoftFileLock) would break a live owner's lock on an age-based guess. Here the
fallback is the strict soft lock, remembered per directory so every later
lock in that directory (the manifest's, the run claim's) uses it too.
"""
from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from filelock import BaseFileLock, FileLock, StrictSoftFileLock

log = logging.getLogger(__name__)

_soft_dirs: set[str] = set()  # directories where flock answered ENOSYS


def flock_unsupported(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.ENOSYS


def is_soft(directory: str | os.PathLike) -> bool:
    """Has flock been found unsupported in this directory?"""
    return str(directory) in _soft_dirs


def mark_soft(directory: str | os.PathLike) -> None:
    _soft_dirs.add(str(directory))


class RobustLock:
    """A filelock that is a kernel ``flock`` where the filesystem supports it
    and a :class:`StrictSoftFileLock` where it answers ENOSYS.

    filelock's own fallback is the plain SoftFileLock; we ask it to fail
    instead (``fallback_to_soft=False``) and choose the strict variant, which
    never lets an age-based guess break a live owner's claim.
    """

    def __init__(self, path: str | os.PathLike, timeout: float = -1) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._lock: BaseFileLock | None = None

    @property
    def soft(self) -> bool:
        return is_soft(self.path.parent)

    def _make(self) -> BaseFileLock:
        if self.soft:
            return StrictSoftFileLock(str(self.path) + ".strict", timeout=self.timeout)
        return FileLock(str(self.path), timeout=self.timeout, fallback_to_soft=False)

    def acquire(self, timeout: float | None = None) -> "RobustLock":
        lock = self._make()
        try:
            lock.acquire(timeout=self.timeout if timeout is None else timeout)
        except OSError as exc:
            if not flock_unsupported(exc) or self.soft:
                raise
            log.warning("flock unsupported on %s (ENOSYS); using StrictSoftFileLock", self.path.parent)
            mark_soft(self.path.parent)
            lock = self._make()
            lock.acquire(timeout=self.timeout if timeout is None else timeout)
        self._lock = lock
        return self

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "RobustLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["RobustLock", "StrictSoftFileLock", "flock_unsupported", "is_soft", "mark_soft"]
