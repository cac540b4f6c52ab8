"""The run's records: one schema for every line of the manifest.

Why typed records: the launcher writes them, and ``status``, ``rerun``,
``report``, resume and the batch scripts read them back; when each spelled the
keys itself they drifted. Every record is a dataclass here with
``to_json()`` (the on-disk dict, unchanged from earlier manifests: ``unit``,
``event``, ``attempt``, ``outputs``, ``error``, ``info`` ...) and
``from_json()`` (tolerant: keys it does not know are kept in ``extra`` and
written back).

Record kinds (``event``):

- unit events (:class:`UnitEvent`): ``started`` / ``done`` / ``failed`` /
  ``interrupted`` / ``invalidated`` (:class:`UnitRecord`);
- ``run`` (:class:`RunRecord`): one per launcher start (spec hash, ranks, host);
- ``freeze`` (:class:`FreezeRecord`): the first run's chunk counts per image,
  so that resumes and runs with other rank counts cut the same chunks;
- ``finish`` (:class:`FinishRecord`): how a launcher ended;
- ``launcher`` (:class:`LauncherRecord`): a launcher joined the run (its id,
  host, pid, Slurm job, lease length);
- ``lease`` (:class:`LeaseRecord`): a launcher's heartbeat: its claims hold
  until ``until`` (one record renews every unit it runs);
- ``revoke`` (:class:`RevokeRecord`): ``--break-lock`` declared launchers dead.

Every unit ``started`` record names its ``launcher``; rank 0 writes it before
the unit is sent (write-ahead), and the end record (built from the worker's
outcome by :func:`end_record`) after.
"""
from __future__ import annotations

import functools
import os
import socket
import time
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar, Iterable


class UnitStatus(StrEnum):
    """What the records say about a unit (derived, never written)."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class UnitEvent(StrEnum):
    STARTED = "started"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    INVALIDATED = "invalidated"


class RunEvent(StrEnum):
    RUN = "run"
    FREEZE = "freeze"
    FINISH = "finish"
    LAUNCHER = "launcher"
    LEASE = "lease"
    REVOKE = "revoke"


UNIT_EVENTS = tuple(e.value for e in UnitEvent)
RUN_EVENTS = tuple(e.value for e in RunEvent)
END_EVENTS = (UnitEvent.DONE.value, UnitEvent.FAILED.value, UnitEvent.INTERRUPTED.value)


def hostname() -> str:
    return socket.gethostname()


def now() -> float:
    return round(time.time(), 6)


@functools.cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


class _Record:
    """to_json / from_json for the record dataclasses: ``None`` optionals are
    left out, unknown keys travel in ``extra``."""

    ALWAYS: ClassVar[tuple[str, ...]] = ()   # keys written even when None/empty

    def to_json(self) -> dict:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name in self.ALWAYS or (value is not None and value != {}):
                out[f.name] = value
        out.update(getattr(self, "extra", {}))
        return out

    @classmethod
    def from_json(cls, data: dict) -> Any:
        try:  # the usual record has only known keys: one call, no copies (100k records per scan)
            return cls(**data)
        except TypeError:
            pass
        known = _field_names(cls)
        kw = {k: v for k, v in data.items() if k in known and k != "extra"}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kw, extra=extra)  # type: ignore[call-arg]


@dataclass
class UnitRecord(_Record):
    """One unit event. A failed one says why: ``error`` ("Type: message"),
    ``error_type``, the path of the child's ``traceback`` file, and
    ``retry=False`` when retrying cannot help (bad input, a diverged clean);
    ``no_space`` names the path whose filesystem was full. A unit whose tclean
    ran away and was stopped by the guard
    (:class:`~faust_hpc.errors.DivergenceError`) is *flagged*: ``diverged``
    holds ``stage``, ``reason``, ``nmajordone``, ``cap`` and ``channels``. A
    done one carries ``checks``: what each output looked like
    (:mod:`faust_hpc.run.fingerprint`; absent in records written before it
    existed). ``launcher`` names the launcher that claimed the unit
    (:mod:`faust_hpc.run.leases`); ``final`` on a failed record says that
    launcher gave up on it (no retries left, or retrying cannot help), so
    other launchers do not retry it either. A ``started`` record's ``pid`` is
    the launcher's (written before the child exists); an end record's is the
    child's."""

    ALWAYS: ClassVar[tuple[str, ...]] = ("unit", "event", "attempt", "rank", "host", "pid", "time", "outputs",
                                         "error")

    unit: str
    event: str
    attempt: int = 0
    rank: int = 0
    host: str = ""
    pid: int = 0
    time: float = 0.0
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    info: dict = field(default_factory=dict)
    log: str | None = None
    threads: int | None = None
    elapsed: float | None = None
    error_type: str | None = None
    traceback: str | None = None
    retry: bool | None = None
    checks: dict | None = None
    no_space: str | None = None
    diverged: dict | None = None
    launcher: str | None = None
    final: bool | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.event not in UNIT_EVENTS:
            raise ValueError(f"unknown unit event {self.event!r}; expected one of {UNIT_EVENTS}")


