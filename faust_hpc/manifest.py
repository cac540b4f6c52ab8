"""The run's memory: append-only JSON-lines records on the shared filesystem.

Why a log of events rather than a state file: a crash (kill -9, node failure,
walltime) can stop any process between any two instructions. Appending one
self-contained line per event under a file lock, flushed and fsync'd, means the
worst a crash leaves behind is one torn last line, which readers skip. The
state of every unit is *derived* from the events, so there is nothing to keep
consistent by hand.

Layout under ``<product_dir>/.faust-hpc/``:

- ``manifest.jsonl``  the records (one JSON object per line);
- ``manifest.lock``   short-held lock around each append;
- ``run.lock``        held (flock) by the launcher for the whole run;
- ``owner.json``      the live-owner record: host, pid, start time of that launcher.

Record kinds (``event``):

- unit events: ``started`` / ``done`` / ``failed`` / ``interrupted`` /
  ``invalidated`` with ``unit, attempt, rank, host, pid, time, outputs, error``
  (and ``info`` on ``done``: e.g. a prepare unit's chunk list);
- ``run``: one per launcher start (spec hash, ranks, host);
- ``freeze``: the first run's chunk counts per image, so that resumes and
  runs with other rank counts cut the same chunks and give identical products.

Where ``flock`` is unsupported (Lustre mounted without ``-o flock`` answers
ENOSYS) the locks fall back to filelock's :class:`StrictSoftFileLock`.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from filelock import BaseFileLock, FileLock, StrictSoftFileLock, Timeout

from faust_hpc.errors import UserInputError

log = logging.getLogger(__name__)

STATE_DIRNAME = ".faust-hpc"
MANIFEST_NAME = "manifest.jsonl"
UNIT_EVENTS = ("started", "done", "failed", "interrupted", "invalidated")
RUN_EVENTS = ("run", "freeze", "finish")

# Derived unit statuses.
PENDING, RUNNING, DONE, FAILED, INTERRUPTED = "pending", "running", "done", "failed", "interrupted"


class RunBusyError(UserInputError):
    """Another launcher owns this run (product directory)."""


def state_dir(product_dir: str | os.PathLike) -> Path:
    return Path(product_dir) / STATE_DIRNAME


def hostname() -> str:
    return socket.gethostname()


def now() -> float:
    return round(time.time(), 6)


# --------------------------------------------------------------------------- locks
_soft_dirs: set[str] = set()  # directories where flock answered ENOSYS


def _flock_unsupported(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.ENOSYS


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
        return str(self.path.parent) in _soft_dirs

    def _make(self) -> BaseFileLock:
        if self.soft:
            return StrictSoftFileLock(str(self.path) + ".strict", timeout=self.timeout)
        return FileLock(str(self.path), timeout=self.timeout, fallback_to_soft=False)

    def acquire(self, timeout: float | None = None) -> "RobustLock":
        lock = self._make()
        try:
            lock.acquire(timeout=self.timeout if timeout is None else timeout)
        except OSError as exc:
            if not _flock_unsupported(exc) or self.soft:
                raise
            log.warning("flock unsupported on %s (ENOSYS); using StrictSoftFileLock", self.path.parent)
            _soft_dirs.add(str(self.path.parent))
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


# --------------------------------------------------------------------------- records
def unit_record(unit: str, event: str, *, attempt: int, rank: int = 0, host: str | None = None,
                pid: int | None = None, outputs: Iterable[str] = (), error: str | None = None,
                info: dict | None = None, **extra: Any) -> dict:
    """One unit event in the manifest's documented shape."""
    if event not in UNIT_EVENTS:
        raise ValueError(f"unknown unit event {event!r}; expected one of {UNIT_EVENTS}")
    rec = {"unit": unit, "event": event, "attempt": int(attempt), "rank": int(rank),
           "host": host or hostname(), "pid": int(pid if pid is not None else os.getpid()),
           "time": now(), "outputs": [str(p) for p in outputs], "error": error}
    if info:
        rec["info"] = info
    rec.update(extra)
    return rec


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
    status: str = PENDING
    attempt: int = 0            # highest attempt number seen (log file names continue from it)
    failures: int = 0           # failed attempts since the last done/invalidated
    outputs: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    error: str | None = None
    rank: int | None = None
    host: str | None = None
    pid: int | None = None
    started: float | None = None   # time of the latest start
    finished: float | None = None  # time of the latest done/failed/interrupted

    @property
    def elapsed(self) -> float | None:
        if self.started is None:
            return None
        end = self.finished if self.finished is not None and self.status != RUNNING else time.time()
        return max(0.0, end - self.started)


def derive_states(records: Iterable[dict]) -> dict[str, UnitState]:
    """Fold unit events in order into one :class:`UnitState` per unit id."""
    states: dict[str, UnitState] = {}
    for rec in records:
        uid = rec.get("unit")
        event = rec.get("event")
        if uid is None or event not in UNIT_EVENTS:
            continue
        st = states.get(uid)
        if st is None:
            st = states[uid] = UnitState(uid)
        st.attempt = max(st.attempt, int(rec.get("attempt") or 0))
        if event == "invalidated":
            states[uid] = UnitState(uid, attempt=st.attempt)
            continue
        st.rank, st.host, st.pid = rec.get("rank"), rec.get("host"), rec.get("pid")
        if event == "started":
            st.status, st.started, st.finished, st.error = RUNNING, rec.get("time"), None, None
        elif event == "done":
            st.status, st.finished = DONE, rec.get("time")
            st.outputs = list(rec.get("outputs") or [])
            st.info = dict(rec.get("info") or {})
            st.error, st.failures = None, 0
        elif event == "failed":
            st.status, st.finished = FAILED, rec.get("time")
            st.error = rec.get("error")
            st.failures += 1
            st.outputs = list(rec.get("outputs") or [])
        elif event == "interrupted":
            st.status, st.finished = INTERRUPTED, rec.get("time")
            st.error = rec.get("error")
    return states


