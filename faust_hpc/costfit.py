"""Cost constants learned from earlier runs.

:mod:`faust_hpc.costmodel` predicts a unit's seconds from constants measured
by hand on one reference machine and from nominal FAUST sizes. A product
directory that has run before knows better: every done record keeps the
unit's wall time (``elapsed``) and, from the executor, its stage times and
sizes (:class:`~faust_hpc.run.records.UnitCost`). This module turns those
records into a correction the model applies to every estimate
(:attr:`costmodel.ImageModel.calibration`), and into the sizes the plan uses
instead of the catalog's (:data:`SIZE_FIELDS`: the channels the prepare unit
found in the common coverage, pixels per plane, and visibility rows per
channel in place of the nominal FAUST counts).

The form, and why
-----------------
Per unit kind (the kind an estimate function calibrates under,
:func:`costmodel.estimate_kind`: moments and QA share one estimate, so one
correction)::

    seconds = offset + scale x work        work = model cost - UNIT_OVERHEAD_S

``seconds`` is the record's ``elapsed``: the whole unit as the scheduler
waits for it, child process start included.

* The model's *shape* (channels x pixels x major cycles, emission, visibility
  counts) is physics and stays; what differs between machines and software
  versions is how fast that work goes (``scale``: CPU, disks, threads) and
  what a unit costs besides it (``offset``: process start and CASA import --
  seconds with a warm fork server, 15 s assumed -- MS open, tclean set-ups,
  file I/O the model does not count). Two numbers per kind, each with that
  meaning, and predictions for sizes never run still scale with the model.
* Robust: medians, not least squares. A unit slowed by a busy neighbour or a
  slow filesystem is an outlier, not a trend. The slope is Theil-Sen's (the
  median of the slopes between pairs of units of one kind), counted only over
  pairs whose model work differs by :data:`SLOPE_SPREAD` of the kind's typical
  cost, and only when there are :data:`MIN_SLOPE_PAIRS` of them even without
  the unit in most pairs (one unit of another size must not decide it); else the
  slope all kinds share (the machine's speed); else -- units of one size
  only, e.g. equal chunks -- the smallest relative change of (offset, scale)
  that meets the measured median (the mismatch goes to the overhead when the
  model says the unit is mostly overhead, to the scale when it is mostly
  work). The offset is then the median of ``seconds - scale x work``.
* One done unit of a kind (:data:`MIN_SAMPLES`) is enough to move its offset:
  it is a measurement on this machine, the model's constant one on another
  (bounded by :data:`OFFSET_BOUNDS` and :data:`SCALE_BOUNDS`, so no record can
  make a unit free or absurd). A kind with no done unit keeps the model.
* Deterministic: the samples are sorted, large sets are thinned by rank, and
  the constants are rounded; the same manifest gives the same constants.

Where the history comes from
----------------------------
``[scheduler] learn_costs`` (default true): this product directory's
manifest, when it has done units, and the manifests named by
``learn_from`` (product directories of other runs; their units are modelled
with the run file their own run record names, or this one if it cannot be
read). The model cost of a recorded unit is that run's plan, rebuilt without
calibration and with the measured sizes, so that fit and plan use one model
(sizes first, then the constants: a correction fitted against the catalog's
2000 channels would not carry over to an image whose size is known).

What it changes: the plan's unit costs (scheduling priorities, predicted
makespans, ETAs) and ``nchunks = "auto"``. The first run of a product dir
freezes its chunk counts in its manifest, so learning changes the chunk
counts of later runs only for images not frozen yet; for the others it
changes costs, not chunks.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from faust_hpc import costmodel
from faust_hpc.costmodel import UNIT_OVERHEAD_S, Calibration
from faust_hpc.layout import RunLayout
from faust_hpc.run.manifest import Manifest, derive_states
from faust_hpc.run.records import RunEvent, RunRecord, UnitCost, UnitEvent, UnitRecord, UnitStatus

log = logging.getLogger(__name__)

MIN_SAMPLES = 1
"""Done units of a kind before its constants move off the model."""
MIN_SLOPE_PAIRS = 3
"""Pairs of units (of one kind, with different model work) before a slope is
fitted -- counted without the unit that is in most pairs."""
SLOPE_SPREAD = 0.25
"""A pair counts for the slope only if its model work differs by this share of
the kind's median model cost: closer pairs measure noise, not a trend."""
SCALE_BOUNDS = (0.05, 20.0)
"""How much faster or slower than the reference machine the work may go."""
OFFSET_BOUNDS = (0.0, 40 * UNIT_OVERHEAD_S)
"""Seconds a unit may cost besides the modelled work."""
MAX_FIT_SAMPLES = 512
"""Per kind, larger sample sets are thinned evenly by rank (pairs grow as n^2)."""


