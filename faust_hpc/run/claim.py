"""Who owns a run: one launcher (or serial command) per product directory.

Two layers, because either alone fails somewhere: a kernel ``flock`` on
``run.lock`` held for the life of the owner (released by the kernel if it
dies; but not visible across nodes on every cluster filesystem) and an
``owner.json`` record naming host, pid and process start (visible
everywhere; but it survives a crash). A record left by a dead process on this
host is taken over; one from another host cannot be checked from here and is
refused with the way to break it.

``--break-lock`` is for owners that are gone: it is refused while the owner
record names a live process on this host whose start time matches (the
launcher is running; stop it first). A record without a start time (written by
something else, or by hand) cannot tell a live owner from a reused pid and is
refused with a message that names ``--break-lock``.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from filelock import BaseFileLock, FileLock, Timeout

from faust_hpc.errors import UserInputError
from faust_hpc.layout import RunLayout
from faust_hpc.run import locks
from faust_hpc.run.manifest import Manifest
from faust_hpc.run.records import OwnerRecord, hostname, now

log = logging.getLogger(__name__)


class RunBusyError(UserInputError):
    """Another launcher owns this run (product directory)."""


def proc_start_ticks(pid: int) -> int | None:
    """Process start time in clock ticks since boot (tells a reused pid apart)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True  # no /proc: the kill(0) answer is all we know
    if stat[0] in ("Z", "X"):
        return False  # killed, not yet reaped: its locks are gone already
    if start_ticks is not None and len(stat) > 19 and int(stat[19]) != start_ticks:
        return False  # the pid was reused by another process
    return True


def owner_alive(owner: dict | OwnerRecord) -> bool:
    """Is the launcher an owner record names still running? (One on another
    host cannot be checked from here and counts as alive.)"""
    rec = owner if isinstance(owner, OwnerRecord) else OwnerRecord.from_json(owner)
    if rec.host != hostname():
        return True
    return pid_alive(int(rec.pid if rec.pid is not None else -1), rec.start_ticks)


def _busy(directory: Path, owner: OwnerRecord) -> RunBusyError:
    if owner.host == hostname() and owner.start_ticks is None and owner.pid not in (None, -1):
        return RunBusyError(f"{directory.parent}: the owner record names pid {owner.pid} on this host without "
                            f"its start time, so a reused pid cannot be told from a live launcher "
                            f"({owner.describe()}); if no launcher runs this run, re-run with --break-lock")
    return RunBusyError(f"{directory.parent}: another launcher is running this run now "
                        f"({owner.describe()}); wait for it, or stop it first")


def _live_here(owner: OwnerRecord) -> bool:
    """A launcher on this host that is verifiably running (pid and start time match)."""
    return (owner.host == hostname() and owner.start_ticks is not None
            and pid_alive(int(owner.pid), owner.start_ticks))


class RunClaim:
    """Exclusive ownership of a run by one launcher (rank 0) or serial command."""

    def __init__(self, product_dir: str | os.PathLike) -> None:
        self.layout = RunLayout(product_dir)
        self.dir = self.layout.state_dir
        self.owner_path = self.layout.owner_path
        self.manifest = Manifest(product_dir)
        self._run_lock: BaseFileLock | None = None
        self.took_over: dict | None = None

    def read_owner(self) -> dict | None:
        try:
            return json.loads(self.owner_path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def acquire(self, break_lock: bool = False, command: str = "faust-hpc run") -> "RunClaim":
        self.dir.mkdir(parents=True, exist_ok=True)
        lock_path = self.layout.run_lock_path
        if break_lock:
            raw = self.read_owner()
            if raw and _live_here(owner := OwnerRecord.from_json(raw)):
                raise RunBusyError(f"{self.dir.parent}: --break-lock refused: the launcher that owns this run "
                                   f"is alive on this host ({owner.describe()}); --break-lock is for owners "
                                   f"that are gone: wait for it, or stop it first")
            for stale in (lock_path, self.owner_path):
                stale.unlink(missing_ok=True)
        if not locks.is_soft(self.dir):
            lock = FileLock(str(lock_path), timeout=0, fallback_to_soft=False)
            try:
                lock.acquire(timeout=0)
                self._run_lock = lock
            except Timeout:
                raise _busy(self.dir, OwnerRecord.from_json(self.read_owner() or {})) from None
            except OSError as exc:
                if not locks.flock_unsupported(exc):
                    raise
                locks.mark_soft(self.dir)
        me = OwnerRecord(host=hostname(), pid=os.getpid(), start_ticks=proc_start_ticks(os.getpid()),
                         time=now(), command=command)
        with self.manifest.lock:
            raw = self.read_owner()
            owner = OwnerRecord.from_json(raw) if raw else None
            if owner and not (owner.host == me.host and owner.pid == me.pid):
                if owner.host == me.host:
                    if owner_alive(owner):
                        self._release_lock()
                        raise _busy(self.dir, owner)
                    log.warning("taking over from a launcher that is gone (%s)", owner.describe())
                    self.took_over = raw
                else:
                    self._release_lock()
                    raise RunBusyError(
                        f"{self.dir.parent}: this run is owned by a launcher on another host "
                        f"({owner.describe()}); if it is no longer running there, "
                        f"re-run with --break-lock")
            tmp = self.owner_path.with_name(f".owner.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(me.to_json()))
            os.replace(tmp, self.owner_path)
        return self

    def _release_lock(self) -> None:
        if self._run_lock is not None:
            self._run_lock.release()
            self._run_lock = None

    def release(self) -> None:
        owner = self.read_owner()
        if owner and owner.get("pid") == os.getpid() and owner.get("host") == hostname():
            self.owner_path.unlink(missing_ok=True)
        self._release_lock()

    def __enter__(self) -> "RunClaim":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["RunClaim", "RunBusyError", "pid_alive", "owner_alive", "proc_start_ticks"]
