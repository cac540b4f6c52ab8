"""Rank 0's record writer: group commit, one lock and one fsync per batch.

Why: with every worker appending its own ``started`` and ``done`` records
under the manifest lock, the lock and its fsync were the run's bottleneck
(280-420 appends/s whatever the writer count; on Lustre each poll of a busy
lock is a metadata request). Now rank 0 of each launcher is the only writer
of its records, and workers never touch the lock:

- ``started`` records are *write-ahead*: rank 0 commits them (in the claim
  step, :mod:`faust_hpc.run.claim`) before it sends the unit to a worker, so
  a unit never runs unclaimed;
- end records (``done`` / ``failed`` / ``interrupted``) are buffered here
  (:meth:`Journal.add`) and committed with the next claim, or when
  :meth:`Journal.due` (the oldest is ``max_delay_s`` old, or the buffer is
  full), and at drain and exit.

The bound: a finished unit's end record reaches disk at most ``max_delay_s``
(plus one coordinator turn, <= 0.5 s) after rank 0 hears of it. A kill loses
at most the buffered end records; on resume those units read as ``started``
by a launcher that is dead and are cleaned and redone (the stale rule).

Fault injection (tests only): ``FAUST_HPC_FAULT_COMMIT=kill:N`` SIGKILLs this
process at the N-th commit that carries end records, before anything is
written; ``torn:N`` writes half of that commit's bytes first.
"""
from __future__ import annotations

import os
import signal
import time
from typing import Any, Iterable

from faust_hpc.run.manifest import Manifest

FAULT_ENV = "FAUST_HPC_FAULT_COMMIT"
DEFAULT_MAX_DELAY_S = 2.0
DEFAULT_MAX_BATCH = 512


class Journal:
    """Buffered end records of one launcher, committed in groups."""

    def __init__(self, manifest: Manifest, launcher_id: str, max_delay_s: float = DEFAULT_MAX_DELAY_S,
                 max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.manifest = manifest
        self.launcher_id = launcher_id
        self.max_delay_s = float(max_delay_s)
        self.max_batch = int(max_batch)
        self._buffer: list[dict] = []
        self._oldest: float | None = None
        self.commits = 0
        self.records_written = 0
        self._end_commits = 0
        mode, _, nth = os.environ.get(FAULT_ENV, "").partition(":")
        self._fault = (mode, int(nth)) if mode in ("kill", "torn") and nth.isdigit() else None

    def add(self, *records: Any) -> None:
        """Buffer records (typed or their dicts) for the next commit."""
        if records and self._oldest is None:
            self._oldest = time.monotonic()
        self._buffer.extend(r.to_json() if hasattr(r, "to_json") else r for r in records)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def due(self) -> bool:
        """Must the buffer be committed now (the lateness bound, or full)?"""
        return bool(self._buffer) and (len(self._buffer) >= self.max_batch
                                       or time.monotonic() - (self._oldest or 0.0) >= self.max_delay_s)

    def commit(self, *write_ahead: Any) -> int:
        """Take the manifest lock and commit (see :meth:`commit_locked`)."""
        with self.manifest.lock:
            return self.commit_locked(write_ahead)

    def commit_locked(self, write_ahead: Iterable[Any] = ()) -> int:
        """Append the buffered records, then ``write_ahead``, in one write and
        one fsync; the caller holds the manifest lock. Returns the manifest
        size after the write. On an error the buffer is kept."""
        batch = self._buffer + [r.to_json() if hasattr(r, "to_json") else r for r in write_ahead]
        if not batch:
            return self.manifest.size()
        fault = None
        if self._buffer and self._fault is not None:
            self._end_commits += 1
            if self._end_commits == self._fault[1]:
                fault = _kill_torn if self._fault[0] == "torn" else _kill_now
        end = self.manifest.write_locked(batch, fault=fault)
        self.commits += 1
        self.records_written += len(batch)
        self._buffer.clear()
        self._oldest = None
        return end


def _kill_now(fd: int, data: bytes) -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)


def _kill_torn(fd: int, data: bytes) -> None:
    os.write(fd, data[: max(1, len(data) // 2)])
    os.fsync(fd)
    _kill_now(fd, data)


__all__ = ["Journal", "FAULT_ENV", "DEFAULT_MAX_DELAY_S", "DEFAULT_MAX_BATCH"]
