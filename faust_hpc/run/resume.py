"""Starting a run again: what the manifest lets us trust, and what to clean.

- A ``done`` unit is trusted when every output its record names still exists.
  One whose outputs are gone is redone if it is a final product (nothing
  depends on it) or a unit still to run needs it; a finalize that deleted its
  chunk images does not make the chunks rerun.
- A unit that started and never finished (its launcher died), or failed, or
  was interrupted, may have left partial products: its working directory and
  any outputs the executor can name for it are deleted before it runs again.
- A prepare unit already done grows the graph to its recorded chunk list, so
  the chunk units keep their ids and their records stay valid.
"""
from __future__ import annotations

import importlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from faust_hpc.layout import RunLayout
from faust_hpc.run.manifest import Manifest, UnitState, derive_states
from faust_hpc.run.records import UnitEvent, UnitStatus, unit_record

log = logging.getLogger(__name__)

_UNFINISHED = (UnitStatus.RUNNING, UnitStatus.FAILED, UnitStatus.INTERRUPTED)


@dataclass
class ResumeState:
    done: set[str] = field(default_factory=set)
    attempts: dict[str, int] = field(default_factory=dict)  # highest attempt number per unit
    stale: list[str] = field(default_factory=list)          # started but never finished
    redo: list[str] = field(default_factory=list)           # done, outputs gone, needed again
    cleaned: list[str] = field(default_factory=list)        # paths deleted


def apply_done_prepares(plan: Any, states: dict[str, UnitState]) -> None:
    """Grow the graph by every done prepare unit's reported chunk count."""
    for uid, unit in list(plan.units.items()):
        st = states.get(uid)
        if unit.kind == "prepare" and st is not None and st.status == UnitStatus.DONE and "nchunks" in st.info:
            plan.expand(uid, int(st.info["nchunks"]))


def _remove(path: Path) -> bool:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
        return True
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
        return True
    return False


def partial_output_finder(executor: str) -> Callable[[Any, Any], list[str]] | None:
    """The executor module's optional ``partial_outputs(spec, unit)``: paths a
    crashed attempt of ``unit`` may have left (written before their rename)."""
    module_name = executor.partition(":")[0]
    try:
        module = importlib.import_module(module_name)
    except Exception:  # noqa: BLE001 - cleanup hints are optional
        return None
    return getattr(module, "partial_outputs", None)


def resume(plan: Any, manifest: Manifest, records: list[dict], spec: Any, product_dir: Path,
           rank_host: str, write: bool = True) -> ResumeState:
    states = derive_states(records)
    apply_done_prepares(plan, states)
    units = plan.units
    layout = RunLayout(product_dir)
    state = ResumeState(attempts={uid: st.attempt for uid, st in states.items()})

    recorded_done = {uid for uid, st in states.items() if st.status == UnitStatus.DONE and uid in units}
    present = {uid for uid in recorded_done if all(os.path.exists(p) for p in states[uid].outputs)}
    missing = recorded_done - present
    done = present | missing
    succ = plan.successors()
    changed = True
    while changed:
        changed = False
        for uid in sorted(missing & done):
            after = succ.get(uid, ())
            # a lost final product (no dependents) is remade; a lost intermediate only when needed again
            if not after or any(s not in done for s in after):
                done.discard(uid)
                state.redo.append(uid)
                changed = True
    state.done = done

    finder = partial_output_finder(getattr(spec.scheduler, "executor", "")) if spec is not None else None
    stale_records = []
    for uid, st in states.items():
        if uid not in units or uid in done or (st.status not in _UNFINISHED and uid not in state.redo):
            continue
        if st.status == UnitStatus.RUNNING:
            state.stale.append(uid)
            stale_records.append(unit_record(uid, UnitEvent.INTERRUPTED, attempt=st.attempt, rank=0,
                                             host=rank_host,
                                             error="its launcher stopped before it finished (found on resume)"))
        paths = [layout.unit_workdir(uid)] + [Path(p) for p in st.outputs]
        if finder is not None:
            try:
                paths += [Path(p) for p in finder(spec, units[uid])]
            except Exception as exc:  # noqa: BLE001
                log.warning("could not list partial outputs of %s: %s", uid, exc)
        for p in paths:
            if _remove(p):
                state.cleaned.append(str(p))
    if stale_records and write:
        manifest.append(*stale_records)
    if state.stale:
        log.info("resume: %d unit(s) had started without finishing; their partial outputs were removed",
                 len(state.stale))
    if state.redo:
        log.info("resume: %d done unit(s) lost their outputs and are needed again: %s",
                 len(state.redo), ", ".join(sorted(state.redo)[:5]))
    return state


__all__ = ["ResumeState", "resume", "apply_done_prepares", "partial_output_finder"]
