"""How units travel: MPI between rank 0 and worker ranks, or local child processes.

Both transports offer rank 0 the same four verbs — ``submit``, ``poll``,
``interrupt``, ``shutdown`` — so the coordinator runs one code path on one
rank (serial), on N ranks under ``mpirun``/``srun``, or with several local
slots for benchmarks.

Why the waiting is done by hand: Open MPI's blocking ``recv`` busy-polls a
whole core, and rank 0 mostly waits. Rank 0 (and an idle worker) polls with
``Iprobe`` and sleeps between probes with exponential backoff (50 µs up to
50 ms), so a reply is picked up within a fraction of a millisecond while
units are short, and waiting costs almost no CPU while they are long.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from faust_hpc.launcher.worker import Outcome, RunningUnit, WorkerContext
from faust_hpc.run.records import hostname

log = logging.getLogger(__name__)

TAG_HELLO, TAG_WORK, TAG_RESULT, TAG_INTERRUPT, TAG_STOP = 1, 2, 3, 4, 5
BACKOFF_MIN_S = 50e-6
BACKOFF_MAX_S = 0.05


@dataclass(frozen=True)
class WorkerInfo:
    """A worker slot as the scheduler sees it."""

    rank: int
    host: str
    node: str            # ranks with the same node share memory and cores
    ranks_on_node: int   # all ranks of the job on that node (rank 0 included)
    cores: int
    mem_gb: float        # MemTotal of the node
    threads: int         # thread budget of each unit's child


class Transport(Protocol):
    workers: list[WorkerInfo]

    def submit(self, rank: int, unit: Any, attempt: int) -> None: ...
    def poll(self, max_wait: float) -> list[Outcome]: ...
    def interrupt(self, rank: int, reason: str) -> None: ...
    def shutdown(self) -> None: ...


def node_memory_gb() -> float:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return 0.0


PROBE_TRIES = 8


def probe(comm: Any, source: int, tag: int, status: Any, tries: int = PROBE_TRIES) -> bool:
    """``Iprobe`` a few times in a row. Open MPI usually needs more than one
    progress call to notice an arrived message; probing once per wake-up
    would add two or three sleep periods to every hand-off (measured: 3x)."""
    for _ in range(tries):
        if comm.Iprobe(source=source, tag=tag, status=status):
            return True
    return False


class Backoff:
    """Sleep a little longer each time nothing happened; start short again after something did."""

    YIELDS = 4  # first waits after activity only yield the core: a quick reply is picked up at once

    def __init__(self, lo: float = BACKOFF_MIN_S, hi: float = BACKOFF_MAX_S) -> None:
        self.lo, self.hi, self.delay = lo, hi, lo
        self.yields = self.YIELDS

    def reset(self) -> None:
        self.delay = self.lo
        self.yields = self.YIELDS

    def sleep(self, limit: float | None = None) -> None:
        if self.yields > 0:
            self.yields -= 1
            os.sched_yield()
            return
        delay = self.delay if limit is None else min(self.delay, max(0.0, limit))
        if delay > 0:
            time.sleep(delay)
        self.delay = min(self.hi, self.delay * 2)


# ============================================================================ local (serial)
class LocalTransport:
    """Worker slots in this process: each runs units as child processes.

    One slot is the serial launcher (no mpirun, or ``-n 1``): the same
    coordinator, the same children, logs and records as under MPI.
    """

    def __init__(self, make_context: Callable[[int, int], WorkerContext], slots: int = 1) -> None:
        from faust_hpc.launcher.worker import node_cores

        self.contexts: dict[int, WorkerContext] = {}
        self.workers = []
        for i in range(slots):
            rank = i + 1
            ctx = make_context(rank, slots)
            self.contexts[rank] = ctx
            self.workers.append(WorkerInfo(rank, hostname(), hostname(), slots, node_cores(),
                                           node_memory_gb(), ctx.threads))
        self.running: dict[int, RunningUnit] = {}

    def submit(self, rank: int, unit: Any, attempt: int) -> None:
        self.running[rank] = self.contexts[rank].start(unit, attempt)

    def poll(self, max_wait: float) -> list[Outcome]:
        deadline = time.time() + max_wait
        backoff = Backoff(lo=0.001, hi=0.05)
        while True:
            done = []
            for rank, run in list(self.running.items()):
                outcome = run.poll()
                if outcome is not None:
                    done.append(outcome)
                    del self.running[rank]
            if done or time.time() >= deadline or not self.running:
                return done
            if len(self.running) == 1:
                # one child: a blocking waitpid with timeout costs no CPU at all
                run = next(iter(self.running.values()))
                run.wait(timeout=max(0.0, min(0.5, deadline - time.time())))
            else:
                backoff.sleep(deadline - time.time())

    def interrupt(self, rank: int, reason: str) -> None:
        run = self.running.get(rank)
        if run is not None:
            run.interrupt(reason)

    def shutdown(self) -> None:
        for rank in list(self.running):
            self.interrupt(rank, "launcher shut down")
        self.poll(0)
        for ctx in self.contexts.values():
            ctx.close()  # their fork servers


# ============================================================================ MPI
def in_mpi_job() -> bool:
    """Started by mpirun/mpiexec/srun with more than one rank? (Checked
    without initialising MPI, so a plain ``faust-hpc run`` never needs it.)"""
    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value) > 1
    return bool(os.environ.get("PMIX_RANK")) and os.environ.get("SLURM_NTASKS", "1") != "1"


def mpi_comm() -> Any:
    from mpi4py import MPI

    return MPI.COMM_WORLD


def _node_facts(comm: Any) -> tuple[str, int]:
    """(node name, ranks on this node) via the MPI shared-memory split."""
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    n = local.Get_size()
    leader = local.bcast(comm.Get_rank(), root=0)
    local.Free()
    return f"{hostname()}#{leader}", n


class MpiTransport:
    """Rank 0's side: units out with ``isend``, outcomes in via ``Iprobe`` + backoff."""

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        _node_facts(comm)  # collective: the workers learn their node from it
        infos = comm.gather(None, root=0)  # matched by workers' gather of their WorkerInfo
        self.workers = [w for w in infos if w is not None]
        self._pending_sends: list[Any] = []
        self.backoff = Backoff()

    def submit(self, rank: int, unit: Any, attempt: int) -> None:
        self._pending_sends = [r for r in self._pending_sends if not r.Test()]
        self._pending_sends.append(self.comm.isend((unit, attempt), dest=rank, tag=TAG_WORK))

    def poll(self, max_wait: float) -> list[Outcome]:
        from mpi4py import MPI

        deadline = time.time() + max_wait
        status = MPI.Status()
        while True:
            got: list[Outcome] = []
            while probe(self.comm, MPI.ANY_SOURCE, TAG_RESULT, status):
                got.append(Outcome(**self.comm.recv(source=status.Get_source(), tag=TAG_RESULT)))
            if got:
                self.backoff.reset()
                return got
            remaining = deadline - time.time()
            if remaining <= 0:
                return got
            self.backoff.sleep(remaining)

    def interrupt(self, rank: int, reason: str) -> None:
        self.comm.send(reason, dest=rank, tag=TAG_INTERRUPT)

    def shutdown(self) -> None:
        for w in self.workers:
            self.comm.send(None, dest=w.rank, tag=TAG_STOP)
        for req in self._pending_sends:
            req.Wait()