def unit_record(unit: str, event: str, *, attempt: int, rank: int = 0, host: str | None = None,
                pid: int | None = None, outputs: Iterable[str] = (), error: str | None = None,
                info: dict | None = None, **extra: Any) -> dict:
    """One unit event as the manifest stores it (fields of :class:`UnitRecord`
    by name; anything else is kept as an extra key)."""
    known = _field_names(UnitRecord)
    kw: dict[str, Any] = {"attempt": int(attempt), "rank": int(rank), "host": host or hostname(),
                          "pid": int(pid if pid is not None else os.getpid()), "time": now(),
                          "outputs": [str(p) for p in outputs], "error": error, "info": dict(info or {})}
    kw.update((k, v) for k, v in extra.items() if k in known)
    rec = UnitRecord(unit, str(event), **kw, extra={k: v for k, v in extra.items() if k not in known})
    return rec.to_json()


@dataclass
class RunRecord(_Record):
    """A launcher (``faust-hpc run``, or a serial ``image`` / ``moments`` / ``qa``) started."""

    event: str = RunEvent.RUN.value
    time: float = field(default_factory=now)
    host: str = field(default_factory=hostname)
    pid: int = field(default_factory=os.getpid)
    spec_hash: str | None = None
    runfile: str | None = None
    workers: int = 1
    ranks: int = 1
    command: str | None = None
    launcher: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class FreezeRecord(_Record):
    """Chunk counts per image key path, frozen by the run that planned them first."""

    event: str = RunEvent.FREEZE.value
    time: float = field(default_factory=now)
    nchunks: dict[str, int] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


@dataclass
class FinishRecord(_Record):
    """How a launcher ended (the batch scripts trust this over an exit status)."""

    ALWAYS: ClassVar[tuple[str, ...]] = ("failed",)

    event: str = RunEvent.FINISH.value
    time: float = field(default_factory=now)
    host: str = field(default_factory=hostname)
    pid: int = field(default_factory=os.getpid)
    done: int = 0
    total: int = 0
    failed: list[str] = field(default_factory=list)
    drained: bool = False
    exit_status: int | None = None
    loop_wall_s: float | None = None
    loop_cpu_s: float | None = None
    launcher: str | None = None
    slurm_job: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class LauncherRecord(_Record):
    """A launcher joined the run: who it is, where, and how long its lease lasts
    without a heartbeat. ``id`` is unique per launcher process (host, pid,
    process start); ``slurm_job`` (``SLURM_JOB_ID``) lets the next
    incarnation of a requeued job know its earlier self is gone."""

    event: str = RunEvent.LAUNCHER.value
    id: str = ""
    time: float = field(default_factory=now)
    host: str = field(default_factory=hostname)
    pid: int = field(default_factory=os.getpid)
    start_ticks: int | None = None
    lease_s: float = 120.0
    until: float = 0.0
    ranks: int = 1
    workers: int = 1
    command: str | None = None
    slurm_job: str | None = None
    slurm_array_task: str | None = None
    slurm_restart: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class LeaseRecord(_Record):
    """A heartbeat: launcher ``launcher`` holds its claims until ``until``."""

    event: str = RunEvent.LEASE.value
    launcher: str = ""
    until: float = 0.0
    time: float = field(default_factory=now)
    extra: dict = field(default_factory=dict)


