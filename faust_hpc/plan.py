"""RunSpec -> the graph of work units, with cost and memory estimates.

Per image key (field x SPW x array x weighting)::

    <key>/prepare -> <key>/chunkNN (one per chunk) -> <key>/beam -> <key>/postNN (one per group of chunks)
                  -> <key>/concatNN (one per group of final image extensions) -> <key>/finalize
                  -> <key>/moments, <key>/qa

* prepare: sum-of-weights stamp -> common coverage -> the frozen chunk list;
* chunkNN: dirty -> nomask -> seed mask -> clean of one channel range;
* beam: the common beam across all chunks, recorded for the post units;
* postNN: residual check, pbcor, smoothing to the common beam, PB mask of a
  group of neighbouring chunks (:func:`costmodel.post_chunks_per_unit`: as many
  as make the work outweigh a unit's start-up);
* concatNN: concatenation of the chunks of one group of final image
  extensions and their FITS export (:func:`costmodel.concat_groups`: one
  extension each, or neighbours merged where one's share is below a unit's
  start-up), so the ~28,000 s serial step of the largest cube spreads over
  workers;
* finalize: a cheap check that every final product is there (the image's
  final outputs, what moments, QA, resume and status follow);
* moments, qa: the products layer.

Links grow linearly with the chunks: every chunk -> beam, beam -> every post,
every post -> every concat (at most nine), every concat -> finalize (the "all
chunks done" barrier is the one beam unit, not chunks x posts links). The
post and concat units read their chunks' images, which the beam unit's
dependency already waits for.

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
  of the smallest predicted makespan wins (:data:`AUTO_MAKESPAN_SLACK`). The doubling stops
  as soon as the critical path binds -- the tight lower bound (critical path, or one
  image's own chain) is above total work / P -- and the last doubling shortened the
  predicted makespan by less than that slack: further doublings buy less and less
  there, and the candidates within the slack of the best have the fewest units
  anyway. Granularities that give the same counts are simulated once (memoised on
  the counts).
  Smaller chunks balance better, and chunks without
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

from faust_hpc import catalog, costfit, costmodel
from faust_hpc.costmodel import ImageModel
from faust_hpc.geometry import geometry_for, nominal_data_geometry
from faust_hpc.layout import FINAL_PRODUCT_EXTS
from faust_hpc.runfile import RunSpec
# "auto" chunking runs the policy; scheduler never imports plan
from faust_hpc.scheduler import SimResult, simulate_schedule
from faust_hpc.spectral import split_channels  # the one contiguous-split rule (chunks, post groups)
from faust_hpc.units import GROUPS, ImageKey, Unit, chunk_part, concat_part, post_part

log = logging.getLogger(__name__)

AUTO_MAKESPAN_SLACK = 0.01
AUTO_MAX_CHUNKS_PER_WORKER = 1024
AUTO_MIN_TARGET_OVERHEADS = 4.0
"""``nchunks = "auto"`` tries target chunk costs total/(P x k) for k = 1, 2, 4, ...
until a chunk would cost less than this many unit overheads (smaller chunks are
mostly overhead), then refines around the best k."""


@dataclass
class Plan:
    """The unit graph of one run. ``units`` holds every unit (built key by key, each
    as prepare, chunks, beam, posts, concats, finalize, moments, qa, in the run file's order; an image
    :meth:`expand` re-shapes gets its new units at the end of the table);
    :meth:`units_of` gives one image's units in graph order.

    Rank 0 keeps this graph for the whole run and re-shapes it every time a
    prepare unit reports its chunks, so what a change costs is proportional to
    the image that changed: an index by image key, and successors and bottom
    levels (once asked for) that :meth:`replace_image` updates for that image
    only. Nothing here scans the whole plan per image."""

    units: dict[str, Unit]
    models: dict[str, ImageModel]          # by ImageKey.path
    keys: list[ImageKey]
    data_available: bool = False
    workers_hint: int = 1
    node_memory_gb: float = 0.0
    _succ: dict[str, list[str]] | None = field(default=None, repr=False, compare=False)
    _levels: dict[str, float] | None = field(default=None, repr=False, compare=False)
    # key path -> its unit ids in graph order, and the units table it indexes (a table
    # replaced from outside is indexed again when next asked)
    _index: dict[str, list[str]] | None = field(default=None, repr=False, compare=False)
    _indexed: dict[str, Unit] | None = field(default=None, repr=False, compare=False)
    last_changed: set[str] = field(default_factory=set, repr=False, compare=False)
    """Ids whose bottom level the last :meth:`replace_image` changed (the scheduler re-prioritises them)."""

    # ------------------------------------------------------------- structure
    def copy(self) -> "Plan":
        """An independent copy (expansion mutates the plan; units are immutable)."""
        units = dict(self.units)
        index = None if self._index is None or self._indexed is not self.units else \
            {path: list(ids) for path, ids in self._index.items()}
        return Plan(units, dict(self.models), list(self.keys), self.data_available, self.workers_hint,
                    self.node_memory_gb,
                    _succ=None if self._succ is None else {uid: list(s) for uid, s in self._succ.items()},
                    _levels=None if self._levels is None else dict(self._levels),
                    _index=index, _indexed=units if index is not None else None)

    def _image_index(self) -> dict[str, list[str]]:
        """key path -> unit ids in graph order (built once, then kept up to date)."""
        if self._index is None or self._indexed is not self.units:
            index: dict[str, list[str]] = {}
            for uid, unit in self.units.items():
                index.setdefault(unit.key.path, []).append(uid)
            self._index, self._indexed = index, self.units
        return self._index

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
        """One image's units in graph order: O(its units)."""
        return [self.units[uid] for uid in self._image_index().get(key.path, ())]

    def nchunks(self, key: ImageKey) -> int:
        return sum(1 for u in self.units_of(key) if u.kind == "chunk")

    def chunk_counts(self) -> dict[str, int]:
        """Chunk count per image key path (of every image with a prepare unit): one pass."""
        counts: dict[str, int] = {}
        for path, ids in self._image_index().items():
            units = [self.units[uid] for uid in ids]
            if any(u.kind == "prepare" for u in units):
                counts[path] = sum(1 for u in units if u.kind == "chunk")
        return counts

    def count_by_group(self) -> dict[str, int]:
        """Unit counts keyed by :data:`faust_hpc.units.GROUPS` (prepare/chunk/beam/post/concat/finalize/products)."""
        counts = dict.fromkeys(GROUPS, 0)
        for unit in self.units.values():
            counts[unit.group] += 1
        return counts

    # ---------------------------------------------------------------- costs
    @property
    def total_cost(self) -> float:
        """Sum of unit costs, correctly rounded (math.fsum): the same whatever order
        expansions left the units table in."""
        return math.fsum(u.cost for u in self.units.values())

    def bottom_levels(self) -> dict[str, float]:
        """Per unit: its cost plus the costliest chain of units that wait on it
        (cached, and kept up to date by :meth:`replace_image`; treat the result as read-only)."""
        if self._levels is None:
            succ = self.successors()
            level: dict[str, float] = {}
            for uid in reversed(self.topological_order()):
                below = max((level[s] for s in succ.get(uid, ())), default=0.0)
                level[uid] = self.units[uid].cost + below
            self._levels = level
        return self._levels

    def topological_order(self, units: Iterable[Unit] | None = None) -> list[str]:
        """Unit ids, every unit after its dependencies: of the whole plan, or of
        ``units`` alone (their dependencies on other units are left out)."""
        members = self.units if units is None else {u.id: u for u in units}
        indeg = {uid: 0 for uid in members}
        succ: dict[str, list[str]] = {}
        for unit in members.values():
            for dep in unit.deps:
                if dep in members:
                    indeg[unit.id] += 1
                    succ.setdefault(dep, []).append(unit.id)
        order = [uid for uid, d in indeg.items() if d == 0]
        i = 0
        while i < len(order):
            for s in succ.get(order[i], ()):
                indeg[s] -= 1
                if indeg[s] == 0:
                    order.append(s)
            i += 1
        if len(order) != len(members):
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
        """Replace the chunk, beam, post and concat units of ``prepare_id``'s image by
        those of ``nchunks`` chunks (as the prepare unit reported them) and
        re-wire finalize; returns the new chunk units. Idempotent for the same
        count. O(units of that image)."""
        prepare = self.units[prepare_id]
        if prepare.kind != "prepare":
            raise ValueError(f"{prepare_id} is not a prepare unit")
        if int(nchunks) < 1:
            raise ValueError(f"{prepare_id}: nchunks must be >= 1, got {nchunks}")
        key = prepare.key
        model = self.models[key.path]
        chunks = _chunk_units(key, model, int(nchunks), prepare_id)
        # the image re-wired: its new chunks, beam, posts and concats in place of the old,
        # finalize waiting on the concats
        middle = [*chunks, *_finishing_units(key, model, chunks)]
        finalize_id = key.unit_id("finalize")
        image: list[Unit] = []
        for unit in self.units_of(key):
            if unit.kind in _REPLANNED_KINDS:
                continue
            if unit.id == finalize_id:
                image.extend(middle)
                unit = replace(unit, deps=tuple(u.id for u in middle if u.kind == "concat"))
            image.append(unit)
        self.replace_image(key, image)
        return chunks

    def replace_image(self, key: ImageKey, image: list[Unit]) -> None:
        """Make ``image`` (in graph order) the units of ``key``, whatever their kinds:
        the units table, the image index, and successors and bottom levels if they
        were asked for, are updated for this image (and any unit upstream of it)
        only -- what a from-scratch build would give. Sets :attr:`last_changed`."""
        index = self._image_index()
        old_ids = index.get(key.path, [])
        old = [self.units[uid] for uid in old_ids]
        new = {u.id: u for u in image}
        for uid in old_ids:
            if uid not in new:
                del self.units[uid]
        self.units.update(new)
        index[key.path] = list(new)
        if self._succ is not None:
            _rewire_successors(self._succ, old, image)
        self.last_changed = set()
        if self._levels is not None:
            self.last_changed = self._update_levels(image, set(old_ids) - set(new))

    def _update_levels(self, image: list[Unit], removed: set[str]) -> set[str]:
        """Bottom levels of ``image`` (reverse graph order) and, while they change, of the units upstream."""
        levels, succ, units = self._levels, self.successors(), self.units
        assert levels is not None
        for uid in removed:
            levels.pop(uid, None)
        changed: set[str] = set()

        def settle(uid: str) -> bool:
            level = units[uid].cost + max((levels[s] for s in succ.get(uid, ())), default=0.0)
            if levels.get(uid) == level:
                return False
            levels[uid] = level
            changed.add(uid)
            return True

        for uid in reversed(self.topological_order(image)):
            settle(uid)
        members = {u.id for u in image}
        upstream = [d for u in image for d in u.deps if d not in members and d in units]
        while upstream:
            uid = upstream.pop()
            if settle(uid):
                upstream.extend(d for d in units[uid].deps if d in units)
        return changed