def mpi_worker_main(comm: Any, make_context: Callable[[int, int], WorkerContext],
                    run_inline: Callable[[Any, int], Outcome] | None = None) -> int:
    """A worker rank: say hello, then run what rank 0 sends until told to stop.

    ``run_inline`` (benchmarks only) runs a unit in this process instead of a child.
    """
    from mpi4py import MPI

    from faust_hpc.launcher.worker import node_cores

    rank = comm.Get_rank()
    node, n_on_node = _node_facts(comm)
    # Drain signals (walltime warning, scancel) are rank 0's business: it decides
    # whether the running unit may finish or is interrupted; a worker keeps going.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    ctx = make_context(rank, n_on_node)
    comm.gather(WorkerInfo(rank, hostname(), node, n_on_node, node_cores(), node_memory_gb(), ctx.threads),
                root=0)
    status = MPI.Status()
    backoff = Backoff()
    while True:
        if not probe(comm, 0, MPI.ANY_TAG, status):
            backoff.sleep()
            continue
        backoff.reset()
        tag = status.Get_tag()
        msg = comm.recv(source=0, tag=tag)
        if tag == TAG_STOP:
            ctx.close()  # its fork server
            return 0
        if tag == TAG_INTERRUPT:
            continue  # arrived after its unit ended: nothing to stop
        unit, attempt = msg
        if run_inline is not None:
            outcome = run_inline(unit, attempt)
        else:
            running = ctx.start(unit, attempt)
            outcome = None
            while outcome is None:
                outcome = running.wait(timeout=0.2)
                if outcome is None and probe(comm, 0, TAG_INTERRUPT, status):
                    running.interrupt(comm.recv(source=0, tag=TAG_INTERRUPT))
        comm.send(outcome.as_dict(), dest=0, tag=TAG_RESULT)
