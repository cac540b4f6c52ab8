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
from typing import Any, Iterable

from faust_hpc.run.leases import LauncherState, fold_launcher
from faust_hpc.run.manifest import Manifest, UnitState, fold_unit
from faust_hpc.run.records import RunEvent, UnitStatus

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 1
DIGEST_BYTES = 256                 # bytes before the offset whose digest identifies the manifest
SNAPSHOT_EVERY_RECORDS = 20_000    # rank 0 rewrites the snapshot after this many new records ...
SNAPSHOT_EVERY_S = 300.0           # ... or this long, whichever comes first (and at finish)

_RUN, _FREEZE, _FINISH = RunEvent.RUN.value, RunEvent.FREEZE.value, RunEvent.FINISH.value
_UNIT_DEFAULTS = {k: v for k, v in UnitState("").__dict__.items() if k != "unit"}
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

    # ---- (de)serialisation
    def to_json(self, digest: str) -> dict:
        units = {}
        for uid, st in self.units.items():
            units[uid] = {k: (str(v) if k == "status" else v) for k, v in st.__dict__.items()
                          if k != "unit" and v != _UNIT_DEFAULTS.get(k, _MISSING)}
        return {"version": SNAPSHOT_VERSION, "offset": self.offset, "digest": digest,
                "records_folded": self.records_folded, "frozen": self.frozen, "spec_hash": self.spec_hash,
                "last_run": self.last_run, "finishes": self.finishes,
                "launchers": {lid: ls.to_json() for lid, ls in self.launchers.items()}, "units": units}

    @classmethod
    def from_json(cls, data: dict) -> "RunState":
        units = {}
        for uid, d in data["units"].items():
            st = UnitState(uid, **{k: v for k, v in d.items() if k != "status"})
            st.status = UnitStatus(d.get("status", UnitStatus.PENDING))
            st.outputs = list(st.outputs)
            units[uid] = st
        return cls(units=units, launchers={lid: LauncherState.from_json(d) for lid, d in data["launchers"].items()},
                   frozen={k: int(v) for k, v in data["frozen"].items()}, spec_hash=data.get("spec_hash"),
                   last_run=data.get("last_run"), finishes=list(data.get("finishes") or []),
                   offset=int(data["offset"]), records_folded=int(data.get("records_folded") or 0))


_MISSING = object()


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


def read_snapshot(manifest: Manifest) -> RunState | None:
    """The snapshot, if there is one that matches this manifest."""
    path = manifest.layout.snapshot_path
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    try:
        if int(data.get("version", 0)) != SNAPSHOT_VERSION:
            return None
        offset = int(data["offset"])
        if offset > manifest.size() or data.get("digest") != manifest_digest(manifest, offset):
            log.info("%s does not match %s (replaced or truncated): reading every record", path, manifest.path)
            return None
        return RunState.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring unreadable snapshot %s: %s", path, exc)
        return None


def load_state(manifest: Manifest, use_snapshot: bool = True) -> RunState:
    """The run's state: the snapshot plus the records after it (or every record)."""
    state = (read_snapshot(manifest) if use_snapshot else None) or RunState()
    records, end = manifest.read_from(state.offset)
    state.fold(records)
    state.offset = end
    return state


def write_snapshot(manifest: Manifest, state: RunState) -> bool:
    """Write ``state`` as the snapshot if it covers more than the one on disk."""
    path = manifest.layout.snapshot_path
    if state.offset <= _snapshot_offset(path):
        return False
    body = json.dumps(state.to_json(manifest_digest(manifest, state.offset)), separators=(",", ":"), default=str)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(body)
        os.replace(tmp, path)
    except OSError as exc:  # a snapshot is an optimisation: never fail a run for it
        log.warning("could not write the snapshot %s: %s", path, exc)
        tmp.unlink(missing_ok=True)
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