def _rewire_successors(succ: dict[str, list[str]], old: list[Unit], new: list[Unit]) -> None:
    """Successor lists after an image's units ``old`` became ``new``: the edges into the
    old units go, those into the new come (in graph order); edges from other units stay."""
    old_ids = {u.id for u in old}
    new_ids = {u.id for u in new}
    for dep in {d for u in old for d in u.deps}:
        if dep in succ:
            succ[dep] = [s for s in succ[dep] if s not in old_ids]
    for uid in old_ids - new_ids:
        succ.pop(uid, None)
    for unit in new:
        succ.setdefault(unit.id, [])
        for dep in unit.deps:
            succ.setdefault(dep, []).append(unit.id)


# ----------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------

def _image_model(spec: RunSpec, key: ImageKey, rows: float | None = None) -> ImageModel:
    spw = catalog.get_spw(key.label)
    setup = spec.setup_of(key.label)
    if catalog.is_faust_field(key.field):
        geo = geometry_for(key.field, setup, key.array, oversample=spec.geometry.oversample,
                           cell_arcsec=spec.geometry.cell_arcsec, imsize=spec.geometry.imsize)
    else:  # a run file's target: its geometry is read from its data by the units
        geo = nominal_data_geometry(spec.geometry.imsize)
    if spec.fullcube:
        nchan = spw.nchan
    else:
        nchan = max(1, min(spw.nchan, spw.nchan_from_window(spw.line_vwin or spec.line_vwin)))
    scales = spec.spw_overrides(key.label).scales
    model = costmodel.image_model(setup, spw, geo, key.array, nchan=nchan, rows=rows,
                                  nscales=None if scales is None else max(1, len(scales)),
                                  clean_sigma=spec.thresholds.clean_sigma,
                                  nomask_sigma=spec.thresholds.nomask_sigma)
    # earlier runs of this image and of this run (faust_hpc.costfit): measured sizes, calibration
    return costfit.learned_for(spec).apply(key.path, model, counted_rows=rows is not None)


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


