"""Claiming units: several launchers on one run, decided under the manifest lock.

Why under the lock: two launchers must never claim the same unit. Each claim
step of a launcher (:meth:`Claims.step`) takes the manifest lock, reads the
records the others appended since its last step (it keeps a byte offset and
parses only that tail), folds them into its :class:`~.snapshot.RunState`,
lets the caller decide what to run (the coordinator folds the others'
records into its scheduler and assigns), appends the decision -- the
``started`` records, write-ahead, with any buffered end records and a
heartbeat if one is due -- with one fsync, and releases the lock. Only then
are the units sent to workers. Who is alive is :mod:`.leases`.

``--break-lock`` (:func:`break_lock`) is for launchers that are gone but
whose leases have not run out (a node that died with its job): it declares
every other launcher dead now (a ``revoke`` record), and is refused while a
launcher named in the records is verifiably alive on this host.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from faust_hpc.errors import UserInputError
from faust_hpc.run.manifest import Manifest
from faust_hpc.run.records import LeaseRecord, RevokeRecord, now

log = logging.getLogger(__name__)


class RunBusyError(UserInputError):
    """A launcher that is alive holds what was asked for (``--break-lock``, ``rerun``)."""


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


class Claims:
    """One launcher's claim steps: read the others' tail, decide, commit, under one lock hold."""

    def __init__(self, manifest: Manifest, state: Any, journal: Any, launcher: Any) -> None:
        self.manifest = manifest
        self.state = state          # RunState, folded up to state.offset
        self.journal = journal
        self.me = launcher.id
        self.lease_s = float(launcher.lease_s)
        self.until = float(launcher.until)
        self._last_heartbeat = time.time()
        self._touched: set[str] = set()   # units others' records touched, not yet shown to a decision
        manifest.lock.owner_gone = self._owner_gone   # a strict soft lock held by a dead launcher

    def _owner_gone(self, host: str, pid: int) -> bool:
        """Is the launcher process ``pid`` on ``host`` dead by the records (its lease ran out)?"""
        mine = [ls for ls in self.state.launchers.values() if ls.host == host and ls.pid == pid]
        return bool(mine) and not any(ls.alive() for ls in mine)

    @classmethod
    def join(cls, manifest: Manifest, state: Any, launcher: Any, records: Callable[[Any], Iterable[Any]] | None = None,
             journal: Any = None) -> "Claims":
        """Join the run: under the lock, fold the tail, then write the
        ``launcher`` record and ``records(state)`` (the run / freeze records,
        decided on the state as it is under the lock)."""
        from faust_hpc.run.journal import Journal

        manifest.ensure_dir()
        claims = cls(manifest, state, journal or Journal(manifest, launcher.id), launcher)
        with manifest.lock:
            claims.sync_locked()
            manifest.write_locked([launcher, *(records(state) if records is not None else ())])
            claims.sync_locked()
        return claims

    def sync_locked(self) -> set[str]:
        """Fold the records appended since the last step (caller holds the lock)."""
        records, end = self.manifest.read_from(self.state.offset)
        touched = self.state.fold(records)
        self.state.offset = end
        return touched

    @property
    def unseen(self) -> bool:
        """Were others' records folded that no decision has seen yet?"""
        return bool(self._touched)

    def heartbeat_due(self) -> bool:
        return time.time() - self._last_heartbeat >= self.lease_s / 3

    def step(self, decide: Callable[[set[str]], Iterable[Any]] | None = None, force: bool = False) -> list[Any]:
        """One claim step: sync, ``decide(touched unit ids)`` -> records to
        write ahead, commit them with the buffered end records and a heartbeat
        if due. Returns what ``decide`` returned. Without a decision, nothing
        buffered and no heartbeat due, the lock is not taken (unless ``force``)."""
        if decide is None and not force and not self.journal.due() and not self.heartbeat_due():
            return []
        with self.manifest.lock:
            touched = self._touched | self.sync_locked()
            if decide is not None:
                ahead = list(decide(touched))
                self._touched = set()
            else:   # kept for the next decision: the caller has not seen them yet
                ahead, self._touched = [], touched
            beat = []
            t = time.time()
            if self.heartbeat_due():
                self.until = round(t + self.lease_s, 6)
                beat = [LeaseRecord(launcher=self.me, until=self.until, time=now())]
                self._last_heartbeat = t
            if ahead or beat or self.journal.pending:
                self.journal.commit_locked([*ahead, *beat])
                self.sync_locked()   # our own records: the state stays whole (snapshots are written from it)
        return ahead

    def lease_lapsed(self) -> bool:
        """Did our own lease run out (a heartbeat could not be written in time)?"""
        return time.time() > self.until


def break_lock(manifest: Manifest, state: Any, by: str | None = None) -> list[str]:
    """Declare every launcher that still holds a lease dead (a ``revoke`` record).

    Refused (:class:`RunBusyError`, nothing written) while one of them is
    verifiably running on this host: stop it first. Returns the revoked ids."""
    manifest.ensure_dir()
    with manifest.lock:
        records, end = manifest.read_from(state.offset)
        state.fold(records)
        state.offset = end
        here = [ls for ls in state.launchers.values() if ls.verifiably_alive_here() and ls.id != by]
        if here:
            ls = here[0]
            raise RunBusyError(f"{manifest.product_dir}: --break-lock refused: a launcher of this run is alive on "
                               f"this host ({ls.describe()}); --break-lock is for launchers that are gone: "
                               f"wait for it, or stop it first")
        gone = sorted(lid for lid, ls in state.launchers.items() if ls.alive() and lid != by)
        if gone:
            manifest.write_locked([RevokeRecord(launchers=gone, by=by)])
            log.warning("--break-lock: declared %d launcher(s) dead: %s", len(gone), ", ".join(gone))
    return gone


__all__ = ["Claims", "RunBusyError", "break_lock", "pid_alive", "proc_start_ticks"]
