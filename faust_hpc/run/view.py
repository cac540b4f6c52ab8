"""A read-only view of a run for ``status``, ``rerun`` and ``report``: spec + plan + run state.

The run state is the snapshot plus the records after it
(:mod:`faust_hpc.run.snapshot`), so ``status`` of a whole-program run does not
parse every record since the start. The plan is rebuilt the way the launcher
builds it (frozen chunk counts, grown by the chunk lists of done prepare
units), so unit ids line up with the manifest's records. Nothing here writes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from faust_hpc.run.leases import LauncherState
from faust_hpc.run.manifest import Manifest, UnitState
from faust_hpc.run.records import UnitStatus
from faust_hpc.run.resume import apply_done_prepares
from faust_hpc.run.snapshot import RunState, build_state_plan, load_state
from faust_hpc.runfile import load_runfile

# status_of folded into the four columns status shows
_BUCKETS = (UnitStatus.DONE, UnitStatus.RUNNING, UnitStatus.FAILED, UnitStatus.PENDING)


def fmt_duration(seconds: float | None) -> str:
    """``3725`` -> ``1h02m05s``; None -> ``?``."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


MEASURED_FROM = 0.1
"""Share of the remaining cost that must be done before measured times replace
the cost model in an ETA: one cheap unit that happened to finish first (a
prepare, with the process start-up in it) says little about the rest."""


def eta_seconds(remaining_cost: float, cost_done: float, seconds_done: float | None, cost_at_start: float,
                workers: int) -> float:
    """Seconds left: the cost model's estimate (``remaining_cost`` reference
    seconds over ``workers``) until units worth :data:`MEASURED_FROM` of the
    work have finished, then the measured rate (``seconds_done`` of wall time
    for ``cost_done``)."""
    if remaining_cost <= 0:
        return 0.0
    if seconds_done is not None and cost_done > 0 and cost_done >= MEASURED_FROM * cost_at_start:
        return seconds_done * remaining_cost / cost_done
    return remaining_cost / max(1, workers)


def describe_divergence(diverged: dict) -> str:
    """One line for a diverged unit (the ``diverged`` fields of its record):
    which tclean, how many major cycles of how many, and the guard's reason."""
    return (f"tclean {diverged.get('stage', '?')} stopped after {diverged.get('nmajordone', '?')} major cycles "
            f"(cap {diverged.get('cap', '?')}): {diverged.get('reason', '?')}")


@dataclass
class RunView:
    spec: Any
    plan: Any
    manifest: Manifest
    state: RunState
    states: dict[str, UnitState]

    @property
    def launchers(self) -> list[LauncherState]:
        """Every launcher that joined the run, in the order they joined."""
        return sorted(self.state.launchers.values(), key=lambda ls: ls.joined)

    @property
    def live(self) -> bool:
        """Is a launcher running this run now (as far as this host can tell)?"""
        return bool(self.state.live_launchers())

    def launcher_rows(self) -> list[dict]:
        """Per launcher: who and where, alive or not, lease age, its running units."""
        t = time.time()
        running: dict[str, list[str]] = {}
        for uid, st in self.states.items():
            if st.status == UnitStatus.RUNNING and st.launcher:
                running.setdefault(st.launcher, []).append(uid)
        rows = []
        for ls in self.launchers:
            alive = ls.alive(t)
            rows.append({"id": ls.id, "host": ls.host, "pid": ls.pid, "command": ls.command,
                         "slurm_job": ls.slurm_job, "slurm_array_task": ls.slurm_array_task,
                         "workers": ls.workers, "alive": alive,
                         "state": "alive" if alive else ("finished" if ls.finished else
                                                         "revoked" if ls.revoked else "gone"),
                         "lease_age_s": round(t - (ls.until - ls.lease_s), 1), "lease_s": ls.lease_s,
                         "running": sorted(running.get(ls.id, [])) if alive else []})
        return rows

    def dependents(self, unit_ids: set[str]) -> set[str]:
        """``unit_ids`` and everything downstream of them in the plan."""
        out = set(unit_ids)
        changed = True
        while changed:
            changed = False
            for uid, unit in self.plan.units.items():
                if uid not in out and any(d in out for d in unit.deps):
                    out.add(uid)
                    changed = True
        return out

    def status_of(self, uid: str) -> UnitStatus:
        st = self.states.get(uid)
        if st is None:
            return UnitStatus.PENDING
        if st.status == UnitStatus.RUNNING and not self.state.alive(st.launcher):
            return UnitStatus.INTERRUPTED
        return st.status

    def failed_units(self) -> list[dict]:
        """Units of the plan whose latest attempt failed: why, and where to
        look; ``diverged`` flags a runaway clean the guard stopped (its stage,
        reason, cycles and channels), else None."""
        return [{"unit": uid, "attempt": st.attempt, "error": st.error, "error_type": st.error_type,
                 "traceback": st.traceback, "log": st.log, "diverged": st.diverged}
                for uid, st in sorted(self.states.items())
                if uid in self.plan.units and st.status == UnitStatus.FAILED]


def load_view(runfile: str) -> RunView:
    spec = load_runfile(runfile, check_paths=False)
    manifest = Manifest(spec.product_dir)
    state = load_state(manifest, outputs=False)   # status needs no outputs: the snapshot's small part
    plan = build_state_plan(spec, manifest, state)
    apply_done_prepares(plan, state.units)
    return RunView(spec, plan, manifest, state, state.units)


def spw_rows(view: RunView) -> list[dict]:
    """Per image (field x SPW x array x weighting): unit counts, elapsed, ETA."""
    units = view.plan.units
    done_states = [(u, st) for u, st in view.states.items() if u in units and st.status == UnitStatus.DONE]
    cost_done = sum(float(units[u].cost) for u, _st in done_states)
    time_done = sum((st.finished or 0) - (st.started or 0) for _u, st in done_states if st.started and st.finished)
    live = view.state.live_launchers()
    last = view.state.last_run
    workers = max(1, sum(ls.workers for ls in live) if live else int((last or {}).get("workers") or 1))
    total_cost = sum(float(u.cost) for u in units.values())
    now = time.time()
    rows = []
    by_key: dict[str, list[str]] = {}
    for uid, unit in units.items():
        by_key.setdefault(unit.key.path, []).append(uid)
    for key_path, uids in by_key.items():
        key = units[uids[0]].key
        counts = {b.value: 0 for b in _BUCKETS}
        remaining = 0.0
        starts, ends = [], []
        for uid in uids:
            s = view.status_of(uid)
            bucket = s if s in _BUCKETS else UnitStatus.PENDING
            counts[bucket.value] += 1
            if bucket != UnitStatus.DONE:
                remaining += float(units[uid].cost)
            st = view.states.get(uid)
            if st is not None and st.started:
                starts.append(st.started)
                ends.append(now if s == UnitStatus.RUNNING else (st.finished or st.started))
        elapsed = (max(ends) - min(starts)) if starts else None
        eta = None
        if remaining == 0 or view.live or counts["done"]:
            eta = eta_seconds(remaining, cost_done, time_done / workers, total_cost, workers)
        rows.append({"image": key_path, "field": key.field, "spw": key.label, "array": key.array,
                     "weighting": key.weighting, "total": len(uids), **counts,
                     "elapsed_s": None if elapsed is None else round(elapsed, 1),
                     "eta_s": None if eta is None else round(eta, 1)})
    return rows


__all__ = ["RunView", "load_view", "spw_rows", "fmt_duration", "eta_seconds", "MEASURED_FROM",
           "describe_divergence"]
