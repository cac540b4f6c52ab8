"""RunSpec -> the graph of work units, with cost and memory estimates.

Per image key (field x SPW x array x weighting)::

    <key>/prepare -> <key>/chunkNN (one per chunk) -> <key>/finalize -> <key>/moments
                                                                    -> <key>/qa

* prepare: sum-of-weights stamp -> common coverage -> the frozen chunk list;
* chunkNN: dirty -> nomask -> seed mask -> clean of one channel range;
* finalize: common beam across chunks, postprocess, concat, FITS;
* moments, qa: the products layer.

The chunk units are a *prediction* until the prepare unit has run: it reports
the real count, and :meth:`Plan.expand` replaces the predicted chunks (ids are
stable: ``chunk00`` .. ``chunkNN``, see :mod:`faust_hpc.units`).

Chunk counts (``nchunks`` run-wide or per SPW):

* ``"default"`` — the documented counts (:func:`catalog.default_nchunks`:
  4/40 for Setups 1-2, 20/80 for Setup 3, narrow/continuum);
* an integer — that many (at most one per channel);
* ``"auto"`` — sized from the cost model for ``[scheduler] workers`` (P):
  for a few granularities (target chunk cost = total work / (P x k),
  k = 1 .. 16 chunks per worker) each auto SPW gets the fewest chunks whose
  largest chunk is within the target and fits the node memory budget; every
  candidate is run through the scheduling policy under a simulated clock and
  the one with the smallest predicted makespan wins (ties: fewer units).
  Smaller chunks balance better but each pays :data:`costmodel.UNIT_OVERHEAD_S`
  (CASA start + tclean setup), which is why there is an optimum. The choice is
  deterministic: the same run file gives the same chunks everywhere.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

from faust_hpc import catalog, costmodel
from faust_hpc.costmodel import ImageModel
from faust_hpc.geometry import geometry_for
from faust_hpc.runfile import RunSpec
from faust_hpc.units import ImageKey, Unit, chunk_part

log = logging.getLogger(__name__)

AUTO_CHUNKS_PER_WORKER = (1, 2, 3, 4, 6, 8, 12, 16)
"""Granularities tried by ``nchunks = "auto"`` (target chunks per worker)."""


@dataclass
class Plan:
    """The unit graph of one run. ``units`` is ordered: key by key, each as
    prepare, chunks, finalize, moments, qa (the run file's order)."""

    units: dict[str, Unit]
    models: dict[str, ImageModel]          # by ImageKey.path
    keys: list[ImageKey]
    data_available: bool = False
    workers_hint: int = 1
    node_memory_gb: float = 0.0
    _succ: dict[str, list[str]] | None = field(default=None, repr=False)

    # ------------------------------------------------------------- structure
    def copy(self) -> "Plan":
        """An independent copy (expansion mutates the plan)."""
        return Plan(dict(self.units), dict(self.models), list(self.keys), self.data_available,
                    self.workers_hint, self.node_memory_gb)

    def successors(self) -> dict[str, list[str]]:
        """unit id -> ids of the units that depend on it."""
        if self._succ is None:
            succ: dict[str, list[str]] = {uid: [] for uid in self.units}
            for unit in self.units.values():
                for dep in unit.deps:
                    succ.setdefault(dep, []).append(unit.id)
            self._succ = succ
        return self._succ

    def units_of(self, key: ImageKey) -> list[Unit]:
        prefix = key.path + "/"
        return [u for uid, u in self.units.items() if uid.startswith(prefix)]

    def nchunks(self, key: ImageKey) -> int:
        return sum(1 for u in self.units_of(key) if u.kind == "chunk")

    def count_by_group(self) -> dict[str, int]:
        """Unit counts keyed prepare/chunk/finalize/products."""
        counts = {"prepare": 0, "chunk": 0, "finalize": 0, "products": 0}
        for unit in self.units.values():
            counts[unit.group] += 1
        return counts

    # ---------------------------------------------------------------- costs
    @property
    def total_cost(self) -> float:
        return sum(u.cost for u in self.units.values())

    def bottom_levels(self) -> dict[str, float]:
        """Per unit: its cost plus the costliest chain of units that wait on it."""
        succ = self.successors()
        level: dict[str, float] = {}
        for uid in reversed(self.topological_order()):
            below = max((level[s] for s in succ.get(uid, ())), default=0.0)
            level[uid] = self.units[uid].cost + below
        return level

    def topological_order(self) -> list[str]:
        indeg = {uid: 0 for uid in self.units}
        for unit in self.units.values():
            for dep in unit.deps:
                if dep in self.units:
                    indeg[unit.id] += 1
        succ = self.successors()
        order = [uid for uid, d in indeg.items() if d == 0]
        i = 0
        while i < len(order):
            for s in succ.get(order[i], ()):
                indeg[s] -= 1
                if indeg[s] == 0:
                    order.append(s)
            i += 1
        if len(order) != len(self.units):
            raise RuntimeError("the unit graph has a cycle")
        return order

    def critical_path(self) -> tuple[float, list[str]]:
        """The costliest dependency chain: (its cost, its unit ids in order)."""
        levels = self.bottom_levels()
        if not levels:
            return 0.0, []
        succ = self.successors()
        roots = [uid for uid, u in self.units.items() if not u.deps]
        uid = max(roots, key=lambda r: (levels[r], r))
        path = [uid]
        while succ.get(uid):
            uid = max(succ[uid], key=lambda s: (levels[s], s))
            path.append(uid)
        return levels[path[0]], path

    # ------------------------------------------------------------- expansion
    def expand(self, prepare_id: str, nchunks: int) -> list[Unit]:
        """Replace the chunk units of ``prepare_id``'s image by ``nchunks`` chunks
        (as the prepare unit reported them) and re-wire finalize; returns the new
        chunk units. Idempotent for the same count."""
        prepare = self.units[prepare_id]
        if prepare.kind != "prepare":
            raise ValueError(f"{prepare_id} is not a prepare unit")
        if int(nchunks) < 1:
            raise ValueError(f"{prepare_id}: nchunks must be >= 1, got {nchunks}")
        key = prepare.key
        model = self.models[key.path]
        chunks = _chunk_units(key, model, int(nchunks), prepare_id)
        finalize_id = key.unit_id("finalize")
        rebuilt: dict[str, Unit] = {}
        for uid, unit in self.units.items():
            if unit.key == key and unit.kind == "chunk":
                continue
            if uid == finalize_id:
                for chunk in chunks:
                    rebuilt[chunk.id] = chunk
                unit = replace(unit, deps=tuple(c.id for c in chunks))
            rebuilt[uid] = unit
        self.units = rebuilt
        self._succ = None
        return chunks


# ----------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------

def _image_model(spec: RunSpec, key: ImageKey, rows: float | None = None) -> ImageModel:
    spw = catalog.get_spw(key.label)
    geo = geometry_for(key.field, spec.setup, key.array, oversample=spec.geometry.oversample,
                       cell_arcsec=spec.geometry.cell_arcsec, imsize=spec.geometry.imsize)
    if spec.fullcube:
        nchan = spw.nchan
    else:
        nchan = max(1, min(spw.nchan, spw.nchan_from_window(spec.line_vwin)))
    scales = spec.spw_overrides(key.label).scales
    return costmodel.image_model(spec.setup, spw, geo, key.array, nchan=nchan, rows=rows,
                                 nscales=None if scales is None else max(1, len(scales)),
                                 clean_sigma=spec.thresholds.clean_sigma,
                                 nomask_sigma=spec.thresholds.nomask_sigma)


def _chunk_units(key: ImageKey, model: ImageModel, nchunks: int, prepare_id: str) -> list[Unit]:
    sizes = costmodel.chunk_sizes(model.nchan, nchunks)
    units, start = [], 0
    for index, size in enumerate(sizes):
        est = costmodel.chunk_estimate(model, size)
        units.append(Unit(id=key.unit_id(chunk_part(index, len(sizes))), kind="chunk", key=key,
                          deps=(prepare_id,), cost=est.cost, mem_gb=est.mem_gb, chunk_index=index,
                          nchunks=len(sizes), params=(("chan_start", start), ("nchan", size))))
        start += size
    return units


def _key_units(key: ImageKey, model: ImageModel, nchunks: int) -> list[Unit]:
    prep = costmodel.prepare_estimate(model)
    prepare = Unit(id=key.unit_id("prepare"), kind="prepare", key=key, cost=prep.cost, mem_gb=prep.mem_gb,
                   nchunks=nchunks)
    chunks = _chunk_units(key, model, nchunks, prepare.id)
    fin = costmodel.finalize_estimate(model)
    finalize = Unit(id=key.unit_id("finalize"), kind="finalize", key=key, deps=tuple(c.id for c in chunks),
                    cost=fin.cost, mem_gb=fin.mem_gb)
    prod = costmodel.products_estimate(model)
    products = [Unit(id=key.unit_id(kind), kind=kind, key=key, deps=(finalize.id,), cost=prod.cost,
                     mem_gb=prod.mem_gb) for kind in ("moments", "qa")]
    return [prepare, *chunks, finalize, *products]


def fewest_chunks_within(model: ImageModel, target_cost: float, memory_gb: float = 0.0) -> int:
    """The fewest chunks whose largest chunk costs <= ``target_cost`` and fits
    ``memory_gb`` (0 = no limit); one chunk per channel at most."""
    def ok(n: int) -> bool:
        biggest = costmodel.chunk_sizes(model.nchan, n)[0]
        est = costmodel.chunk_estimate(model, biggest)
        return est.cost <= target_cost and (memory_gb <= 0 or est.mem_gb <= memory_gb)

    lo, hi = 1, model.nchan
    if ok(lo):
        return lo
    if not ok(hi):
        return hi
    while hi - lo > 1:           # chunk cost falls as chunks shrink
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _assemble(keys: list[ImageKey], models: Mapping[str, ImageModel], counts: Mapping[str, int],
              data_available: bool, workers: int, node_memory_gb: float) -> Plan:
    units: dict[str, Unit] = {}
    for key in keys:
        for unit in _key_units(key, models[key.path], counts[key.path]):
            units[unit.id] = unit
    return Plan(units=units, models=dict(models), keys=list(keys), data_available=data_available,
                workers_hint=workers, node_memory_gb=node_memory_gb)


def resolve_nchunks(spec: RunSpec, keys: Iterable[ImageKey], models: Mapping[str, ImageModel],
                    workers: int | None = None) -> dict[str, int]:
    """Chunk count per key path; ``"auto"`` keys sized for ``workers``
    (default ``spec.scheduler.workers``) by simulating candidate plans."""
    from faust_hpc.scheduler import simulate_schedule  # the policy lives there; no cycle at import

    keys = list(keys)
    workers = workers or spec.scheduler.workers
    memory = spec.scheduler.node_memory_gb
    counts: dict[str, int] = {}
    auto: list[ImageKey] = []
    for key in keys:
        setting = spec.nchunks_for(key.label)
        model = models[key.path]
        if setting == "auto":
            auto.append(key)
            counts[key.path] = catalog.default_nchunks(catalog.get_spw(key.label))
        elif setting == "default":
            counts[key.path] = catalog.default_nchunks(catalog.get_spw(key.label))
        else:
            counts[key.path] = int(setting)
        counts[key.path] = max(1, min(counts[key.path], model.nchan))
    if not auto:
        return counts
    best: tuple[float, int, dict[str, int]] | None = None
    base = _assemble(keys, models, counts, False, workers, memory).total_cost
    for per_worker in AUTO_CHUNKS_PER_WORKER:
        target = base / (workers * per_worker)
        trial = dict(counts)
        for key in auto:
            trial[key.path] = fewest_chunks_within(models[key.path], target, memory)
        plan = _assemble(keys, models, trial, False, workers, memory)
        sim = simulate_schedule(plan, workers, node_memory_gb=memory, timeline=False)
        score = (round(sim.makespan, 6), len(plan.units))
        if best is None or score < best[:2]:
            best = (*score, trial)
    assert best is not None
    return best[2]


def build_plan(spec: RunSpec, data_available: bool | None = None, *,
               frozen_nchunks: Mapping[str, int] | None = None,
               rows_per_channel: Mapping[str, float] | None = None,
               workers: int | None = None) -> Plan:
    """The unit graph of a run.

    ``data_available`` (default: ``spec.data_dir`` is a directory) is recorded for
    reporting only: without data the plan comes from the catalog alone.
    ``frozen_nchunks`` (key path -> count, e.g. from a manifest) wins over the run
    file's ``nchunks``; ``rows_per_channel`` (key path -> visibility rows per
    channel, e.g. counted in the MSs) replaces the nominal FAUST counts;
    ``workers`` overrides ``[scheduler] workers`` as the ``"auto"`` hint.
    """
    if data_available is None:
        data_available = spec.data_dir.is_dir()
    keys = spec.image_keys()
    rows = rows_per_channel or {}
    models = {k.path: _image_model(spec, k, rows.get(k.path)) for k in keys}
    frozen = dict(frozen_nchunks or {})
    pending = [k for k in keys if k.path not in frozen]
    counts = resolve_nchunks(spec, pending, models, workers) if pending else {}
    counts.update({k: int(v) for k, v in frozen.items() if k in models})
    plan = _assemble(keys, models, counts, data_available, workers or spec.scheduler.workers,
                     spec.scheduler.node_memory_gb)
    log.debug("plan: %d units, total cost %.0f s", len(plan.units), plan.total_cost)
    return plan


__all__ = ["Plan", "build_plan", "resolve_nchunks", "fewest_chunks_within", "AUTO_CHUNKS_PER_WORKER"]
