"""Running one unit on this rank: a child process, its log, its outcome.

A worker (an MPI rank, or the serial launcher's local slot) never runs CASA in
its own process: each unit runs in a child process of its own, forked warm by
the worker's fork server (:mod:`.forkserver`, ``[scheduler] warm_start``, the
default) or started cold as ``python -m faust_hpc.launcher.unit_child``, with

- its own working directory ``work/<unit id with / → __>/`` (CASA scratch),
- its own CASA log ``logs/<unit id with / → __>.attempt<N>.casa.log``, a
  stdout/stderr file next to it (``.out``) and, if it raises, its traceback
  (``.traceback.txt``), whose path the ``failed`` record carries,
- a thread budget in ``OMP_NUM_THREADS`` and the BLAS equivalents, so the
  ranks sharing a node never oversubscribe it,
- an optional timeout.

The worker never writes the manifest (nor takes its lock): rank 0 commits
the unit's ``started`` record before it sends the unit, and turns the
:class:`Outcome` the worker reports into the end record
(:func:`faust_hpc.run.records.end_record`), committed in groups by
:class:`faust_hpc.run.journal.Journal`.
"""
from __future__ import annotations

import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faust_hpc.launcher import space
from faust_hpc.launcher.forkserver import MAX_SERVER_STARTS, ForkServer, ForkServerError
from faust_hpc.layout import RunLayout
from faust_hpc.run.records import UnitStatus, hostname

log = logging.getLogger(__name__)

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
# Environment of the MPI job that must not leak into a unit's child (it is no MPI process).
_MPI_ENV_PREFIXES = ("OMPI_", "PMIX_", "PRTE_", "PMI_", "HYDRA_", "I_MPI_")


def unit_log_path(product_dir: Path, unit_id: str, attempt: int) -> Path:
    return RunLayout(product_dir).unit_log(unit_id, attempt)


def unit_workdir(product_dir: Path, unit_id: str) -> Path:
    return RunLayout(product_dir).unit_workdir(unit_id)


def node_cores() -> int:
    """Cores this node gives the job (Slurm's allocation when there is one)."""
    for var in ("SLURM_CPUS_ON_NODE", "PBS_NUM_PPN"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return os.cpu_count() or 1


def thread_budget(configured: int, ranks_on_node: int) -> int:
    """The run file's ``threads_per_unit`` (default 1, for bit-identical products on
    any rank count); 0 asks for the node's cores shared by its ranks."""
    if configured and configured > 0:
        return int(configured)
    return max(1, node_cores() // max(1, ranks_on_node))


def child_environment(threads: int, extra_path: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_MPI_ENV_PREFIXES)}
    for var in THREAD_VARS:
        env[var] = str(threads)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, env.get("PYTHONPATH")) if p)
    return env


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory?)" if -returncode == signal.SIGKILL else ""
        return f"child killed by {name}{hint}"
    return f"child exited with status {returncode}"