@dataclass(frozen=True)
class Sample:
    """One done unit: its estimate kind, the model's work term, the measured seconds."""

    kind: str
    work: float
    seconds: float
    unit: str = ""


@dataclass(frozen=True)
class KindFit:
    """The correction of one kind: ``seconds = offset + scale x work`` from ``n`` units;
    ``method``: "slope" (its own), "shared slope" (all kinds'), "nearest" (one size only)."""

    kind: str
    offset: float
    scale: float
    n: int
    method: str

    def predict(self, work: float) -> float:
        return self.offset + self.scale * work


SIZE_FIELDS = ("nchan", "npix", "rows")
"""What a prepare unit measures of its image, by :class:`costmodel.ImageModel` field:
channels imaged (the common coverage or window), pixels per plane, visibility
rows per channel."""


@dataclass(frozen=True)
class Learned:
    """What the history taught: the model's calibration, and the measured sizes
    of each image (key path -> ImageModel field -> value) that replace the
    catalog's channel counts and the nominal visibility counts."""

    fits: tuple[KindFit, ...] = ()
    sizes: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    sources: tuple[str, ...] = ()
    samples: int = 0

    @property
    def calibration(self) -> Calibration:
        return tuple((f.kind, f.offset, f.scale) for f in self.fits)

    def apply(self, key_path: str, model: costmodel.ImageModel, counted_rows: bool = False) -> costmodel.ImageModel:
        """``model`` with this image's measured sizes (visibility rows only when
        the caller has not counted them itself) and the calibration."""
        sizes = {k: float(v) if k == "rows" else int(v) for k, v in self.sizes.get(key_path, {}).items()
                 if not (counted_rows and k == "rows")}
        if not (sizes or self.fits):
            return model
        return dataclasses.replace(model, **sizes, calibration=self.calibration, nominal=model.as_planned)


NOTHING = Learned()


# ----------------------------------------------------------------------------
# Fitting (pure)
# ----------------------------------------------------------------------------

