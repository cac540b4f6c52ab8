"""Rank 0's bookkeeping of the work graph, asking the scheduler policy who runs what.

The policy itself (largest cost first, memory-aware per node, graph growth
when a prepare unit reports its chunks) is the pure, MPI-free
``faust_hpc.scheduler``; this adapter keeps the launcher's view of the graph
(done, running, failed for good, blocked behind a failure) and is the only
place that talks to it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable

from faust_hpc.launcher.transport import WorkerInfo

log = logging.getLogger(__name__)


@dataclass
class _Running:
    unit: Any
    worker: WorkerInfo


class GraphState:
    """Which units are done, running, failed for good, blocked, or ready."""

    def __init__(self, plan: Any, workers: list[WorkerInfo], done: Iterable[str] = (),
                 node_memory_gb: float = 0.0) -> None:
        self.plan = plan
        self.workers = {w.rank: w for w in workers}
        self.done: set[str] = set(done)
        self.dead: set[str] = set()          # failed with no retries left
        self.running: dict[int, _Running] = {}
        self.memory_budget = {w.node: (node_memory_gb or w.mem_gb or float("inf")) for w in workers}

    # ------------------------------------------------------------------ graph
    @property
    def units(self) -> dict[str, Any]:
        return self.plan.units

    def expand(self, prepare_id: str, nchunks: int) -> None:
        self.plan.expand(prepare_id, int(nchunks))

    def running_ids(self) -> set[str]:
        return {r.unit.id for r in self.running.values()}

    def blocked(self) -> list[str]:
        """Units that can never run this time because something they need failed for good."""
        bad = set(self.dead)
        changed = True
        while changed:
            changed = False
            for uid, unit in self.units.items():
                if uid not in bad and uid not in self.done and any(d in bad for d in unit.deps):
                    bad.add(uid)
                    changed = True
        return sorted(bad - self.dead)

    def ready(self) -> list[Any]:
        """Runnable units, largest estimated cost first (ties by id: deterministic)."""
        busy = self.running_ids()
        out = [u for uid, u in self.units.items()
               if uid not in self.done and uid not in self.dead and uid not in busy
               and all(d in self.done for d in u.deps)]
        out.sort(key=lambda u: (-float(u.cost), u.id))
        return out

    def pending_count(self) -> int:
        return sum(1 for uid in self.units if uid not in self.done and uid not in self.dead)

    def remaining_cost(self) -> float:
        return sum(float(u.cost) for uid, u in self.units.items() if uid not in self.done and uid not in self.dead)

    # ------------------------------------------------------------------ policy
    def _node_load(self, node: str) -> float:
        return sum(float(r.unit.mem_gb) for r in self.running.values() if r.worker.node == node)

    def assign(self, free_ranks: Iterable[int]) -> list[tuple[int, Any]]:
        """Largest ready unit first to each free worker, never over a node's memory budget
        (a unit bigger than the whole budget runs alone on its node)."""
        picks: list[tuple[int, Any]] = []
        ready = self.ready()
        for rank in sorted(free_ranks):
            worker = self.workers[rank]
            budget = self.memory_budget[worker.node]
            load = self._node_load(worker.node)
            for i, unit in enumerate(ready):
                mem = float(unit.mem_gb)
                if load + mem <= budget or load == 0:
                    picks.append((rank, unit))
                    self.running[rank] = _Running(unit, worker)
                    del ready[i]
                    break
        return picks

    def finished(self, rank: int, unit_id: str, status: str, final: bool = False) -> None:
        self.running.pop(rank, None)
        if status == "done":
            self.done.add(unit_id)
        elif final:
            self.dead.add(unit_id)