class Manifest:
    """Append-only event log of one run (one product directory)."""

    def __init__(self, product_dir: str | os.PathLike) -> None:
        self.product_dir = Path(product_dir)
        self.dir = state_dir(self.product_dir)
        self.path = self.dir / MANIFEST_NAME
        self._lock = RobustLock(self.dir / "manifest.lock")

    def ensure_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def lock(self) -> RobustLock:
        return self._lock

    def append(self, *records: dict) -> None:
        """Append records atomically with respect to other writers, durable on return."""
        if not records:
            return
        payload = "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in records)
        self.ensure_dir()
        with self._lock:
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
                while data:
                    written = os.write(fd, data)
                    data = data[written:]
                os.fsync(fd)
            finally:
                os.close(fd)

    def records(self) -> list[dict]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return _parse_lines(data, self.path)

    def states(self, records: list[dict] | None = None) -> dict[str, UnitState]:
        return derive_states(self.records() if records is None else records)

    # ---- run-level records
    def run_records(self, records: list[dict] | None = None) -> list[dict]:
        recs = self.records() if records is None else records
        return [r for r in recs if r.get("event") == "run"]

    def frozen_nchunks(self, records: list[dict] | None = None) -> dict[str, int]:
        """Chunk counts per image key path, as frozen by the first run
        (later freeze records only add keys the first did not know)."""
        recs = self.records() if records is None else records
        frozen: dict[str, int] = {}
        for rec in recs:
            if rec.get("event") == "freeze":
                for key, n in (rec.get("nchunks") or {}).items():
                    frozen.setdefault(key, int(n))
        return frozen

    def first_spec_hash(self, records: list[dict] | None = None) -> str | None:
        for rec in self.run_records(records):
            if rec.get("spec_hash"):
                return rec["spec_hash"]
        return None


# --------------------------------------------------------------------------- run ownership
def _proc_start_ticks(pid: int) -> int | None:
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


def owner_alive(owner: dict) -> bool:
    """Is the launcher an owner record names still running? (One on another
    host cannot be checked from here and counts as alive.)"""
    if owner.get("host") != hostname():
        return True
    return pid_alive(int(owner.get("pid", -1)), owner.get("start_ticks"))


def _describe_owner(owner: dict) -> str:
    started = owner.get("time")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return f"host {owner.get('host')} pid {owner.get('pid')} (started {when})"


class RunClaim:
    """Exclusive ownership of a run by one launcher (rank 0).

    Two layers, because either alone fails somewhere: a kernel ``flock`` on
    ``run.lock`` held for the life of the launcher (released by the kernel if
    it dies; but not visible across nodes on every cluster filesystem) and an
    ``owner.json`` record naming host, pid and process start (visible
    everywhere; but it survives a crash). A record left by a dead process on
    this host is taken over; one from another host cannot be checked from here
    and is refused with the way to break it.
    """

    def __init__(self, product_dir: str | os.PathLike) -> None:
        self.dir = state_dir(product_dir)
        self.owner_path = self.dir / "owner.json"
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
        lock_path = self.dir / "run.lock"
        if break_lock:
            for stale in (lock_path, self.owner_path):
                stale.unlink(missing_ok=True)
        if str(self.dir) not in _soft_dirs:
            lock = FileLock(str(lock_path), timeout=0, fallback_to_soft=False)
            try:
                lock.acquire(timeout=0)
                self._run_lock = lock
            except Timeout:
                owner = self.read_owner() or {}
                raise RunBusyError(
                    f"{self.dir.parent}: another launcher is running this run now "
                    f"({_describe_owner(owner)}); wait for it, or stop it first") from None
            except OSError as exc:
                if not _flock_unsupported(exc):
                    raise
                _soft_dirs.add(str(self.dir))
        me = {"host": hostname(), "pid": os.getpid(), "start_ticks": _proc_start_ticks(os.getpid()),
              "time": now(), "command": command}
        with self.manifest.lock:
            owner = self.read_owner()
            if owner and not (owner.get("host") == me["host"] and owner.get("pid") == me["pid"]):
                if owner.get("host") == me["host"]:
                    if owner_alive(owner):
                        self._release_lock()
                        raise RunBusyError(
                            f"{self.dir.parent}: another launcher is running this run now "
                            f"({_describe_owner(owner)}); wait for it, or stop it first")
                    log.warning("taking over from a launcher that is gone (%s)", _describe_owner(owner))
                    self.took_over = owner
                else:
                    self._release_lock()
                    raise RunBusyError(
                        f"{self.dir.parent}: this run is owned by a launcher on another host "
                        f"({_describe_owner(owner)}); if it is no longer running there, "
                        f"re-run with --break-lock")
            tmp = self.owner_path.with_name(f".owner.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(me))
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
