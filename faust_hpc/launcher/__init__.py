"""The launcher: ``faust-hpc run`` on one rank, N MPI ranks, or resumed; and
the serial commands (``image``, ``moments``, ``qa``) on the same path.

Rank 0 validates the run file, reads the run's state (snapshot + the records
after it), builds the plan, joins the run as one of any number of launchers
(a ``launcher`` record and a lease, :mod:`faust_hpc.run.leases`), and
coordinates: it claims units under the manifest lock, cleans what a dead
launcher's attempt left before it reruns a unit, and is the only writer of
its records (workers never touch the manifest); every other rank is a worker that runs the units it is
sent, each in a child process. Without mpirun (or with ``-n 1``) the same
coordinator drives local worker slots (:class:`~.transport.LocalTransport`):
same children, logs and records. :func:`run_serial` is that serial mode for a
selection of the plan's units.

Modules: :mod:`.transport` (MPI / local), :mod:`.worker` (one unit's child
process and its records), :mod:`.unit_child` (the child itself),
:mod:`.coordinator` (rank 0's loop around :class:`faust_hpc.scheduler.Scheduler`).
The run's state (records, claim, resume) is :mod:`faust_hpc.run`.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faust_hpc.errors import PrerequisiteError, UserInputError
from faust_hpc.inputs import check_inputs
from faust_hpc.launcher import transport as tr
from faust_hpc.launcher.coordinator import (EXIT_DRAINED, EXIT_FAILED, EXIT_OK, Coordinator, DrainSignals,
                                            RunSummary, make_scheduler)
from faust_hpc.launcher.worker import WorkerContext, thread_budget
from faust_hpc.run.claim import Claims
from faust_hpc.run.claim import break_lock as break_lock_now
from faust_hpc.run.frozen import planned_nchunks, spec_hash
from faust_hpc.run.leases import DEFAULT_LEASE_S, new_launcher, slurm_identity
from faust_hpc.run.manifest import Manifest
from faust_hpc.run.records import FinishRecord, FreezeRecord, RunRecord, UnitStatus
from faust_hpc.run.resume import make_cleaner, resume
from faust_hpc.run.snapshot import RunState, SnapshotPolicy, build_state_plan, load_state
from faust_hpc.run.select import Restricted, Selection, restrict
from faust_hpc.runfile import load_runfile

log = logging.getLogger("faust_hpc.launcher")

__all__ = ["launch", "run_serial", "SerialRun", "EXIT_OK", "EXIT_FAILED", "EXIT_DRAINED", "RunSummary"]


def check_executor(path: str) -> None:
    """Fail before any work if the executor's module cannot be found."""
    module = path.partition(":")[0]
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # the children get the same via PYTHONPATH
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise UserInputError(f"[scheduler] executor = {path!r}: module {module!r} cannot be imported "
                             f"(expected 'package.module:function', e.g. 'faust_hpc.execute:run_unit')")


def _make_context_factory(spec: Any) -> Any:
    def make(rank: int, ranks_on_node: int) -> WorkerContext:
        s = spec.scheduler
        return WorkerContext(spec, spec.path, rank, thread_budget(s.threads_per_unit, ranks_on_node),
                             s.executor, s.unit_timeout_s)
    return make


@dataclass
class RunStart:
    """What rank 0 knows before it joins the run."""

    spec: Any
    manifest: Manifest
    state: RunState
    plan: Any
    digest: str
    command: str


def _open_run(spec: Any, break_lock: bool, allow_changed_spec: bool, command: str,
              check_data: bool = True) -> RunStart:
    """Read the run's state and what it froze; refuse a changed spec (before
    anything is written). ``check_data``: the units to run read the
    measurement sets (moments and QA of finished cubes do not, and run where
    the data are gone)."""
    check_executor(spec.scheduler.executor)
    if check_data:
        check_inputs(spec)  # bad measurement sets: one line, exit 2, before anything is written
    manifest = Manifest(spec.product_dir)
    state = load_state(manifest)
    digest = spec_hash(spec)
    if state.spec_hash is not None and state.spec_hash != digest and not allow_changed_spec:
        raise UserInputError(
            f"{spec.path.name}: the imaging settings changed since this run started in {spec.product_dir} "
            f"(its products would mix both); use a new product_dir, or pass --allow-changed-spec "
            f"after `faust-hpc rerun` has invalidated what must be redone")
    if break_lock:
        break_lock_now(manifest, state)   # refused (exit 2, nothing written) beside a live launcher here
    plan = build_state_plan(spec, manifest, state)
    return RunStart(spec, manifest, state, plan, digest, command)


