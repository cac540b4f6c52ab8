"""Starting a run again: what the manifest lets us trust, and what to clean.

The rule (one for every unit, final or not):

- A ``done`` unit counts as done only while its outputs are there *and* are
  what its done record says they were: the size of each file and a cheap
  content hash (whole small files; the first and last 64 KiB of big ones),
  the file sizes of each CASA image's table files
  (:mod:`faust_hpc.run.fingerprint`). Records written before these checks
  carry none: their outputs are checked for existence only.
- A done unit whose outputs fail the check is redone, and so is everything
  that depends on it, transitively (their products were made from what is now
  gone, and a remade input may differ).
- The one exception is an image's intermediates (:data:`CONSUMED_KINDS`: the
  chunk images, the recorded common beam, the postprocessed chunk images,
  and what the concat units wrote -- the final cubes and FITS, which are the
  finalize unit's outputs too and so are checked once, as its: a lost one
  redoes finalize, and first the concat units that made it):
  once the image's final cube exists the chunk images may go (a user clearing
  disk, the original's ``remove_all_files``) without making the finished image redo.
  Their outputs are therefore checked only while a unit that reads them still
  has to run -- a reader being any dependent, followed through the
  intermediates to the image's finalize (a chunk's images are read by the
  beam, the post units and, concatenated, by the concat units): lost or damaged then,
  the unit is redone first; once all its readers are done, it is done
  whatever is left of its outputs. So a finished run never reruns chunks for
  images it no longer needs, and a lost final cube (finalize) is remade
  together with its moments and QA -- with the chunks whose images are gone.
- A unit that started and never finished (its launcher died: see
  :mod:`faust_hpc.run.leases`), or failed, or was interrupted, may have left
  partial products: its working directory and any outputs the executor can
  name for it are deleted before it runs again -- by the launcher that claims
  it, right after the claim (:func:`make_cleaner`), never at start: another
  launcher may claim it first, and must not find its working directory
  deleted under it.
- A unit running under another launcher that is alive is left alone
  (``claimed``): that launcher finishes it, or dies and loses it.
- A prepare unit already done grows the graph to its recorded chunk list, so
  the chunk units keep their ids and their records stay valid.
"""
from __future__ import annotations

import importlib
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from faust_hpc.layout import RunLayout
from faust_hpc.units import REPORTING_KINDS
from faust_hpc.run.fingerprint import mismatch
from faust_hpc.run.manifest import UnitState
from faust_hpc.run.records import UnitStatus

log = logging.getLogger(__name__)

_UNFINISHED = (UnitStatus.RUNNING, UnitStatus.FAILED, UnitStatus.INTERRUPTED)
CHECK_THREADS = 8             # outputs checked concurrently on resume
CONSUMED_KINDS = ("chunk", "beam", "post", "concat")   # an image's intermediates (see the rule above)


@dataclass
class ResumeState:
    done: set[str] = field(default_factory=set)
    attempts: dict[str, int] = field(default_factory=dict)  # highest attempt number per unit
    stale: list[str] = field(default_factory=list)          # started, never finished, its launcher is dead
    redo: list[str] = field(default_factory=list)           # done, outputs gone or changed: run again
    why: dict[str, str] = field(default_factory=dict)       # unit -> what was wrong with its outputs
    dirty: set[str] = field(default_factory=set)            # clean before running (stale, failed, interrupted, redo)
    claimed: set[str] = field(default_factory=set)          # running under another launcher that is alive


def apply_done_prepares(plan: Any, states: dict[str, UnitState]) -> None:
    """Grow the graph by every done prepare unit's reported chunk count: linear in
    the plan (each image re-shaped on its own, only where the count differs)."""
    prepares = [u for u in plan.units.values() if u.kind == "prepare"]
    for unit in prepares:
        st = states.get(unit.id)
        if st is not None and st.status == UnitStatus.DONE and "nchunks" in st.info \
                and int(st.info["nchunks"]) != plan.nchunks(unit.key):
            plan.expand(unit.id, int(st.info["nchunks"]))


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