@dataclass
class Outcome:
    """What a worker reports back for one unit: paths and small facts, no payloads."""

    unit: str
    attempt: int
    status: str                 # a UnitStatus: done | failed | interrupted
    rank: int
    outputs: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    error: str | None = None    # "Type: message", or how the child ended
    error_type: str | None = None
    traceback: str | None = None  # path of the child's traceback file
    retry: bool = True          # False: bad input or a diverged clean, another attempt cannot help
    no_space: str | None = None  # the product directory, when the unit failed on a full filesystem
    checks: dict = field(default_factory=dict)  # output -> fingerprint (done units)
    diverged: dict | None = None  # the guard stopped a runaway clean: stage, reason, cycles, channels
    log: str | None = None
    out: str | None = None      # the child's stdout/stderr
    elapsed: float = 0.0
    pid: int = 0                # the unit's child process
    host: str = ""              # where it ran
    threads: int | None = None  # its thread budget

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class WorkerContext:
    """Everything a rank needs to start units (built once per rank)."""

    def __init__(self, spec: Any, runfile: Path | None, rank: int, threads: int,
                 executor: str, timeout_s: float,
                 python: str | None = None, import_root: str | None = None,
                 warm_start: bool | None = None) -> None:
        self.spec = spec
        self.runfile = runfile
        self.rank = rank
        self.threads = threads
        self.executor = executor
        self.timeout_s = float(timeout_s or 0)
        self.product_dir = Path(spec.product_dir)
        self.python = python or sys.executable
        self.host = hostname()
        self.import_root = import_root or os.getcwd()
        self.env = child_environment(threads, self.import_root)
        try:
            pickle.dumps(spec)
            self._spec_for_child: Any = spec
        except Exception:  # noqa: BLE001 - an unpicklable spec is re-read from the run file
            self._spec_for_child = None
        if warm_start is None:
            warm_start = bool(getattr(getattr(spec, "scheduler", None), "warm_start", True))
        if warm_start and threads > 1:
            # OpenBLAS (numpy's, scipy's and CASA's) starts its thread pool when loaded:
            # a server that preloaded it could not fork safely.
            log.warning("rank %d: units start cold: warm start needs threads_per_unit = 1 (this rank gives "
                        "each unit %d threads, and OpenBLAS starts threads when it is loaded)", rank, threads)
            warm_start = False
        self.warm_start = warm_start
        self.forkserver: ForkServer | None = None
        self._server_starts = 0
        if warm_start:
            self._start_forkserver()  # preloads while rank 0 plans

    def start(self, unit: Any, attempt: int) -> "RunningUnit":
        return RunningUnit(self, unit, attempt)

    # ------------------------------------------------------------------ child processes
    def _start_forkserver(self) -> None:
        self._server_starts += 1
        self.forkserver = ForkServer(self.python, self.env, self.import_root,
                                     preload=(self.executor.partition(":")[0],))

    def _cold_from_now(self, reason: str) -> None:
        log.warning("rank %d: units start cold from now on (%s)", self.rank, reason)
        self.warm_start = False
        if self.forkserver is not None:
            self.forkserver.close()
            self.forkserver = None

    def _usable_forkserver(self) -> ForkServer | None:
        """The fork server to start the next unit from, or None (cold start).
        A server that never became ready (preloading failed or left threads)
        means cold starts from now on; one that died after being ready is
        replaced, up to MAX_SERVER_STARTS servers in all."""
        server = self.forkserver
        if not self.warm_start or server is None:
            return None
        server.wait_ready()  # bounded; at once after the first unit
        if server.usable():
            return server
        if not server.ready:
            self._cold_from_now(server.reason or "the fork server did not start")
            return None
        if self._server_starts >= MAX_SERVER_STARTS:
            self._cold_from_now(f"{self._server_starts} fork servers died, the last: {server.reason}")
            return None
        log.warning("rank %d: %s; starting a new fork server", self.rank, server.reason)
        self._start_forkserver()
        return self._usable_forkserver()

    def await_forkserver(self) -> None:
        """Wait (bounded) until a fork server, if any, has preloaded (replacing a dead one)."""
        self._usable_forkserver()

    def spawn(self, task_path: Path, out_path: Path, workdir: Path) -> "tuple[Any, str]":
        """Start the child of one unit: (a Popen-like handle, ``"warm"`` or ``"cold"``)."""
        server = self._usable_forkserver()
        if server is not None:
            try:
                return server.spawn(task_path, out_path, workdir), "warm"
            except ForkServerError as exc:
                log.warning("rank %d: this unit starts cold (%s)", self.rank, exc)
        with open(out_path, "ab") as out:
            return subprocess.Popen([self.python, "-m", "faust_hpc.launcher.unit_child", str(task_path)],
                                    cwd=workdir, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL), "cold"

    def close(self) -> None:
        """Stop this worker's fork server (also done at exit, and by pdeathsig if the worker is killed)."""
        if self.forkserver is not None:
            self.forkserver.close()