def launch(runfile: str | os.PathLike, *, break_lock: bool = False, allow_changed_spec: bool = False,
           drain_grace_s: float = 60.0, term_grace_s: float = 10.0, progress_interval_s: float = 5.0,
           local_slots: int = 1) -> int:
    """Run (or resume, or join) a run file; the exit status of ``faust-hpc run``."""
    comm = tr.mpi_comm() if tr.in_mpi_job() else None
    rank = comm.Get_rank() if comm is not None else 0
    if rank != 0:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        err = comm.bcast(None, root=0)
        if err is not None:
            return 2
        spec = load_runfile(runfile, check_paths=False)
        return tr.mpi_worker_main(comm, _make_context_factory(spec))

    signals = DrainSignals().__enter__()  # a drain signal during start-up must not kill rank 0
    try:
        start = _open_run(load_runfile(runfile, check_paths=True), break_lock, allow_changed_spec,
                          "faust-hpc run")
    except BaseException as exc:
        signals.__exit__()
        if comm is not None:
            comm.bcast(str(exc) or type(exc).__name__, root=0)
        raise
    if comm is not None:
        comm.bcast(None, root=0)
    try:
        transport = (tr.MpiTransport(comm) if comm is not None
                     else tr.LocalTransport(_make_context_factory(start.spec), local_slots))
        summary, _ = _drive(start, transport, comm.Get_size() if comm is not None else 1, signals,
                            drain_grace_s, term_grace_s, progress_interval_s)
        return summary.exit_status
    except BaseException:
        if comm is not None:
            log.exception("launcher failed; aborting the MPI job")
            comm.Abort(1)
        raise
    finally:
        signals.__exit__()


def _join(start: RunStart, ranks: int, workers: int) -> Claims:
    """Write this launcher's ``launcher`` and ``run`` records (and a ``freeze``
    of chunk counts no launcher froze yet) under the lock. If another launcher
    froze other chunk counts meanwhile, the plan is rebuilt with theirs."""
    spec = start.spec
    launcher = new_launcher(float(getattr(spec.scheduler, "lease_s", DEFAULT_LEASE_S)), ranks=ranks,
                            workers=workers, command=start.command)
    planned = planned_nchunks(start.plan)
    conflict: list[bool] = []

    def records(state: RunState) -> list[Any]:
        conflict.append(any(state.frozen.get(k, n) != n for k, n in planned.items()))
        new_freeze = {k: n for k, n in planned.items() if k not in state.frozen}
        return [RunRecord(spec_hash=start.digest, runfile=str(spec.path), workers=workers, ranks=ranks,
                          command=start.command, launcher=launcher.id),
                *([FreezeRecord(nchunks=new_freeze)] if new_freeze else [])]

    claims = Claims.join(start.manifest, start.state, launcher, records)
    if conflict and conflict[0]:
        log.info("another launcher froze the chunk counts first: planning with theirs")
        start.plan = build_state_plan(spec, start.manifest, start.state)
    return claims


