"""Rank 0's view of the work graph, delegating every decision to the scheduler.

The policy (largest cost first with critical-path priority, finalize as soon
as its chunks are done, memory-aware per node, graph growth when a prepare
reports its chunks) is :class:`faust_hpc.scheduler.Scheduler`, pure and
MPI-free. This adapter only maps the launcher's worker slots (MPI ranks, with
the node each shares memory on) onto it and translates outcomes into its verbs.
"""
from __future__ import annotations

from typing import Any, Iterable

from faust_hpc.launcher.transport import WorkerInfo
from faust_hpc.scheduler import Scheduler


class GraphState:
    """Done / running / failed-for-good units and the assignment of ready ones."""

    def __init__(self, plan: Any, workers: list[WorkerInfo], done: Iterable[str] = (),
                 node_memory_gb: float = 0.0) -> None:
        nodes = {w.rank: w.node for w in workers}
        # The run file's budget if set, else each node's MemTotal as its ranks reported it.
        budget: float | dict[str, float] = (float(node_memory_gb) if node_memory_gb and node_memory_gb > 0
                                            else {w.node: w.mem_gb for w in workers})
        self.sched = Scheduler(plan, nodes=nodes, node_memory_gb=budget, done=done)

    @property
    def plan(self) -> Any:
        return self.sched.plan

    @property
    def units(self) -> dict[str, Any]:
        return self.sched.plan.units

    @property
    def done(self) -> set[str]:
        return self.sched.done

    @property
    def running(self) -> dict[int, str]:
        """worker rank -> unit id"""
        return self.sched.running

    def assign(self, free_ranks: Iterable[int]) -> list[tuple[int, Any]]:
        return list(self.sched.assign(free_ranks))

    def finished(self, unit_id: str, status: str, *, final: bool = False, nchunks: int | None = None) -> None:
        """Fold one outcome: done (a prepare may report its chunk count), failed
        (retried unless ``final``), or interrupted (back to ready; a drained
        coordinator hands nothing out any more)."""
        if status == "done":
            self.sched.complete(unit_id, nchunks=nchunks)
        else:
            self.sched.fail(unit_id, retry=not final)

    def blocked(self) -> list[str]:
        return self.sched.blocked_ids()

    def remaining_cost(self) -> float:
        return self.sched.remaining_cost()