class RunningUnit:
    """One unit's child process, from start to its outcome."""

    def __init__(self, ctx: WorkerContext, unit: Any, attempt: int) -> None:
        self.ctx = ctx
        self.unit = unit
        self.attempt = attempt
        ctx.await_forkserver()  # its one-time preload is no part of this unit's time (or timeout)
        self.t0 = time.time()
        self.stop_reason: str | None = None
        self.timed_out = False
        self.outcome: Outcome | None = None
        pd = ctx.product_dir
        self.log_path = unit_log_path(pd, unit.id, attempt)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.workdir = unit_workdir(pd, unit.id)
        self.workdir.mkdir(parents=True, exist_ok=True)
        layout = RunLayout(pd)
        self.out_path = layout.unit_out(unit.id, attempt)
        self.traceback_path = layout.unit_traceback(unit.id, attempt)
        self.traceback_path.unlink(missing_ok=True)
        self.task_path = self.workdir / f".task.attempt{attempt}.pkl"
        self.result_path = self.workdir / f".result.attempt{attempt}.json"
        self.result_path.unlink(missing_ok=True)
        task = {"spec": ctx._spec_for_child, "runfile": str(ctx.runfile) if ctx.runfile else None,
                "unit": unit, "executor": ctx.executor, "workdir": str(self.workdir),
                "log_path": str(self.log_path), "result_path": str(self.result_path),
                "traceback_path": str(self.traceback_path),
                "parent_pid": os.getpid(), "attempt": attempt, "requested_at": self.t0}
        self.task_path.write_bytes(pickle.dumps(task))
        self.proc, self.start_mode = ctx.spawn(self.task_path, self.out_path, self.workdir)

    # ------------------------------------------------------------------ control
    def poll(self) -> "Outcome | None":
        """The outcome once the child has ended, else None."""
        if self.proc.poll() is None:
            if self.ctx.timeout_s and time.time() - self.t0 > self.ctx.timeout_s and not self.timed_out:
                self.timed_out = True
                self._kill()
            return None
        return self._finish()

    def wait(self, timeout: float | None = None) -> "Outcome | None":
        """Block (without spinning) until the child ends or ``timeout`` seconds pass."""
        limit = None if timeout is None else time.time() + timeout
        while True:
            step = 0.5
            if self.ctx.timeout_s:
                step = min(step, max(0.01, self.t0 + self.ctx.timeout_s - time.time()))
            if limit is not None:
                step = min(step, max(0.0, limit - time.time()))
            try:
                self.proc.wait(timeout=step)
            except subprocess.TimeoutExpired:
                pass
            outcome = self.poll()
            if outcome is not None or (limit is not None and time.time() >= limit):
                return outcome

    def interrupt(self, reason: str = "interrupted by the launcher (drain)") -> None:
        """Stop the unit; it will be recorded as ``interrupted`` (not a failure)."""
        self.stop_reason = reason
        self._kill()

    def _kill(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def _disk_full(self) -> str | None:
        """A child that died without saying why (CASA's SIGABRT, a result file
        it could not write) failed on a full disk if its logs say so or the
        product directory has (almost) no space left."""
        pd = self.ctx.product_dir
        try:
            nearly_full = shutil.disk_usage(pd).free < space.NEARLY_FULL_BYTES
        except OSError:
            nearly_full = False
        if nearly_full or space.logs_say_no_space([self.log_path, self.out_path]):
            return str(pd)
        return None

    def _finish(self) -> Outcome:
        if self.outcome is not None:
            return self.outcome
        rc = self.proc.returncode
        elapsed = time.time() - self.t0
        result: dict = {}
        try:
            import json

            result = json.loads(self.result_path.read_text())
        except (OSError, ValueError):
            result = {}
        outcome = Outcome(self.unit.id, self.attempt, UnitStatus.FAILED, self.ctx.rank, log=str(self.log_path),
                          out=str(self.out_path), elapsed=elapsed)
        if self.stop_reason is not None:
            outcome.status, outcome.error = UnitStatus.INTERRUPTED, self.stop_reason
        elif self.timed_out:
            outcome.error = f"timed out after {self.ctx.timeout_s:g} s (scheduler.unit_timeout_s)"
        elif rc == 0 and result.get("status") == UnitStatus.DONE:
            outcome.status = UnitStatus.DONE
            outcome.outputs = list(result.get("outputs") or [])
            outcome.info = dict(result.get("info") or {})
            outcome.checks = dict(result.get("checks") or {})
        elif rc == -signal.SIGTERM:
            # Slurm/mpirun tearing the job down signals every process; not the unit's fault.
            outcome.status, outcome.error = UnitStatus.INTERRUPTED, describe_exit(rc)
        else:
            outcome.error = result.get("error") or getattr(self.proc, "lost", None) or describe_exit(rc)
            outcome.error_type = result.get("error_type")
            outcome.retry = bool(result.get("retry", True))
            outcome.diverged = result.get("diverged") or None
            if self.traceback_path.exists():
                outcome.traceback = str(self.traceback_path)
            outcome.no_space = result.get("no_space") or self._disk_full()
            if outcome.no_space:
                outcome.error = f"{space.no_space_message(outcome.no_space)}: {outcome.error}"
                shutil.rmtree(self.workdir, ignore_errors=True)  # its scratch: room for the records
        outcome.pid, outcome.host, outcome.threads = self.proc.pid, self.ctx.host, self.ctx.threads
        for scratch in (self.task_path, self.result_path):
            scratch.unlink(missing_ok=True)
        self.outcome = outcome
        return outcome
