"""The run's memory: append-only JSON-lines records on the shared filesystem.

Why a log of events rather than a state file: a crash (kill -9, node failure,
walltime) can stop any process between any two instructions. Appending one
self-contained line per event under a file lock, flushed and fsync'd, means the
worst a crash leaves behind is one torn last line, which readers skip. The
state of every unit is *derived* from the events (:func:`derive_states`), so
there is nothing to keep consistent by hand. The records' schema is
:mod:`faust_hpc.run.records`; the paths are :class:`faust_hpc.layout.RunLayout`'s.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from faust_hpc.layout import RunLayout
from faust_hpc.run.locks import RobustLock
from faust_hpc.run.records import FreezeRecord, RunEvent, UnitEvent, UnitStatus

log = logging.getLogger(__name__)


def _parse_fast(data: bytes) -> list[dict] | None:
    """One JSON parse for a whole well-formed file (100k records in a few
    tenths of a second); None if any line is not a plain record."""
    body = data.strip()
    if not body:
        return []
    try:
        parsed = json.loads(b"[" + body.replace(b"\n", b",") + b"]")
    except ValueError:
        return None
    return parsed if all(isinstance(r, dict) for r in parsed) else None


def _parse_lines(data: bytes, path: Path) -> list[dict]:
    """All complete records; a torn or garbled line is skipped (a torn *last*
    line is the expected trace of a crash mid-append and is not worth a warning)."""
    if not data:
        return []
    if data.endswith(b"\n"):
        fast = _parse_fast(data)
        if fast is not None:
            return fast
    else:
        # The usual damage: a crash mid-append tore the last line. Parse the rest in one go.
        cut = data.rfind(b"\n") + 1
        head = _parse_fast(data[:cut])
        if head is not None:
            try:
                tail = json.loads(data[cut:])
                return head + ([tail] if isinstance(tail, dict) else [])
            except ValueError:
                return head
    records: list[dict] = []
    for i, line in enumerate(data.split(b"\n")):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            log.debug("%s: skipping unreadable line %d", path, i + 1)
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


@dataclass
class UnitState:
    """What the records say about one unit."""

    unit: str
    status: UnitStatus = UnitStatus.PENDING
    attempt: int = 0            # highest attempt number seen (log file names continue from it)
    failures: int = 0           # failed attempts since the last done/invalidated
    outputs: list[str] = field(default_factory=list)
    checks: dict = field(default_factory=dict)   # output -> fingerprint, from the done record
    info: dict = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None   # path of the failed attempt's traceback file
    log: str | None = None         # CASA log of the latest attempt
    diverged: dict | None = None   # the failed attempt's runaway clean (UnitRecord.diverged), if it was one
    rank: int | None = None
    host: str | None = None
    pid: int | None = None
    started: float | None = None   # time of the latest start
    finished: float | None = None  # time of the latest done/failed/interrupted
    launcher: str | None = None    # the launcher that claimed the latest attempt
    final: bool = False            # the latest failure was final (its launcher gave up on it)

    @property
    def elapsed(self) -> float | None:
        if self.started is None:
            return None
        end = self.finished if self.finished is not None and self.status != UnitStatus.RUNNING else time.time()
        return max(0.0, end - self.started)


def fold_unit(states: dict[str, UnitState], raw: dict) -> str | None:
    """Fold one manifest line (a stored dict) into ``states``; the unit id it
    touched, or None for a line that is no unit event.

    Reads the stored dict by :class:`UnitRecord`'s field names without
    building a typed record per line: a whole-program manifest has ~10^5-10^6
    lines and every ``status`` and start folds them."""
    uid = raw.get("unit")
    event = raw.get("event")
    if uid is None or event not in _UNIT_EVENTS:
        return None
    get = raw.get
    st = states.get(uid)
    if st is None:
        st = states[uid] = UnitState(uid)
    st.attempt = max(st.attempt, int(get("attempt") or 0))
    if event == _INVALIDATED:
        states[uid] = UnitState(uid, attempt=st.attempt)
        return uid
    st.rank, st.host, st.pid = get("rank", 0), get("host", ""), get("pid", 0)
    if get("log"):
        st.log = get("log")
    if event == _STARTED:
        st.status, st.started, st.finished = UnitStatus.RUNNING, get("time", 0.0), None
        st.error = st.error_type = st.traceback = st.diverged = None
        st.launcher = get("launcher")
    elif event == _DONE:
        st.status, st.finished = UnitStatus.DONE, get("time", 0.0)
        st.outputs = list(get("outputs") or [])
        st.checks = dict(get("checks") or {})
        st.info = dict(get("info") or {})
        st.error = st.error_type = st.traceback = st.diverged = None
        st.failures = 0
        st.final = False
    elif event == _FAILED:
        st.status, st.finished = UnitStatus.FAILED, get("time", 0.0)
        st.error, st.error_type, st.traceback = get("error"), get("error_type"), get("traceback")
        st.diverged = get("diverged")
        st.failures += 1
        st.outputs = list(get("outputs") or [])
        st.final = bool(get("final"))
    elif event == _INTERRUPTED:
        st.status, st.finished = UnitStatus.INTERRUPTED, get("time", 0.0)
        st.error = get("error")
    return uid


def derive_states(records: Iterable[dict]) -> dict[str, UnitState]:
    """Fold unit events in order into one :class:`UnitState` per unit id."""
    states: dict[str, UnitState] = {}
    for raw in records:
        fold_unit(states, raw)
    return states


_UNIT_EVENTS = frozenset(e.value for e in UnitEvent)
_STARTED, _DONE, _FAILED = UnitEvent.STARTED.value, UnitEvent.DONE.value, UnitEvent.FAILED.value
_INTERRUPTED, _INVALIDATED = UnitEvent.INTERRUPTED.value, UnitEvent.INVALIDATED.value


def _as_json(record: Any) -> dict:
    return record.to_json() if hasattr(record, "to_json") else record


class Manifest:
    """Append-only event log of one run (one product directory)."""

    def __init__(self, product_dir: str | os.PathLike) -> None:
        self.layout = RunLayout(product_dir)
        self.product_dir = self.layout.product_dir
        self.dir = self.layout.state_dir
        self.path = self.layout.manifest_path
        self._lock = RobustLock(self.layout.manifest_lock_path)

    def ensure_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def lock(self) -> RobustLock:
        return self._lock

    def append(self, *records: Any) -> None:
        """Append records (typed records or their JSON dicts) atomically with
        respect to other writers, durable on return."""
        if not records:
            return
        self.ensure_dir()
        with self._lock:
            self.write_locked(records)

    def write_locked(self, records: Iterable[Any], fault: Any = None) -> int:
        """Append ``records`` with one write and ONE fsync; the caller holds
        :attr:`lock`. Returns the file size after the write. ``fault`` (tests
        only) is called with the fd and the payload instead of the write."""
        payload = "".join(json.dumps(_as_json(r), separators=(",", ":"), default=str) + "\n" for r in records)
        if not payload:
            return self.size()
        self.ensure_dir()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size:
                # A crash mid-append leaves a torn line without newline: start on a fresh line.
                with open(self.path, "rb") as fh:
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":
                        payload = "\n" + payload
            data = payload.encode("utf-8")
            if fault is not None:
                fault(fd, data)
            end = size + len(data)
            while data:
                written = os.write(fd, data)
                data = data[written:]
            os.fsync(fd)
            return end
        finally:
            os.close(fd)

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    READ_CHUNK_BYTES = 32 << 20

    def iter_from(self, offset: int, chunk_bytes: int = READ_CHUNK_BYTES) -> Iterator[tuple[list[dict], int]]:
        """:meth:`read_from` in pieces of about ``chunk_bytes``: (records, offset
        after them) per piece, so a full scan of a big manifest never holds all
        of its bytes and parsed records at once."""
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            return
        with fh:
            fh.seek(offset)
            carry = b""
            while True:
                data = fh.read(chunk_bytes)
                if not data:
                    return
                data = carry + data
                cut = data.rfind(b"\n") + 1
                carry = data[cut:]
                if cut:
                    offset += cut
                    yield _parse_lines(data[:cut], self.path), offset

    def read_from(self, offset: int) -> tuple[list[dict], int]:
        """The complete records appended at or after byte ``offset``, and the
        offset just after the last complete line (a line still being written,
        or torn by a crash, is left for the next read)."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            return [], 0
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            return [], offset
        return _parse_lines(data[:cut], self.path), offset + cut

    def records(self) -> list[dict]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return _parse_lines(data, self.path)

    def states(self, records: list[dict] | None = None) -> dict[str, UnitState]:
        return derive_states(self.records() if records is None else records)

    # ---- run-level records (the folded view of every record kind is faust_hpc.run.snapshot.RunState)
    def frozen_nchunks(self, records: list[dict] | None = None) -> dict[str, int]:
        """Chunk counts per image key path, as frozen by the first run
        (later freeze records only add keys the first did not know)."""
        recs = self.records() if records is None else records
        frozen: dict[str, int] = {}
        for rec in recs:
            if rec.get("event") == RunEvent.FREEZE:
                for key, n in FreezeRecord.from_json(rec).nchunks.items():
                    frozen.setdefault(key, int(n))
        return frozen


__all__ = ["Manifest", "UnitState", "derive_states"]
