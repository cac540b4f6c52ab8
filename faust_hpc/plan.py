"""RunSpec -> the graph of work units, with cost and memory estimates.

Per image key (field x SPW x array x weighting)::

    <key>/prepare -> <key>/chunkNN (one per chunk) -> <key>/beam -> <key>/postNN (one per group of chunks)
                  -> <key>/finalize -> <key>/moments, <key>/qa

* prepare: sum-of-weights stamp -> common coverage -> the frozen chunk list;
* chunkNN: dirty -> nomask -> seed mask -> clean of one channel range;
* beam: the common beam across all chunks, recorded for the post units;
* postNN: residual check, pbcor, smoothing to the common beam, PB mask of a
  group of neighbouring chunks (:func:`costmodel.post_chunks_per_unit`: as many
  as make the work outweigh a unit's start-up);
* finalize: concatenation of the chunks and FITS export (the final outputs);
* moments, qa: the products layer.

Links grow linearly with the chunks: every chunk -> beam, beam -> every post,
every post -> finalize (the "all chunks done" barrier is the one beam unit,
not chunks x posts links). The post units read their chunks' images, which
the beam unit's dependency already waits for.

The chunk units are a *prediction* until the prepare unit has run: it reports
the real count, and :meth:`Plan.expand` replaces the predicted chunks (ids are
stable: ``chunk00`` .. ``chunkNN``, see :mod:`faust_hpc.units`).

Chunk counts (``nchunks`` run-wide or per SPW):

* ``"default"`` — the documented counts (:func:`catalog.default_nchunks`:
  4/40 for Setups 1-2, 20/80 for Setup 3, narrow/continuum);
* an integer — that many (at most one per channel);
* ``"auto"`` — sized from the cost model for ``[scheduler] workers`` (P):
  for a range of granularities (target chunk cost = total work / (P x k),
  k = 1, 2, 4, ... then refined around the best) each auto SPW gets the fewest
  chunks whose largest chunk is within the target and fits the node memory
  budget; every candidate plan is run through the scheduling policy under a
  simulated clock, and the one with the fewest units among those within 1 %
  of the smallest predicted makespan wins (:data:`AUTO_MAKESPAN_SLACK`). Smaller chunks balance better, and chunks without
  emission converge in one major cycle, but each chunk pays
  :data:`costmodel.UNIT_OVERHEAD_S` (CASA start + tclean setup): that is why
  there is an optimum. The choice is deterministic: the same run file gives
  the same chunks on any rank count (the launcher also freezes it in the
  manifest).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

from faust_hpc import catalog, costmodel
from faust_hpc.costmodel import ImageModel
from faust_hpc.geometry import geometry_for, nominal_data_geometry
from faust_hpc.runfile import RunSpec
from faust_hpc.spectral import split_channels  # the one contiguous-split rule (chunks, post groups)
from faust_hpc.scheduler import simulate_schedule  # "auto" chunking runs the policy; scheduler never imports plan
from faust_hpc.units import GROUPS, ImageKey, Unit, chunk_part, post_part

log = logging.getLogger(__name__)

AUTO_MAKESPAN_SLACK = 0.01
AUTO_MAX_CHUNKS_PER_WORKER = 1024
AUTO_MIN_TARGET_OVERHEADS = 4.0
"""``nchunks = "auto"`` tries target chunk costs total/(P x k) for k = 1, 2, 4, ...
until a chunk would cost less than this many unit overheads (smaller chunks are
mostly overhead), then refines around the best k."""


@dataclass
class Plan:
    """The unit graph of one run. ``units`` is ordered: key by key, each as
    prepare, chunks, beam, posts, finalize, moments, qa (the run file's order)."""

    units: dict[str, Unit]
    models: dict[str, ImageModel]          # by ImageKey.path
    keys: list[ImageKey]
    data_available: bool = False
    workers_hint: int = 1
    node_memory_gb: float = 0.0
    _succ: dict[str, list[str]] | None = field(default=None, repr=False)
    _levels: dict[str, float] | None = field(default=None, repr=False)

    # ------------------------------------------------------------- structure
    def copy(self) -> "Plan":
        """An independent copy (expansion mutates the plan; units are immutable)."""
        return Plan(dict(self.units), dict(self.models), list(self.keys), self.data_available,
                    self.workers_hint, self.node_memory_gb, _succ=None, _levels=self._levels)

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
        """Unit counts keyed by :data:`faust_hpc.units.GROUPS` (prepare/chunk/beam/post/finalize/products)."""
        counts = dict.fromkeys(GROUPS, 0)
        for unit in self.units.values():
            counts[unit.group] += 1
        return counts

    # ---------------------------------------------------------------- costs
    @property
    def total_cost(self) -> float:
        return sum(u.cost for u in self.units.values())

    def bottom_levels(self) -> dict[str, float]:
        """Per unit: its cost plus the costliest chain of units that wait on it
        (cached until the graph changes; treat the result as read-only)."""
        if self._levels is None:
            succ = self.successors()
            level: dict[str, float] = {}
            for uid in reversed(self.topological_order()):
                below = max((level[s] for s in succ.get(uid, ())), default=0.0)
                level[uid] = self.units[uid].cost + below
            self._levels = level
        return self._levels

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
        """Replace the chunk, beam and post units of ``prepare_id``'s image by
        those of ``nchunks`` chunks (as the prepare unit reported them) and
        re-wire finalize; returns the new chunk units. Idempotent for the same count."""
        prepare = self.units[prepare_id]
        if prepare.kind != "prepare":
            raise ValueError(f"{prepare_id} is not a prepare unit")
        if int(nchunks) < 1:
            raise ValueError(f"{prepare_id}: nchunks must be >= 1, got {nchunks}")
        key = prepare.key
        model = self.models[key.path]
        chunks = _chunk_units(key, model, int(nchunks), prepare_id)
        middle = [*chunks, *_post_units(key, model, chunks)]   # chunks, beam, posts
        finalize_id = key.unit_id("finalize")
        rebuilt: dict[str, Unit] = {}
        for uid, unit in self.units.items():
            if unit.key == key and unit.kind in _REPLANNED_KINDS:
                continue
            if uid == finalize_id:
                rebuilt.update({u.id: u for u in middle})
                unit = replace(unit, deps=tuple(u.id for u in middle if u.kind == "post"),
                               **_finalize_fields(model, len(chunks)))
            rebuilt[uid] = unit
        self.units = rebuilt
        self._succ = None
        self._levels = None
        return chunks


# ----------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------

def _image_model(spec: RunSpec, key: ImageKey, rows: float | None = None) -> ImageModel:
    spw = catalog.get_spw(key.label)
    if catalog.is_faust_field(key.field):
        geo = geometry_for(key.field, spec.setup, key.array, oversample=spec.geometry.oversample,
                           cell_arcsec=spec.geometry.cell_arcsec, imsize=spec.geometry.imsize)
    else:  # a run file's target: its geometry is read from its data by the units
        geo = nominal_data_geometry(spec.geometry.imsize)
    if spec.fullcube:
        nchan = spw.nchan
    else:
        nchan = max(1, min(spw.nchan, spw.nchan_from_window(spw.line_vwin or spec.line_vwin)))
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
                          deps=(prepare_id,), cost=est.cost, mem_gb=est.mem_gb, out_gb=est.out_gb, chunk_index=index,
                          nchunks=len(sizes), params=(("chan_start", start), ("nchan", size))))
        start += size
    return units


