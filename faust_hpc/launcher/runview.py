"""A read-only view of a run for ``status`` and ``rerun``: spec + plan + manifest.

The plan is rebuilt the way the launcher builds it (frozen chunk counts, grown
by the chunk lists of done prepare units), so unit ids line up with the
manifest's records.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from faust_hpc.launcher.resume import apply_done_prepares
from faust_hpc.manifest import (DONE, FAILED, RUNNING, Manifest, RunClaim, UnitState,
                                derive_states, owner_alive)


@dataclass
class RunView:
    spec: Any
    plan: Any
    manifest: Manifest
    records: list[dict]
    states: dict[str, UnitState]
    owner: dict | None
    live: bool  # a launcher is running this run now (as far as this host can tell)

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

    def status_of(self, uid: str) -> str:
        st = self.states.get(uid)
        if st is None:
            return "pending"
        if st.status == RUNNING and not self.live:
            return "interrupted"
        return st.status


def load_view(runfile: str) -> RunView:
    from faust_hpc.launcher import build_run_plan
    from faust_hpc.runfile import load_runfile

    spec = load_runfile(runfile, check_paths=False)
    manifest = Manifest(spec.product_dir)
    records = manifest.records()
    plan, _frozen = build_run_plan(spec, manifest, records)
    states = derive_states(records)
    apply_done_prepares(plan, states)
    owner = RunClaim(spec.product_dir).read_owner()
    live = bool(owner) and owner_alive(owner)
    return RunView(spec, plan, manifest, records, states, owner, live)


def spw_rows(view: RunView) -> list[dict]:
    """Per image (field x SPW x array x weighting): unit counts, elapsed, ETA."""
    units = view.plan.units
    cost_done = sum(float(units[u].cost) for u, st in view.states.items() if u in units and st.status == DONE)
    time_done = sum((st.finished or 0) - (st.started or 0) for u, st in view.states.items()
                    if u in units and st.status == DONE and st.started and st.finished)
    runs = [r for r in view.records if r.get("event") == "run"]
    workers = max(1, int(runs[-1].get("workers", 1))) if runs else 1
    sec_per_cost = time_done / cost_done if cost_done > 0 else None
    now = time.time()
    rows = []
    by_key: dict[str, list[str]] = {}
    for uid, unit in units.items():
        by_key.setdefault(unit.key.path, []).append(uid)
    for key_path, uids in by_key.items():
        key = units[uids[0]].key
        counts = {"done": 0, "running": 0, "failed": 0, "pending": 0}
        remaining = 0.0
        starts, ends = [], []
        for uid in uids:
            s = view.status_of(uid)
            bucket = {DONE: "done", RUNNING: "running", FAILED: "failed"}.get(s, "pending")
            counts[bucket] += 1
            if bucket != "done":
                remaining += float(units[uid].cost)
            st = view.states.get(uid)
            if st is not None and st.started:
                starts.append(st.started)
                ends.append(now if s == RUNNING else (st.finished or st.started))
        elapsed = (max(ends) - min(starts)) if starts else None
        eta = None
        if remaining == 0:
            eta = 0.0
        elif sec_per_cost is not None and (view.live or counts["done"]):
            eta = remaining * sec_per_cost / workers
        rows.append({"image": key_path, "field": key.field, "spw": key.label, "array": key.array,
                     "weighting": key.weighting, "total": len(uids), **counts,
                     "elapsed_s": None if elapsed is None else round(elapsed, 1),
                     "eta_s": None if eta is None else round(eta, 1)})
    return rows


__all__ = ["RunView", "load_view", "spw_rows"]