def _median(values: Iterable[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("median of nothing")
    mid = n // 2
    return ordered[mid] if n % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def _thin(samples: list[Sample]) -> list[Sample]:
    if len(samples) <= MAX_FIT_SAMPLES:
        return samples
    step = (len(samples) - 1) / (MAX_FIT_SAMPLES - 1)
    return [samples[round(i * step)] for i in range(MAX_FIT_SAMPLES)]


def _pair_slopes(samples: list[Sample]) -> list[float]:
    """Theil-Sen slopes between units of one kind whose work differs enough;
    none unless :data:`MIN_SLOPE_PAIRS` remain without any one unit (a single
    unit of another size would otherwise decide the slope with its noise)."""
    spread = SLOPE_SPREAD * (UNIT_OVERHEAD_S + _median(s.work for s in samples))
    slopes = []
    involved = [0] * len(samples)
    for i, a in enumerate(samples):
        for j in range(i + 1, len(samples)):
            b = samples[j]
            dw = b.work - a.work
            if abs(dw) >= spread:
                slopes.append((b.seconds - a.seconds) / dw)
                involved[i] += 1
                involved[j] += 1
    return slopes if len(slopes) - max(involved, default=0) >= MIN_SLOPE_PAIRS else []


def _nearest_scale(samples: list[Sample]) -> float:
    """Units of one size: the smallest relative change of (overhead, scale) that
    meets the median, ``min u^2 + v^2`` with ``O (1 + u) + W (1 + v) = seconds``."""
    work = _median(s.work for s in samples)
    seconds = _median(s.seconds for s in samples)
    resid = seconds - UNIT_OVERHEAD_S - work
    return 1.0 + resid * work / (UNIT_OVERHEAD_S ** 2 + work ** 2)


def fit(samples: Iterable[Sample]) -> dict[str, KindFit]:
    """Per kind, the correction of the model (see the module doc); kinds with
    fewer than :data:`MIN_SAMPLES` usable samples are left out."""
    by_kind: dict[str, list[Sample]] = {}
    for s in samples:
        if math.isfinite(s.work) and math.isfinite(s.seconds) and s.seconds >= 0 and s.work >= 0:
            by_kind.setdefault(s.kind, []).append(s)
    groups = {k: _thin(sorted(v, key=lambda s: (s.work, s.seconds, s.unit)))
              for k, v in sorted(by_kind.items()) if len(v) >= MIN_SAMPLES}
    slopes = {k: _pair_slopes(v) for k, v in groups.items()}
    shared = sorted(x for v in slopes.values() for x in v)
    fits: dict[str, KindFit] = {}
    for kind, group in groups.items():
        if len(slopes[kind]) >= MIN_SLOPE_PAIRS:
            scale, method = _median(slopes[kind]), "slope"
        elif len(shared) >= MIN_SLOPE_PAIRS:
            scale, method = _median(shared), "shared slope"
        else:
            scale, method = _nearest_scale(group), "nearest"
        scale = _clamp(scale, SCALE_BOUNDS)
        offset = _clamp(_median(s.seconds - scale * s.work for s in group), OFFSET_BOUNDS)
        fits[kind] = KindFit(kind, round(offset, 3), float(f"{scale:.6g}"), len(by_kind[kind]), method)
    return fits


# ----------------------------------------------------------------------------
# Records -> samples
# ----------------------------------------------------------------------------

_FITTING: ContextVar[Learned | None] = ContextVar("faust_hpc_costfit_fitting", default=None)
"""While :func:`learn` builds the plans of the history: the measured sizes, no calibration."""


def without_learning(spec: Any) -> Any:
    """The same run spec with ``learn_costs`` off: the model's own plan."""
    return dataclasses.replace(spec, scheduler=dataclasses.replace(spec.scheduler, learn_costs=False,
                                                                   learn_from=()))


def _done_records(records: Iterable[dict]) -> list[UnitRecord]:
    """Done unit records with a measured wall time (failed, interrupted and
    unfinished attempts measure nothing)."""
    out = []
    for raw in records:
        if raw.get("event") == UnitEvent.DONE and raw.get("unit") is not None and raw.get("elapsed") is not None:
            out.append(UnitRecord.from_json(raw))
    return out


def measured_sizes(records: Iterable[dict]) -> dict[str, dict[str, float]]:
    """:data:`SIZE_FIELDS` by image key path, as the done prepare units measured them."""
    sizes: dict[str, dict[str, float]] = {}
    for rec in _done_records(records):
        cost = UnitCost.of(rec.info)
        if cost is None or not rec.unit.endswith("/prepare"):
            continue
        found = {name: getattr(cost, name) for name in SIZE_FIELDS}
        found = {k: float(v) for k, v in found.items() if isinstance(v, (int, float)) and v > 0}
        if found:
            sizes[rec.unit.rsplit("/", 1)[0]] = found
    return sizes


def model_plan(spec: Any, product_dir: Path, records: list[dict], calibrated: bool = False) -> Any:
    """The plan the units of ``product_dir`` (its ``records``) ran under: the
    frozen chunk counts, grown by the done prepares; the model's own costs
    (``calibrated=False``), or what the spec's plan predicts now. While
    :func:`learn` runs, the plan has the measured sizes and no calibration."""
    from faust_hpc.plan import build_plan
    from faust_hpc.run.resume import apply_done_prepares

    frozen = Manifest(product_dir).frozen_nchunks(records)
    counts = {key.path: frozen.get(key.path, 1) for key in spec.image_keys()}  # no "auto" search
    plan = build_plan(spec if calibrated else without_learning(spec), frozen_nchunks=counts)
    apply_done_prepares(plan, derive_states(records))
    return plan


def samples_from_records(spec: Any, product_dir: Path, records: list[dict]) -> list[Sample]:
    """One sample per done record (of ``product_dir``) of a unit the spec's plan
    knows; the model's work term with the sizes measured so far (:func:`learn`)."""
    done = _done_records(records)
    if not done:
        return []
    plan = model_plan(spec, product_dir, records, calibrated=True)
    samples = []
    for rec in done:
        unit = plan.units.get(rec.unit)
        if unit is not None:
            samples.append(Sample(costmodel.estimate_kind(unit.kind), max(unit.cost - UNIT_OVERHEAD_S, 0.0),
                                  float(rec.elapsed), rec.unit))
    return samples


# ----------------------------------------------------------------------------
# History of a run spec
# ----------------------------------------------------------------------------

def history_dirs(spec: Any) -> list[Path]:
    """This product dir (if it has records) and the ``learn_from`` ones, in that order."""
    own = Path(spec.product_dir)
    dirs = [own] if RunLayout(own).manifest_path.is_file() else []
    return dirs + [p for p in spec.scheduler.learn_from if p != own]


def _spec_of(product_dir: Path, spec: Any, records: list[dict]) -> Any:
    """The run spec a product dir's units were planned with: this one for this
    product dir, else the run file its latest run record names (this one if
    that cannot be read)."""
    from faust_hpc.runfile import load_runfile

    if product_dir == Path(spec.product_dir):
        return spec
    runs = [RunRecord.from_json(r) for r in records if r.get("event") == RunEvent.RUN]
    named = next((r.runfile for r in reversed(runs) if r.runfile), None)
    if named:
        try:
            return load_runfile(named, check_paths=False)
        except Exception as exc:  # noqa: BLE001 - a moved run file: model its units with this spec
            log.warning("learn_from %s: cannot read its run file (%s); modelling its units with %s",
                        product_dir, exc, spec.path.name)
    return spec


_CACHE: dict[Any, Learned] = {}


def learn(spec: Any) -> Learned:
    """Fit the history of ``spec`` (uncached; see :func:`learned_for`)."""
    samples: list[Sample] = []
    sizes: dict[str, dict[str, float]] = {}
    sources = []
    loaded = [(path, Manifest(path).records()) for path in history_dirs(spec)]
    for _, records in reversed(loaded):          # own history last: its measurements win
        sizes.update(measured_sizes(records))
    token = _FITTING.set(Learned(sizes=sizes))
    try:
        for path, records in loaded:
            found = samples_from_records(_spec_of(path, spec, records), path, records)
            if found:
                sources.append(str(path))
                samples += found
    finally:
        _FITTING.reset(token)
    fits = fit(samples)
    if fits:  # debug: every command that plans learns (status, rerun ...); `faust-hpc plan` shows the table
        log.debug("learned costs from %d units of %d run(s): %s", len(samples), len(sources),
                 ", ".join(f"{f.kind} {f.offset:.1f} s + {f.scale:.3g} x work" for f in fits.values()))
    return Learned(tuple(fits.values()), sizes, tuple(sources), len(samples))


def _stamp(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
        return str(path), st.st_size, st.st_mtime_ns
    except OSError:
        return str(path), -1, -1


def learned_for(spec: Any) -> Learned:
    """What the plan of ``spec`` uses: :func:`learn`, cached per spec and
    manifest state; :data:`NOTHING` with ``learn_costs = false``."""
    fitting = _FITTING.get()
    if fitting is not None:        # a plan of the history being fitted (any run file's)
        return fitting
    if not spec.scheduler.learn_costs:
        return NOTHING
    paths = [RunLayout(d).manifest_path for d in (spec.product_dir, *spec.scheduler.learn_from)]
    try:
        key = (spec, tuple(_stamp(p) for p in paths))
        hash(key)
    except TypeError:
        return learn(spec)
    if key not in _CACHE:
        if len(_CACHE) > 16:
            _CACHE.clear()
        _CACHE[key] = learn(spec)
    return _CACHE[key]


# ----------------------------------------------------------------------------
# Predicted vs actual (faust-hpc plan)
# ----------------------------------------------------------------------------

def _stats(values: list[float]) -> dict[str, float]:
    return {"median": round(_median(values), 1), "total": round(sum(values), 1)} if values else {}


def compare(spec: Any) -> dict[str, Any]:
    """Per unit kind, over this product dir's done units (latest done record of
    each): the model's prediction, the learned one, the measured seconds."""
    own = Path(spec.product_dir)
    learned = learned_for(spec)
    out: dict[str, Any] = {
        "learn_costs": bool(spec.scheduler.learn_costs),
        "sources": list(learned.sources), "samples": learned.samples,
        "fits": {f.kind: dataclasses.asdict(f) for f in learned.fits},
        "measured_sizes": {k: dict(v) for k, v in sorted(learned.sizes.items())},
        "by_kind": {},
    }
    records = Manifest(own).records()
    latest = {r.unit: r for r in _done_records(records)}
    states = derive_states(records)
    latest = {uid: r for uid, r in latest.items() if states[uid].status == UnitStatus.DONE}
    if not latest:
        return out
    model = model_plan(spec, own, records)
    learned_plan = model_plan(spec, own, records, calibrated=True)
    rows: dict[str, dict[str, list[float]]] = {}
    for uid, rec in sorted(latest.items()):
        unit, cal = model.units.get(uid), learned_plan.units.get(uid)
        if unit is None or cal is None:
            continue
        row = rows.setdefault(unit.kind, {"model": [], "learned": [], "actual": []})
        row["model"].append(unit.cost)
        row["learned"].append(cal.cost)
        row["actual"].append(float(rec.elapsed))
    for kind, row in rows.items():
        out["by_kind"][kind] = {"count": len(row["actual"]), **{name: _stats(vals) for name, vals in row.items()},
                                "error_model": round(log_error(row["model"], row["actual"]), 3),
                                "error_learned": round(log_error(row["learned"], row["actual"]), 3)}
    return out


def log_error(predicted: Iterable[float], actual: Iterable[float]) -> float:
    """Mean |ln(predicted / actual)|: 0.69 = off by a factor 2 on average, either way."""
    pairs = [(p, a) for p, a in zip(predicted, actual) if p > 0 and a > 0]
    return sum(abs(math.log(p / a)) for p, a in pairs) / len(pairs) if pairs else 0.0


__all__ = ["Sample", "KindFit", "Learned", "NOTHING", "fit", "learn", "learned_for", "compare", "log_error",
           "samples_from_records", "measured_sizes", "model_plan", "history_dirs", "without_learning",
           "MIN_SAMPLES", "MIN_SLOPE_PAIRS", "SLOPE_SPREAD", "SCALE_BOUNDS", "OFFSET_BOUNDS"]