_REPLANNED_KINDS = ("chunk", "beam", "post")   # what a prepare's real chunk count re-shapes


def post_groups(nchunks: int, chunks_per_unit: int) -> list[tuple[int, int]]:
    """``(first chunk, chunk count)`` of each post unit: ``nchunks`` chunks in
    contiguous groups of about ``chunks_per_unit`` (the chunk split's own rule,
    :func:`spectral.split_channels`, so group sizes differ by at most one)."""
    ngroups = math.ceil(nchunks / max(1, min(int(chunks_per_unit), nchunks)))
    return split_channels(nchunks, ngroups)


def _post_units(key: ImageKey, model: ImageModel, chunks: list[Unit],
                chunks_per_unit: int | None = None) -> list[Unit]:
    """The beam unit (after every chunk) and one post unit per group of chunks
    (after the beam). ``chunks_per_unit`` forces the grouping (tests); by
    default :func:`costmodel.post_chunks_per_unit`."""
    n = len(chunks)
    est = costmodel.beam_estimate(model, n)
    beam = Unit(id=key.unit_id("beam"), kind="beam", key=key, deps=tuple(c.id for c in chunks),
                cost=est.cost, mem_gb=est.mem_gb, out_gb=est.out_gb, nchunks=n)
    size = costmodel.post_chunks_per_unit(model, n) if chunks_per_unit is None else chunks_per_unit
    groups = post_groups(n, size)
    posts = []
    for index, (first, count) in enumerate(groups):
        nchan = sum(int(dict(c.params)["nchan"]) for c in chunks[first:first + count])
        est = costmodel.post_estimate(model, nchan)
        posts.append(Unit(id=key.unit_id(post_part(index, len(groups))), kind="post", key=key, deps=(beam.id,),
                          cost=est.cost, mem_gb=est.mem_gb, out_gb=est.out_gb, chunk_index=first, nchunks=n,
                          params=(("chunk_start", first), ("chunk_count", count))))
    return [beam, *posts]