def resume(plan: Any, run_state: Any, spec: Any, product_dir: Path, me: str | None = None) -> ResumeState:
    """What a launcher joining the run may trust (``run_state``: the folded
    records, :class:`faust_hpc.run.snapshot.RunState`). Writes nothing and
    deletes nothing (see the module doc)."""
    states = run_state.units
    apply_done_prepares(plan, states)
    units = plan.units
    state = ResumeState(attempts={uid: st.attempt for uid, st in states.items()})

    recorded_done = {uid for uid, st in states.items() if st.status == UnitStatus.DONE and uid in units}
    done = set(recorded_done)
    succ = plan.successors()
    checked: dict[str, str | None] = {}

    def damage(uid: str) -> str | None:
        if uid not in checked:
            st = states[uid]
            checked[uid] = next((f"{p}: {why}" for p in st.outputs
                                 if (why := mismatch(p, st.checks.get(p))) is not None), None)
        return checked[uid]

    def redo(uid: str, why: str) -> None:
        """``uid`` and everything downstream of it are not done."""
        todo, seen = [uid], set()
        while todo:
            u = todo.pop()
            if u in seen:
                continue
            seen.add(u)
            if u in done:
                done.discard(u)
                state.redo.append(u)
                state.why[u] = why if u == uid else f"depends on {uid}, which is redone"
            todo.extend(succ.get(u, ()))

    products = sorted(uid for uid in recorded_done if units[uid].kind not in CONSUMED_KINDS)
    with ThreadPoolExecutor(max_workers=CHECK_THREADS) as pool:  # stat/read latency overlaps (network filesystems)
        for uid, why in zip(products, pool.map(damage, products)):
            checked[uid] = why
    for uid in products:
        if uid in done and (why := damage(uid)) is not None:
            redo(uid, why)
    changed = True
    while changed:  # consumed outputs matter only while a unit that reads them still has to run
        changed = False
        needed: dict[str, bool] = {}

        def read_later(uid: str) -> bool:
            """Does a reader of ``uid``'s outputs still have to run? (memoised:
            the chunks of one image share their beam's answer, links stay linear)"""
            if uid not in needed:
                needed[uid] = any(s not in done or (units[s].kind in CONSUMED_KINDS and read_later(s))
                                  for s in succ.get(uid, ()))
            return needed[uid]

        for uid in sorted(recorded_done & done):
            if uid in done and units[uid].kind in CONSUMED_KINDS and read_later(uid) \
                    and (why := damage(uid)) is not None:
                redo(uid, why)
                changed = True
                needed.clear()
    state.done = done

    for uid, st in states.items():
        if uid not in units or uid in done or (st.status not in _UNFINISHED and uid not in state.redo):
            continue
        if st.status == UnitStatus.RUNNING:
            if st.launcher != me and run_state.alive(st.launcher):
                state.claimed.add(uid)
                continue
            state.stale.append(uid)
        state.dirty.add(uid)
    if state.stale:
        log.info("resume: %d unit(s) had started without finishing (their launcher is gone); their partial "
                 "outputs are removed before they run again", len(state.stale))
    if state.claimed:
        log.info("resume: %d unit(s) are running under other launchers", len(state.claimed))
    if state.redo:
        for uid in sorted(state.redo)[:10]:
            log.warning("resume: redoing %s: %s", uid, state.why[uid])
        log.info("resume: %d done unit(s) are redone because outputs are missing or changed",
                 len(state.redo))
    return state


def make_cleaner(plan: Any, run_state: Any, spec: Any, product_dir: Path) -> Callable[[str], list[str]]:
    """``clean(uid)``: delete what an earlier attempt of ``uid`` may have left
    (its working directory, the outputs its last record names, the executor's
    partial outputs); returns the paths deleted. Called by the launcher that
    has just claimed the unit."""
    layout = RunLayout(product_dir)
    finder = partial_output_finder(getattr(spec.scheduler, "executor", "")) if spec is not None else None

    def clean(uid: str) -> list[str]:
        st = run_state.units.get(uid)
        unit = plan.units.get(uid)
        own = st is not None and unit is not None and unit.kind not in REPORTING_KINDS   # finalize's are the concats'
        paths = [layout.unit_workdir(uid)] + [Path(p) for p in (st.outputs if own else [])]
        if finder is not None and unit is not None:
            try:
                paths += [Path(p) for p in finder(spec, unit)]
            except Exception as exc:  # noqa: BLE001
                log.warning("could not list partial outputs of %s: %s", uid, exc)
        return [str(p) for p in paths if _remove(p)]
    return clean


__all__ = ["CONSUMED_KINDS", "ResumeState", "resume", "make_cleaner", "apply_done_prepares", "partial_output_finder"]
