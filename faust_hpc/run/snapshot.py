"""The run's state folded from its records, and a snapshot of it on disk.

Why a snapshot: the manifest only grows (a whole-program run reaches ~10^5-10^6
lines), and ``status``, every launcher start and every resume used to parse
and fold all of it. :class:`RunState` is that fold (units, launchers, frozen
chunk counts, the first spec digest, the latest run and finish records) kept
*incrementally*: fold more records into it at any time. ``state/snapshot.json``
is a RunState written by rank 0 together with the manifest byte offset it
covers and a digest of the bytes just before that offset; a reader loads it
and parses only the records after the offset. A manifest that was replaced
or truncated (the digest or size does not match) is read in full, so a stale
snapshot can never hide records. Written atomically (tmp + rename), and only
when it covers more of the manifest than the one on disk.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from faust_hpc.run.leases import LauncherState, fold_launcher
from faust_hpc.run.manifest import Manifest, UnitState, fold_unit
from faust_hpc.run.records import RunEvent, UnitStatus

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 2
DIGEST_BYTES = 256                 # bytes before the offset whose digest identifies the manifest
SNAPSHOT_EVERY_RECORDS = 100_000   # rank 0 rewrites the snapshot after this many new records ...
SNAPSHOT_EVERY_S = 900.0           # ... or this long, whichever comes first (and at finish): a few s each

_RUN, _FREEZE, _FINISH = RunEvent.RUN.value, RunEvent.FREEZE.value, RunEvent.FINISH.value
_STATUS_CODES = tuple(s.value for s in UnitStatus)
_STATUS_CODE = {s: i for i, s in enumerate(UnitStatus)}
_SPARSE = ("error", "error_type", "traceback", "diverged", "final")   # set for few units
_OFFSET_RE = re.compile(rb'^\{"version":\s*\d+,\s*"offset":\s*(\d+)')


@dataclass
class RunState:
    """Everything status, resume and the claim step need from the records."""

    units: dict[str, UnitState] = field(default_factory=dict)
    launchers: dict[str, LauncherState] = field(default_factory=dict)
    frozen: dict[str, int] = field(default_factory=dict)   # image key path -> chunk count (first freeze wins)
    spec_hash: str | None = None                           # the first run's
    last_run: dict | None = None                           # the latest ``run`` record, as stored
    finishes: list[dict] = field(default_factory=list)     # every ``finish`` record, as stored
    offset: int = 0                                        # manifest bytes folded in
    records_folded: int = 0
    partial: bool = False   # loaded without the snapshot's outputs part: units lack outputs/checks/info

    def fold(self, records: Iterable[dict]) -> set[str]:
        """Fold records in order; the unit ids they touched."""
        touched: set[str] = set()
        units, launchers = self.units, self.launchers
        n = 0
        for raw in records:
            n += 1
            uid = fold_unit(units, raw)
            if uid is not None:
                touched.add(uid)
                continue
            event = raw.get("event")
            if event == _RUN:
                self.last_run = raw
                if self.spec_hash is None and raw.get("spec_hash"):
                    self.spec_hash = raw["spec_hash"]
            elif event == _FREEZE:
                for key, nch in (raw.get("nchunks") or {}).items():
                    self.frozen.setdefault(key, int(nch))
            else:
                fold_launcher(launchers, raw)
                if event == _FINISH:
                    self.finishes.append(raw)
        self.records_folded += n
        return touched

    # ---- questions
    def alive(self, launcher: str | None, at: float | None = None) -> bool:
        st = self.launchers.get(launcher) if launcher else None
        return st is not None and st.alive(at)

    def claimed_elsewhere(self, uid: str, me: str | None, at: float | None = None) -> bool:
        """Is ``uid`` running under another launcher that is alive?"""
        st = self.units.get(uid)
        return (st is not None and st.status == UnitStatus.RUNNING and st.launcher != me
                and self.alive(st.launcher, at))

    def live_launchers(self, at: float | None = None) -> list[LauncherState]:
        return [ls for ls in self.launchers.values() if ls.alive(at)]

    def last_finish(self) -> dict | None:
        return self.finishes[-1] if self.finishes else None

    # ---- (de)serialisation: columns for what every unit has, a sparse table for the rest,
    # and outputs / checks / info (the bulk, needed by resume only) in a file of their own
    def to_json(self, digest: str) -> tuple[dict, dict]:
        """(the snapshot, its outputs part)."""
        ids = list(self.units)
        sts = [self.units[u] for u in ids]
        lids = sorted({st.launcher for st in sts if st.launcher}) if sts else []
        lidx = {lid: i for i, lid in enumerate(lids)}
        hosts = sorted({st.host or "" for st in sts})
        hidx = {h: i for i, h in enumerate(hosts)}
        cols = {"id": ids, "status": [_STATUS_CODE[st.status] for st in sts],
                "attempt": [st.attempt for st in sts], "failures": [st.failures for st in sts],
                "launcher": [lidx.get(st.launcher, -1) for st in sts], "launcher_ids": lids,
                "rank": [st.rank for st in sts], "host": [hidx[st.host or ""] for st in sts], "hosts": hosts,
                "pid": [st.pid for st in sts], "started": [st.started for st in sts],
                "finished": [st.finished for st in sts]}
        sparse = {}
        heavy = {}
        for st in sts:
            extra = {k: getattr(st, k) for k in _SPARSE if getattr(st, k)}
            if st.status != UnitStatus.DONE and st.log:
                extra["log"] = st.log
            if st.info and "nchunks" in st.info:
                extra["info"] = st.info   # prepare units: the plan grows by them (status, rerun)
            if extra:
                sparse[st.unit] = extra
            if st.outputs or st.checks or st.info or st.log:
                heavy[st.unit] = [st.outputs, st.checks, st.info, st.log]
        head = {"version": SNAPSHOT_VERSION, "offset": self.offset, "digest": digest,
                "records_folded": self.records_folded, "frozen": self.frozen, "spec_hash": self.spec_hash,
                "last_run": self.last_run, "finishes": self.finishes,
                "launchers": {lid: ls.to_json() for lid, ls in self.launchers.items()},
                "units": cols, "sparse": sparse}
        return head, {"offset": self.offset, "digest": digest, "units": heavy}

    @classmethod
    def from_json(cls, data: dict, heavy: dict | None = None) -> "RunState":
        """The state of a snapshot; without its outputs part (``heavy``) the
        units carry no outputs / checks / info (but prepare units' info) and
        the state is ``partial`` (never written back)."""
        cols = data["units"]
        statuses = [UnitStatus(v) for v in _STATUS_CODES]
        lids, hosts = cols["launcher_ids"], cols["hosts"]
        units: dict[str, UnitState] = {}
        for uid, code, att, fails, li, rank, hi, pid, t0, t1 in zip(
                cols["id"], cols["status"], cols["attempt"], cols["failures"], cols["launcher"], cols["rank"],
                cols["host"], cols["pid"], cols["started"], cols["finished"]):
            units[uid] = UnitState(uid, statuses[code], att, fails, rank=rank, host=hosts[hi], pid=pid,
                                   started=t0, finished=t1, launcher=lids[li] if li >= 0 else None)
        for uid, extra in data["sparse"].items():
            st = units[uid]
            for k, v in extra.items():
                setattr(st, k, v)
        if heavy is not None:
            for uid, (outputs, checks, info, log_path) in heavy["units"].items():
                st = units[uid]
                st.outputs, st.checks, st.info, st.log = outputs, checks, info, log_path
        return cls(units=units, launchers={lid: LauncherState.from_json(d) for lid, d in data["launchers"].items()},
                   frozen={k: int(v) for k, v in data["frozen"].items()}, spec_hash=data.get("spec_hash"),
                   last_run=data.get("last_run"), finishes=list(data.get("finishes") or []),
                   offset=int(data["offset"]), records_folded=int(data.get("records_folded") or 0),
                   partial=heavy is None)


def manifest_digest(manifest: Manifest, offset: int) -> str:
    """Digest of the manifest's bytes just before ``offset`` (identifies the file it was cut from)."""
    start = max(0, offset - DIGEST_BYTES)
    try:
        with open(manifest.path, "rb") as fh:
            fh.seek(start)
            data = fh.read(offset - start)
    except FileNotFoundError:
        data = b""
    return hashlib.sha256(data + str(offset).encode()).hexdigest()[:32]


def _snapshot_offset(path: os.PathLike) -> int:
    """The offset a snapshot file covers, from its first bytes (0 if none or unreadable)."""
    try:
        with open(path, "rb") as fh:
            m = _OFFSET_RE.match(fh.read(64))
    except OSError:
        return 0
    return int(m.group(1)) if m else 0


def read_snapshot(manifest: Manifest, outputs: bool = True) -> RunState | None:
    """The snapshot, if there is one that matches this manifest (``outputs``:
    with its outputs part, as resume needs; status does without)."""
    path = manifest.layout.snapshot_path
    try:
        data = json.loads(path.read_bytes())
        heavy = json.loads(manifest.layout.snapshot_outputs_path.read_bytes()) if outputs else None
    except (OSError, ValueError):
        return None
    try:
        if int(data.get("version", 0)) != SNAPSHOT_VERSION:
            return None
        offset = int(data["offset"])
        if offset > manifest.size() or data.get("digest") != manifest_digest(manifest, offset):
            log.info("%s does not match %s (replaced or truncated): reading every record", path, manifest.path)
            return None
        if heavy is not None and (heavy.get("offset") != offset or heavy.get("digest") != data["digest"]):
            return None   # a writer died between the two files: read every record
        return RunState.from_json(data, heavy)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        log.warning("ignoring unreadable snapshot %s: %s", path, exc)
        return None


def load_state(manifest: Manifest, use_snapshot: bool = True, outputs: bool = True) -> RunState:
    """The run's state: the snapshot plus the records after it (or every
    record). ``outputs=False`` (status): units from the snapshot carry no
    outputs, checks or info (but prepare units' info)."""
    state = (read_snapshot(manifest, outputs) if use_snapshot else None) or RunState()
    for records, end in manifest.iter_from(state.offset):
        state.fold(records)
        state.offset = end
    return state


def _write_atomic(path: Path, body: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(body)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_snapshot(manifest: Manifest, state: RunState) -> bool:
    """Write ``state`` as the snapshot if it covers more than the one on disk
    (its outputs part first: a reader never pairs a new snapshot with an old part)."""
    layout = manifest.layout
    if state.partial or state.offset <= _snapshot_offset(layout.snapshot_path):
        return False
    head, heavy = state.to_json(manifest_digest(manifest, state.offset))
    try:
        _write_atomic(layout.snapshot_outputs_path, json.dumps(heavy, separators=(",", ":")))
        _write_atomic(layout.snapshot_path, json.dumps(head, separators=(",", ":")))
    except (OSError, TypeError, ValueError) as exc:  # a snapshot is an optimisation: never fail a run for it
        log.warning("could not write the snapshot %s: %s", layout.snapshot_path, exc)
        return False
    return True


def build_state_plan(spec: Any, manifest: Manifest, state: RunState) -> Any:
    """The run's plan with the chunk counts its records froze
    (:func:`faust_hpc.run.frozen.build_run_plan`, fed the folded freeze)."""
    from faust_hpc.run.frozen import build_run_plan
    from faust_hpc.run.records import FreezeRecord

    return build_run_plan(spec, manifest, [FreezeRecord(nchunks=dict(state.frozen)).to_json()])[0]


class SnapshotPolicy:
    """When rank 0 rewrites the snapshot: every N records or T seconds, and at finish."""

    def __init__(self, every_records: int = SNAPSHOT_EVERY_RECORDS, every_s: float = SNAPSHOT_EVERY_S) -> None:
        self.every_records, self.every_s = every_records, every_s
        self._records_at = 0
        self._at = time.monotonic()

    def maybe_write(self, manifest: Manifest, state: RunState, force: bool = False) -> bool:
        if not force and (state.records_folded - self._records_at < self.every_records
                          and time.monotonic() - self._at < self.every_s):
            return False
        self._records_at, self._at = state.records_folded, time.monotonic()
        return write_snapshot(manifest, state)


__all__ = ["RunState", "load_state", "build_state_plan", "read_snapshot", "write_snapshot", "manifest_digest", "SnapshotPolicy"]