def _finalize_fields(model: ImageModel, nchunks: int) -> dict[str, float]:
    est = costmodel.concat_estimate(model, nchunks)
    return {"cost": est.cost, "mem_gb": est.mem_gb, "out_gb": est.out_gb}


def _key_units(key: ImageKey, model: ImageModel, nchunks: int, chunks_per_post: int | None = None) -> list[Unit]:
    prep = costmodel.prepare_estimate(model)
    prepare = Unit(id=key.unit_id("prepare"), kind="prepare", key=key, cost=prep.cost, mem_gb=prep.mem_gb,
                   nchunks=nchunks)
    chunks = _chunk_units(key, model, nchunks, prepare.id)
    finishing = _post_units(key, model, chunks, chunks_per_post)
    finalize = Unit(id=key.unit_id("finalize"), kind="finalize", key=key,
                    deps=tuple(u.id for u in finishing if u.kind == "post"), **_finalize_fields(model, len(chunks)))
    prod = costmodel.products_estimate(model)
    products = [Unit(id=key.unit_id(kind), kind=kind, key=key, deps=(finalize.id,), cost=prod.cost,
                     mem_gb=prod.mem_gb) for kind in ("moments", "qa")]
    return [prepare, *chunks, *finishing, finalize, *products]


def fewest_chunks_within(model: ImageModel, target_cost: float, memory_gb: float = 0.0) -> int:
    """The fewest chunks whose largest chunk costs <= ``target_cost`` and fits
    ``memory_gb`` (0 = no limit); one chunk per channel at most."""
    def ok(n: int) -> bool:
        biggest = max(costmodel.chunk_sizes(model.nchan, n))
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


def _fixed_count(spec: RunSpec, key: ImageKey, model: ImageModel) -> tuple[int, bool]:
    """(chunk count, is_auto) of one key from the run file's settings."""
    setting = spec.nchunks_for(key.label)
    default = catalog.default_nchunks(catalog.get_spw(key.label))
    count = default if setting in ("auto", "default") else int(setting)
    return max(1, min(count, model.nchan)), setting == "auto"