_REPLANNED_KINDS = ("chunk", "beam", "post", "concat")   # what a prepare's real chunk count re-shapes


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


def _concat_units(key: ImageKey, model: ImageModel, nchunks: int, posts: list[Unit],
                  groups: list[tuple[int, int]] | None = None) -> list[Unit]:
    """One concat unit per group of final image extensions (after every post):
    ``groups`` forces the ``(first extension, count)`` grouping (tests); by
    default :func:`costmodel.concat_groups`."""
    groups = costmodel.concat_groups(model, nchunks) if groups is None else groups
    units = []
    for index, (first, count) in enumerate(groups):
        est = costmodel.concat_estimate(model, nchunks, FINAL_PRODUCT_EXTS[first:first + count])
        units.append(Unit(id=key.unit_id(concat_part(index, len(groups))), kind="concat", key=key,
                          deps=tuple(p.id for p in posts), cost=est.cost, mem_gb=est.mem_gb, out_gb=est.out_gb,
                          nchunks=nchunks, params=(("ext_start", first), ("ext_count", count))))
    return units


def _finishing_units(key: ImageKey, model: ImageModel, chunks: list[Unit], chunks_per_post: int | None = None,
                     concat_groups: list[tuple[int, int]] | None = None) -> list[Unit]:
    """Beam, posts and concats of an image (what its chunk count shapes)."""
    posts = _post_units(key, model, chunks, chunks_per_post)
    return [*posts, *_concat_units(key, model, len(chunks), [u for u in posts if u.kind == "post"], concat_groups)]