def _drive(start: RunStart, transport: Any, ranks: int, signals: DrainSignals, drain_grace_s: float,
           term_grace_s: float, progress_interval_s: float,
           selection: Selection | None = None) -> tuple[RunSummary, Restricted | None]:
    """Join, resume, run the coordinator (over the selected units, if a
    selection is given), record the finish."""
    spec, manifest = start.spec, start.manifest
    try:
        claims = _join(start, ranks, len(transport.workers))
        plan = start.plan
        state = resume(plan, start.state, spec, Path(spec.product_dir), me=claims.me)
        run_plan, done, restricted = plan, state.done, None
        if selection is not None:
            restricted = restrict(plan, selection, state.done, spec)
            run_plan = restricted.plan
            done = set() if selection.redo else state.done
        sched = make_scheduler(run_plan, transport.workers, done=done,
                               node_memory_gb=float(spec.scheduler.node_memory_gb or 0))
        for uid in state.claimed:
            sched.claim_elsewhere(uid)
        log.info("%s %s: %d units, %d already done, %d running elsewhere, %d worker(s); launcher %s",
                 start.command, spec.name, len(run_plan.units), len(sched.done), len(state.claimed),
                 len(transport.workers), claims.me)
        coordinator = Coordinator(sched, transport, manifest, product_dir=Path(spec.product_dir),
                                  retries=spec.scheduler.retries, attempts=state.attempts,
                                  drain_grace_s=drain_grace_s, term_grace_s=term_grace_s,
                                  progress_interval_s=progress_interval_s, signals=signals, claims=claims,
                                  dirty=state.dirty, clean=make_cleaner(plan, start.state, spec,
                                                                        Path(spec.product_dir)),
                                  snapshots=SnapshotPolicy())
        summary = coordinator.run()
    finally:
        transport.shutdown()
    coordinator.finish(FinishRecord(
        done=summary.done, total=summary.total, failed=sorted(summary.failed),
        drained=summary.drained or bool(summary.no_space), exit_status=summary.exit_status,
        loop_wall_s=round(summary.elapsed, 3), loop_cpu_s=round(summary.loop_cpu_s, 3), launcher=claims.me,
        slurm_job=slurm_identity()["slurm_job"], extra={"no_space": summary.no_space} if summary.no_space else {}))
    for line in summary.lines():
        (log.error if line.startswith(("FAILED", "DIVERGED")) else log.info)(line)
    return summary, restricted


@dataclass
class SerialRun:
    """What a serial command ran: the summary, the units it covered, and
    those it could not run because a dependency is not done."""

    summary: RunSummary
    manifest: Manifest
    units: list[str] = field(default_factory=list)
    unready: list[Any] = field(default_factory=list)


def run_serial(spec: Any, selection: Selection, *, command: str, break_lock: bool = False,
               allow_changed_spec: bool = False, progress_interval_s: float = 10.0) -> SerialRun:
    """Run the selected units of a run in one local worker slot (no MPI),
    as one more launcher of the run (manifest, resume, leases of ``faust-hpc run``).

    Raises :class:`PrerequisiteError` (exit 2) before anything is written
    when no selected unit can run because its dependencies are not done."""
    _check_ready(spec, selection)
    signals = DrainSignals().__enter__()
    try:
        start = _open_run(spec, break_lock, allow_changed_spec, command, check_data=selection.reads_data)
        transport = tr.LocalTransport(_make_context_factory(spec), 1)
        summary, restricted = _drive(start, transport, 1, signals, 60.0, 10.0, progress_interval_s, selection)
    finally:
        signals.__exit__()
    assert restricted is not None
    return SerialRun(summary, start.manifest, sorted(restricted.plan.units), restricted.unready)


def _check_ready(spec: Any, selection: Selection) -> None:
    """Read-only: refuse (one line, exit 2) when no selected unit can run
    (recorded done units, or input cubes on disk, count as done)."""
    manifest = Manifest(spec.product_dir)
    state = load_state(manifest)
    plan = build_state_plan(spec, manifest, state)
    done = {uid for uid, st in state.units.items() if st.status == UnitStatus.DONE}
    restricted = restrict(plan, selection, done, spec)
    if restricted.unready and not restricted.plan.units:
        first = restricted.unready[0]
        needs = [d for d in first.deps if d not in done]
        more = f" (and {len(restricted.unready) - 1} more)" if len(restricted.unready) > 1 else ""
        raise PrerequisiteError(f"{first.id}{more} cannot run yet: {', '.join(needs) or 'its input'} is not done; "
                                f"run `faust-hpc run {spec.path}` first")