@dataclass
class RevokeRecord(_Record):
    """``--break-lock``: the named launchers are dead from now on (their
    claimed units are free for others, and are cleaned before they rerun)."""

    event: str = RunEvent.REVOKE.value
    launchers: list[str] = field(default_factory=list)
    by: str | None = None
    time: float = field(default_factory=now)
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class UnitCost:
    """``info["cost"]`` of a done unit (:data:`COST_INFO_KEY`): what the executor
    measured, for :mod:`faust_hpc.costfit` and ``faust-hpc plan``. ``stages``:
    seconds per stage (a chunk: dirty / nomask / seedmask / clean; other kinds
    one entry); ``nchan`` channels the unit imaged or read, ``npix`` pixels
    per plane, ``rows`` visibility rows per channel over its MSs (when counted).
    The unit's wall time is the record's ``elapsed``."""

    stages: dict[str, float] = field(default_factory=dict)
    nchan: int | None = None
    npix: int | None = None
    rows: float | None = None

    def to_info(self) -> dict:
        out: dict[str, Any] = {"stages": {k: round(float(v), 3) for k, v in self.stages.items()}}
        out.update((k, v) for k, v in (("nchan", self.nchan), ("npix", self.npix), ("rows", self.rows))
                   if v is not None)
        return out

    @classmethod
    def of(cls, info: dict | None) -> "UnitCost | None":
        """The cost part of a record's ``info`` (None when absent or not a table)."""
        raw = (info or {}).get(COST_INFO_KEY)
        if not isinstance(raw, dict):
            return None
        stages = raw.get("stages")
        return cls(stages=dict(stages) if isinstance(stages, dict) else {}, nchan=raw.get("nchan"),
                   npix=raw.get("npix"), rows=raw.get("rows"))


COST_INFO_KEY = "cost"


_BY_EVENT = {RunEvent.RUN.value: RunRecord, RunEvent.FREEZE.value: FreezeRecord,
             RunEvent.FINISH.value: FinishRecord, RunEvent.LAUNCHER.value: LauncherRecord,
             RunEvent.LEASE.value: LeaseRecord, RunEvent.REVOKE.value: RevokeRecord}


def end_record(outcome: Any, *, launcher: str | None, final: bool = False) -> dict:
    """The ``done`` / ``failed`` / ``interrupted`` record of a worker's outcome
    (:class:`faust_hpc.launcher.worker.Outcome`): the one place an outcome
    becomes a record, on rank 0 (workers never write the manifest)."""
    failed = str(outcome.status) == UnitEvent.FAILED.value
    return unit_record(
        outcome.unit, str(outcome.status), attempt=outcome.attempt, rank=outcome.rank,
        host=outcome.host or None, pid=outcome.pid or 0, outputs=outcome.outputs, error=outcome.error,
        info=outcome.info, log=outcome.log, elapsed=round(float(outcome.elapsed or 0.0), 3),
        threads=outcome.threads, error_type=outcome.error_type, traceback=outcome.traceback,
        retry=None if not failed or outcome.retry else False, checks=outcome.checks or None,
        no_space=outcome.no_space, diverged=outcome.diverged, launcher=launcher,
        final=True if failed and final else None)


def parse_record(data: dict) -> Any:
    """The typed record of one manifest line, or None for a line of no known kind."""
    event = data.get("event")
    if event in UNIT_EVENTS and data.get("unit") is not None:
        return UnitRecord.from_json(data)
    kind = _BY_EVENT.get(event)  # type: ignore[arg-type]
    return kind.from_json(data) if kind is not None else None


__all__ = ["UnitStatus", "UnitEvent", "RunEvent", "UnitRecord", "RunRecord", "FreezeRecord", "FinishRecord",
           "LauncherRecord", "LeaseRecord", "RevokeRecord", "UnitCost", "COST_INFO_KEY", "unit_record", "end_record",
           "parse_record", "hostname", "now", "UNIT_EVENTS", "RUN_EVENTS",
           "END_EVENTS"]