def _key_units(key: ImageKey, model: ImageModel, nchunks: int, chunks_per_post: int | None = None,
               concat_groups: list[tuple[int, int]] | None = None) -> list[Unit]:
    prep = costmodel.prepare_estimate(model)
    prepare = Unit(id=key.unit_id("prepare"), kind="prepare", key=key, cost=prep.cost, mem_gb=prep.mem_gb,
                   nchunks=nchunks)
    chunks = _chunk_units(key, model, nchunks, prepare.id)
    finishing = _finishing_units(key, model, chunks, chunks_per_post, concat_groups)
    check = costmodel.final_check_estimate(model)
    finalize = Unit(id=key.unit_id("finalize"), kind="finalize", key=key,
                    deps=tuple(u.id for u in finishing if u.kind == "concat"), cost=check.cost, mem_gb=check.mem_gb)
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


def _critical_path_binds(sim: SimResult) -> bool:
    """The tight bound (critical path, or one image's own chain) is above total work / P:
    what finer chunks can still buy is bounded by that chain, not by the total work."""
    return sim.tight_lower_bound >= (1.0 + AUTO_MAKESPAN_SLACK) * sim.total_cost / sim.workers


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
    tried: dict[float, tuple[float, int, dict[str, int], bool]] = {}
    simulated: dict[tuple[int, ...], tuple[float, int, dict[str, int], bool]] = {}  # by the counts they give

    def trial(per_worker: float) -> tuple[float, int, dict[str, int], bool]:
        """(makespan, units, counts, binds) of one granularity (see :func:`_critical_path_binds`)."""
        if per_worker not in tried:
            target = max(base / (workers * per_worker), AUTO_MIN_TARGET_OVERHEADS * costmodel.UNIT_OVERHEAD_S)
            counts_k = dict(counts)
            for key in auto:
                counts_k[key.path] = fewest_chunks_within(models[key.path], target, node_memory_gb)
            signature = tuple(counts_k[key.path] for key in auto)
            if signature not in simulated:   # another granularity gave the same chunks: same answer
                plan = _assemble(keys, models, counts_k, False, workers, node_memory_gb)
                # workers per node are unknown at plan time: the budget caps each chunk, not concurrency
                sim = simulate_schedule(plan, workers, timeline=False)
                simulated[signature] = (round(sim.makespan, 6), len(plan.units), counts_k, _critical_path_binds(sim))
            tried[per_worker] = simulated[signature]
        return tried[per_worker]

    # coarse: doubling granularity until the critical path binds (and the last doubling
    # bought less than the slack), chunks would be overhead-dominated, or the predicted
    # makespan got worse twice in a row; then refine around the best
    per_worker, worse, previous = 1.0, 0, math.inf
    while True:
        makespan, units, _, binds = trial(per_worker)
        best_score = min(v[:2] for v in tried.values())
        worse = worse + 1 if (makespan, units) > best_score else 0
        if (binds and previous - makespan < AUTO_MAKESPAN_SLACK * previous) or worse >= 2 or \
                per_worker >= AUTO_MAX_CHUNKS_PER_WORKER or \
                base / (workers * per_worker) <= AUTO_MIN_TARGET_OVERHEADS * costmodel.UNIT_OVERHEAD_S:
            break
        previous = makespan
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