def resolve_nchunks(entries: Iterable[tuple[RunSpec, ImageKey]], models: Mapping[str, ImageModel],
                    workers: int, node_memory_gb: float = 0.0) -> dict[str, int]:
    """Chunk count per key path. ``"auto"`` keys are sized for ``workers`` by
    simulating candidate plans with the scheduling policy (see module doc)."""
    entries = list(entries)
    keys = [key for _, key in entries]
    counts: dict[str, int] = {}
    auto: list[ImageKey] = []
    for spec, key in entries:
        counts[key.path], is_auto = _fixed_count(spec, key, models[key.path])
        if is_auto:
            auto.append(key)
    if not auto:
        return counts
    base = _assemble(keys, models, counts, False, workers, node_memory_gb).total_cost
    tried: dict[float, tuple[float, int, dict[str, int]]] = {}

    def trial(per_worker: float) -> tuple[float, int, dict[str, int]]:
        if per_worker not in tried:
            target = max(base / (workers * per_worker), AUTO_MIN_TARGET_OVERHEADS * costmodel.UNIT_OVERHEAD_S)
            counts_k = dict(counts)
            for key in auto:
                counts_k[key.path] = fewest_chunks_within(models[key.path], target, node_memory_gb)
            plan = _assemble(keys, models, counts_k, False, workers, node_memory_gb)
            # workers per node are unknown at plan time: the budget caps each chunk, not concurrency
            sim = simulate_schedule(plan, workers, timeline=False)
            tried[per_worker] = (round(sim.makespan, 6), len(plan.units), counts_k)
        return tried[per_worker]

    # coarse: doubling granularity until chunks would be overhead-dominated, or the
    # predicted makespan got worse twice in a row; then refine around the best
    per_worker, worse = 1.0, 0
    while True:
        score = trial(per_worker)[:2]
        best_score = min(v[:2] for v in tried.values())
        worse = worse + 1 if score > best_score else 0
        if worse >= 2 or per_worker >= AUTO_MAX_CHUNKS_PER_WORKER or \
                base / (workers * per_worker) <= AUTO_MIN_TARGET_OVERHEADS * costmodel.UNIT_OVERHEAD_S:
            break
        per_worker *= 2.0
    best_k = min(tried, key=lambda k: tried[k][:2])
    for factor in (0.5 ** 0.5, 2 ** 0.5):
        trial(best_k * factor)
    # the fewest units among the candidates within AUTO_MAKESPAN_SLACK of the best
    # makespan: when the critical path binds, more chunks buy nothing
    best_makespan = min(v[0] for v in tried.values())
    near = [k for k, v in tried.items() if v[0] <= best_makespan * (1.0 + AUTO_MAKESPAN_SLACK)]
    best_k = min(near, key=lambda k: (tried[k][1], tried[k][0]))
    return tried[best_k][2]


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
    return build_combined_plan([spec], data_available=data_available, frozen_nchunks=frozen_nchunks,
                               rows_per_channel=rows_per_channel, workers=workers)


def build_combined_plan(specs: Iterable[RunSpec], *, data_available: bool = False,
                        frozen_nchunks: Mapping[str, int] | None = None,
                        rows_per_channel: Mapping[str, float] | None = None,
                        workers: int | None = None) -> Plan:
    """One graph for several run files run as one job (e.g. the three Setups of
    a field): ``"auto"`` chunking balances them together. Image keys must not
    repeat across the specs."""
    specs = list(specs)
    workers = workers or max(s.scheduler.workers for s in specs)
    memory = min((s.scheduler.node_memory_gb for s in specs if s.scheduler.node_memory_gb > 0), default=0.0)
    rows = rows_per_channel or {}
    entries = [(spec, key) for spec in specs for key in spec.image_keys()]
    keys = [key for _, key in entries]
    if len({k.path for k in keys}) != len(keys):
        raise ValueError("the same image key appears twice in the combined run files")
    models = {key.path: _image_model(spec, key, rows.get(key.path)) for spec, key in entries}
    frozen = dict(frozen_nchunks or {})
    pending = [(spec, key) for spec, key in entries if key.path not in frozen]
    counts = resolve_nchunks(pending, models, workers, memory) if pending else {}
    counts.update({k: max(1, int(v)) for k, v in frozen.items() if k in models})
    plan = _assemble(keys, models, counts, data_available, workers, memory)
    log.debug("plan: %d units, total cost %.0f s", len(plan.units), plan.total_cost)
    return plan


__all__ = ["Plan", "build_plan", "build_combined_plan", "resolve_nchunks", "fewest_chunks_within"]
