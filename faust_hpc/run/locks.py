"""File locks of a run's state directory that work on every cluster filesystem.

Why not filelock alone: on Lustre mounted without ``-o flock`` the kernel
answers ``flock`` with ENOSYS, and filelock's own fallback (the plain
SoftFileLock) would break a live owner's lock on an age-based guess. Here the
fallback is the strict soft lock, remembered per directory so every later
lock in that directory uses it too.

A strict soft lock is never broken by age, so a holder killed while it held
the lock (kill -9 in the middle of a group commit) would block every other
launcher for good. While waiting, :class:`RobustLock` therefore looks at the
claims that block it and removes those whose owner is verifiably gone: a
process on this host that no longer exists, or one ``owner_gone(host, pid)``
says is dead (the launchers' leases, :mod:`faust_hpc.run.leases`).
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import time
from pathlib import Path
from typing import Callable

from filelock import BaseFileLock, FileLock, StrictSoftFileLock, Timeout

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

    SOFT_POLL_S = 2.0   # how often a waiter on a strict soft lock looks for claims of dead owners

    def __init__(self, path: str | os.PathLike, timeout: float = -1,
                 owner_gone: Callable[[str, int], bool] | None = None) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.owner_gone = owner_gone
        self._lock: BaseFileLock | None = None

    @property
    def soft(self) -> bool:
        return is_soft(self.path.parent)

    def _make(self) -> BaseFileLock:
        if self.soft:
            return StrictSoftFileLock(str(self.path) + ".strict", timeout=self.timeout)
        return FileLock(str(self.path), timeout=self.timeout, fallback_to_soft=False)

    def acquire(self, timeout: float | None = None) -> "RobustLock":
        wait = self.timeout if timeout is None else timeout
        lock = self._make()
        try:
            self._acquire(lock, wait)
        except OSError as exc:
            if not flock_unsupported(exc) or self.soft:
                raise
            log.warning("flock unsupported on %s (ENOSYS); using StrictSoftFileLock", self.path.parent)
            mark_soft(self.path.parent)
            lock = self._make()
            self._acquire(lock, wait)
        self._lock = lock
        return self

    def _acquire(self, lock: BaseFileLock, wait: float) -> None:
        if not isinstance(lock, StrictSoftFileLock):
            lock.acquire(timeout=wait)
            return
        deadline = None if wait is None or wait < 0 else time.monotonic() + wait
        while True:
            step = self.SOFT_POLL_S if deadline is None else max(0.0, min(self.SOFT_POLL_S,
                                                                           deadline - time.monotonic()))
            try:
                lock.acquire(timeout=step)
                return
            except Timeout:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                self._break_dead_claims(lock)

    def _break_dead_claims(self, lock: StrictSoftFileLock) -> None:
        from faust_hpc.run.claim import pid_alive

        here = socket.gethostname()
        for claim in lock.claims:
            gone = (not pid_alive(claim.pid) if claim.hostname == here
                    else bool(self.owner_gone and self.owner_gone(claim.hostname, claim.pid)))
            if gone:
                log.warning("breaking the strict lock %s held by host %s pid %d (gone)", self.path, claim.hostname,
                            claim.pid)
                try:
                    lock.force_break(claim.name)
                except FileNotFoundError:
                    pass

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "RobustLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["RobustLock", "StrictSoftFileLock", "flock_unsupported", "is_soft", "mark_soft"]
