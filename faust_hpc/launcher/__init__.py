"""The launcher: ``faust-hpc run`` on one rank, N MPI ranks, or resumed.

Rank 0 validates the run file, claims the run (one launcher per product
directory), reads the manifest, builds the plan, cleans what a crashed run
left, and coordinates; every other rank is a worker that runs the units it is
sent, each in a child process. Without mpirun (or with ``-n 1``) the same
coordinator drives one local worker slot: same children, logs and records.

Modules: :mod:`.transport` (MPI / local), :mod:`.worker` (one unit's child
process), :mod:`.unit_child` (the child itself), :mod:`.policy` (graph
bookkeeping around the scheduler), :mod:`.coordinator` (rank 0's loop),
:mod:`.resume` (what a manifest lets a new run trust).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import signal
import sys
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Mapping

from faust_hpc.errors import UserInputError
from faust_hpc.inputs import check_inputs
from faust_hpc.launcher.coordinator import EXIT_DRAINED, EXIT_FAILED, EXIT_OK, Coordinator, DrainSignals, RunSummary
from faust_hpc.manifest import Manifest, RunClaim, hostname, now

log = logging.getLogger("faust_hpc.launcher")

__all__ = ["launch", "spec_hash", "EXIT_OK", "EXIT_FAILED", "EXIT_DRAINED", "RunSummary"]

# Settings that change what the products are; [scheduler] only changes how they are made.
# data_dir: where the MSs are read from, not what they hold -- a batch job may read a staged
# copy (FAUST_DATA_DIR=/dev/shm/..., see faust_hpc.batch) and must still resume the run.
_NOT_HASHED = ("path", "name", "scheduler", "product_dir", "casa_data_dir", "data_dir")


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def spec_hash(spec: Any) -> str:
    """A digest of everything in the run spec that shapes the products."""
    plain = {k: v for k, v in _plain(spec).items() if k not in _NOT_HASHED}
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


def planned_nchunks(plan: Any) -> dict[str, int]:
    """Chunk count per image key path as the plan has it now."""
    return {unit.key.path: plan.nchunks(unit.key) for unit in plan.units.values() if unit.kind == "prepare"}


def build_run_plan(spec: Any, manifest: Manifest, records: list[dict]) -> tuple[Any, dict[str, int]]:
    """The plan, with the chunk counts frozen by this run's first launcher
    (so a resume, or a run on another number of ranks, cuts the same chunks)."""
    from faust_hpc.plan import build_plan

    frozen = manifest.frozen_nchunks(records)
    return build_plan(spec, frozen_nchunks=frozen), frozen


def _make_context_factory(spec: Any) -> Any:
    from faust_hpc.launcher.worker import WorkerContext, thread_budget

    def make(rank: int, ranks_on_node: int) -> WorkerContext:
        s = spec.scheduler
        return WorkerContext(spec, spec.path, rank, thread_budget(s.threads_per_unit, ranks_on_node),
                             s.executor, s.unit_timeout_s)
    return make


def _prepare_rank0(runfile: str | os.PathLike, break_lock: bool, allow_changed_spec: bool) -> tuple[Any, ...]:
    from faust_hpc.runfile import load_runfile

    spec = load_runfile(runfile, check_paths=True)
    check_executor(spec.scheduler.executor)
    check_inputs(spec)  # bad measurement sets: one line, exit 2, before the claim writes anything
    manifest = Manifest(spec.product_dir)
    claim = RunClaim(spec.product_dir).acquire(break_lock=break_lock)
    try:
        records = manifest.records()
        digest = spec_hash(spec)
        first = manifest.first_spec_hash(records)
        if first is not None and first != digest and not allow_changed_spec:
            raise UserInputError(
                f"{spec.path.name}: the imaging settings changed since this run started in {spec.product_dir} "
                f"(its products would mix both); use a new product_dir, or pass --allow-changed-spec "
                f"after `faust-hpc rerun` has invalidated what must be redone")
        plan, frozen = build_run_plan(spec, manifest, records)
    except BaseException:
        claim.release()
        raise
    return spec, manifest, claim, records, plan, frozen, digest


def launch(runfile: str | os.PathLike, *, break_lock: bool = False, allow_changed_spec: bool = False,
           drain_grace_s: float = 60.0, term_grace_s: float = 10.0, progress_interval_s: float = 5.0,
           local_slots: int = 1) -> int:
    """Run (or resume) a run file; the exit status of ``faust-hpc run``."""
    from faust_hpc.launcher import transport as tr

    comm = tr.mpi_comm() if tr.in_mpi_job() else None
    rank = comm.Get_rank() if comm is not None else 0
    if rank != 0:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        err = comm.bcast(None, root=0)
        if err is not None:
            return 2
        from faust_hpc.runfile import load_runfile

        spec = load_runfile(runfile, check_paths=False)
        return tr.mpi_worker_main(comm, _make_context_factory(spec))

    signals = DrainSignals().__enter__()  # a drain signal during start-up must not kill rank 0
    try:
        spec, manifest, claim, records, plan, frozen, digest = _prepare_rank0(runfile, break_lock, allow_changed_spec)
    except BaseException as exc:
        signals.__exit__()
        if comm is not None:
            comm.bcast(str(exc) or type(exc).__name__, root=0)
        raise
    if comm is not None:
        comm.bcast(None, root=0)
    try:
        return _run_rank0(spec, manifest, records, plan, frozen, digest, comm, drain_grace_s, term_grace_s,
                          progress_interval_s, local_slots, signals)
    except BaseException:
        if comm is not None:
            log.exception("launcher failed; aborting the MPI job")
            comm.Abort(1)
        raise
    finally:
        signals.__exit__()
        claim.release()


def _run_rank0(spec: Any, manifest: Manifest, records: list[dict], plan: Any, frozen: dict[str, int],
               digest: str, comm: Any, drain_grace_s: float, term_grace_s: float,
               progress_interval_s: float, local_slots: int, signals: DrainSignals) -> int:
    from faust_hpc.launcher import transport as tr
    from faust_hpc.launcher.policy import GraphState
    from faust_hpc.launcher.resume import resume

    make_context = _make_context_factory(spec)
    transport = tr.MpiTransport(comm) if comm is not None else tr.LocalTransport(make_context, local_slots)
    try:
        state = resume(plan, manifest, records, spec, Path(spec.product_dir), hostname())
        header = {"event": "run", "time": now(), "host": hostname(), "pid": os.getpid(),
                  "spec_hash": digest, "runfile": str(spec.path), "workers": len(transport.workers),
                  "ranks": (comm.Get_size() if comm is not None else 1)}
        new_freeze = {k: n for k, n in planned_nchunks(plan).items() if k not in frozen}
        manifest.append(header, *([{"event": "freeze", "time": now(), "nchunks": new_freeze}] if new_freeze else []))
        graph = GraphState(plan, transport.workers, done=state.done,
                           node_memory_gb=float(spec.scheduler.node_memory_gb or 0))
        total = len(plan.units)
        log.info("run %s: %d units, %d already done, %d worker(s)", spec.name, total,
                 len(state.done & set(plan.units)), len(transport.workers))
        coordinator = Coordinator(graph, transport, manifest, product_dir=Path(spec.product_dir),
                                  retries=spec.scheduler.retries, attempts=state.attempts,
                                  drain_grace_s=drain_grace_s, term_grace_s=term_grace_s,
                                  progress_interval_s=progress_interval_s, signals=signals)
        summary = coordinator.run()
    finally:
        transport.shutdown()
    manifest.append({"event": "finish", "time": now(), "host": hostname(), "pid": os.getpid(),
                     "done": summary.done, "total": summary.total, "failed": sorted(summary.failed),
                     "drained": summary.drained, "exit_status": summary.exit_status,
                     "loop_wall_s": round(summary.elapsed, 3), "loop_cpu_s": round(summary.loop_cpu_s, 3)})
    for line in summary.lines():
        (log.error if line.startswith("FAILED") else log.info)(line)
    return summary.exit_status
