"""Run files: TOML -> a validated, immutable :class:`RunSpec`.

A run file says *what* to image (fields, Setup, SPWs, weightings, arrays,
geometry overrides, per-SPW tclean overrides) and *where* (data and product
directories), plus scheduler settings. Everything is checked here, before any
work starts, because a typo found after six hours of tclean is six hours lost:

- unknown tables/keys (with a did-you-mean and the allowed keys),
- wrong types (``setup = "1"``),
- unknown field names and SPW labels (did-you-mean via :func:`catalog.suggest`),
- a run file's own ``[target."NAME"]`` (MS field name, ``data``, ``vsys_kms``,
  optional ``ra``/``dec``) and ``[window."LABEL"]`` (``restfreq``, ``spw`` id
  or name, ``kind``, ``line_vwin``) tables: required keys, values, names that
  file names can carry, no redefinition of a FAUST name. They join the
  catalog of the loading process (:func:`catalog.register_run_entries`; an
  unpickled :class:`RunSpec` registers them too), so a run of them needs no
  ``setup`` and uses array kind ``all``,
- SPW labels of another Setup, 7m/joint requested for Setup 3, a
  ``[spw."LABEL"]`` table for an SPW the run does not select,
- a whole program in one file: ``setup`` is one Setup, an array of them or
  ``"all"``; ``fields = "all"`` is every FAUST target; ``spws = "all"`` each
  Setup's SPWs; ``arrays = ["default"]`` each Setup's own kind (joint for
  Setups 1-2, 12m for Setup 3), an explicit kind must suit every Setup named;
  each Setup must have an SPW selected, and a run file's window (no Setup of
  its own) needs a run of one Setup. An image key's Setup is its SPW's
  (:meth:`RunSpec.setup_of`),
- absurd numbers: every number must be finite and within what makes sense
  (the bounds below: retries, worker and thread counts, image size against
  memory, cell against the field of view, velocities below c),
- missing or unreadable ``data_dir``, unwritable ``product_dir`` (checked by
  creating and removing a probe file, so nothing is left behind),
- TOML syntax errors (tomllib's message carries line and column),
- a ``[scheduler] learn_from`` entry that is not a product directory with run
  records (checked with or without ``check_paths``: ``plan`` learns from it).

Every error is a :class:`~faust_hpc.errors.RunFileError` whose message is one
line that starts with the run file's name and names the offending key, e.g.
``setup1.toml: [spw."244.936GHz_CSS"] unknown SPW label; did you mean "244.936GHz_CS"?``.
Loading never writes anything.

``load_runfile(path, check_paths=False)`` skips the filesystem checks so that
``faust-hpc plan`` can plan from the catalog alone on a laptop without data.
"""
from __future__ import annotations

import math
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from faust_hpc import catalog, costmodel
from faust_hpc.errors import RunFileError, UserInputError
from faust_hpc.geometry import ARRAY_KINDS, check_array_kind, geometry_for, imsize_for
from faust_hpc.layout import RunLayout
from faust_hpc.spectral import C_KMS
from faust_hpc.units import ImageKey, format_weighting

IMAGING_EXECUTOR = "faust_hpc.execute:run_unit"
"""The default ``[scheduler] executor``: the FAUST imaging units (CASA)."""
NCHUNKS_WORDS = ("default", "auto")
SETUP_WORDS = ("all",)
FIELD_WORDS = ("all",)
ARRAY_WORDS = ("default",)
"""``arrays = ["default"]``: each Setup's own default kind (:func:`catalog.default_array`)."""
WEIGHTING_WORDS = ("natural", "uniform")
SPW_SELECTION_WORDS = ("all", "lines")

_TOP_TABLES = ("run", "imaging", "spw", "scheduler", "target", "window")
_TARGET_KEYS = ("data", "vsys_kms", "ra", "dec")
_WINDOW_KEYS = ("restfreq", "spw", "kind", "line_vwin")
_RUN_KEYS = ("name", "data_dir", "product_dir", "casa_data_dir")
_IMAGING_KEYS = ("fields", "setup", "spws", "weightings", "arrays", "fullcube", "line_vwin", "ext",
                 "nchunks", "oversample", "cell_arcsec", "imsize", "nomask_sigma",
                 "seedmask_sigma", "clean_sigma", "preserve_all_intermediate_products",
                 "image_last_covered_channel")
_SPW_KEYS = ("nchunks", "rms", "gain", "cyclefactor", "scales", "mask_ang_scales",
             "smallscalebias", "uvtaper", "automask", "moments_vwin_kms")
_SCHEDULER_KEYS = ("retries", "unit_timeout_s", "node_memory_gb", "workers", "threads_per_unit",
                   "executor", "learn_costs", "learn_from", "lease_s", "warm_start")
# Bounds of numbers (see the module doc): what makes sense, so that nothing absurd reaches CASA.
MAX_RETRIES = 100
"""More attempts than this repeat one failure for hours; fix the cause instead."""
MAX_WORKERS = 100_000
MAX_THREADS_PER_UNIT = 1024
MAX_IMSIZE = 16384
"""Pixels per image side: one tclean channel of 16384^2 float32 pixels already
needs ~19 GB (:func:`costmodel.channel_memory_gb`); FAUST images are 1350-3600 px."""
MIN_CELL_ARCSEC = 1e-3
"""1 mas: a fifth of ALMA's finest synthesized beam."""
MIN_PIXELS_ACROSS_FOV = 8
"""A cell wider than 1/8 of the field of view (2 x the primary beam) images nothing."""
MAX_SIGMA = 1000.0
"""Thresholds and auto-multithresh factors in units of the noise (or fractions)."""
MAX_CYCLEFACTOR = 100.0
MAX_AUTOMASK_INT = 100_000
_IMSIZE_WHY = (f" (one tclean channel of {MAX_IMSIZE} px needs "
               f"{costmodel.channel_memory_gb(MAX_IMSIZE ** 2):.0f} GB)")
_EXT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_EXECUTOR_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_NAME_RE = re.compile(r"^[^/\x00]+$")
# A run file's target or window name becomes part of file names and unit ids: no "/",
# no white space, and no "_" token that reads as an array kind or a chunk tag.
_ENTRY_NAME_RE = re.compile(r"^[A-Za-z0-9+.-][A-Za-z0-9_+.-]*$")
_RESERVED_TOKEN_RE = re.compile(rf"^(?:{'|'.join(ARRAY_KINDS)}|chunk\d+)$")


# ----------------------------------------------------------------------------
# The validated, immutable result
# ----------------------------------------------------------------------------

class FrozenDict(dict):
    """A read-only, hashable dict (so a RunSpec can be hashed and shared)."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("run-file settings are read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]

    def __ior__(self, other: Any) -> "FrozenDict":  # type: ignore[override]
        raise TypeError("run-file settings are read-only")

    def __reduce__(self) -> tuple[Any, ...]:  # pickle/deepcopy without __setitem__
        return (FrozenDict, (dict(self),))


@dataclass(frozen=True)
class GeometryOverrides:
    """Optional geometry overrides (None = the documented rule)."""

    oversample: float | None = None
    cell_arcsec: float | None = None
    imsize: int | None = None


@dataclass(frozen=True)
class Thresholds:
    """The pipeline's sigma thresholds (defaults from the facts' [imaging])."""

    nomask_sigma: float
    seedmask_sigma: float
    clean_sigma: float


@dataclass(frozen=True)
class SpwOverrides:
    """Per-SPW overrides from ``[spw."LABEL"]``; None means "pipeline default".

    ``automask`` holds only the auto-multithresh keys the user set (empty dict =
    none); the imaging layer merges them over the array's defaults.
    """

    nchunks: int | str | None = None
    rms: float | None = None
    gain: float | None = None
    cyclefactor: float | None = None
    scales: tuple[int, ...] | None = None
    mask_ang_scales: tuple[float, ...] | None = None
    smallscalebias: float | None = None
    uvtaper: tuple[str, ...] | None = None
    automask: Mapping[str, Any] = field(default_factory=FrozenDict)
    moments_vwin_kms: float | None = None


@dataclass(frozen=True)
class SchedulerSettings:
    """``[scheduler]``: retry/timeout policy, node memory budget, chunk-sizing hint."""

    retries: int = 2
    unit_timeout_s: float = 0.0        # 0 = no timeout
    node_memory_gb: float = 0.0        # 0 = detect (MemTotal of the node)
    workers: int = 16                  # hint for nchunks = "auto"
    # 1 by default: multi-threaded gridding sums in a thread-dependent order, so a
    # fixed count keeps products bit-identical on 1 rank, N ranks or a resume;
    # 0 = node cores / ranks on that node (fewer ranks, more threads each).
    threads_per_unit: int = 1
    executor: str = IMAGING_EXECUTOR
    # costs learned from earlier runs (faust_hpc.costfit): this product dir's history, and
    # the product dirs of ``learn_from`` (absolute paths)
    learn_costs: bool = True
    learn_from: tuple[Path, ...] = ()
    # a launcher that stops renewing its claims for this long is dead: others take its units
    lease_s: float = 120.0
    # Units fork from a per-worker server with CASA preloaded (launcher/forkserver.py);
    # false = a fresh Python process per unit (~2 s more per unit).
    warm_start: bool = True


@dataclass(frozen=True)
class RunSpec:
    """A validated run file. Paths are absolute; tuples keep it immutable."""

    path: Path
    name: str
    data_dir: Path
    product_dir: Path
    casa_data_dir: Path | None
    fields: tuple[str, ...]
    # the FAUST Setups imaged, in run-file order; () = none (only the run file's own
    # targets in its own windows). An image key's Setup: setup_of(label).
    setups: tuple[int, ...]
    spw_labels: tuple[str, ...]
    weightings: tuple[float | str, ...]
    arrays: tuple[str, ...]
    fullcube: bool
    line_vwin: str
    ext: str
    nchunks: int | str                 # "default" | "auto" | int
    geometry: GeometryOverrides
    thresholds: Thresholds
    preserve_all_intermediate_products: bool
    scheduler: SchedulerSettings
    spw_settings: tuple[tuple[str, SpwOverrides], ...] = ()
    # opt-in: image the last fully covered channel too (the original leaves it out)
    image_last_covered_channel: bool = False
    # the run file's own [target."NAME"] and [window."LABEL"] tables (registered in the
    # catalog by load_runfile, so every lookup of this process knows them)
    targets: tuple[catalog.Target, ...] = field(default=(), hash=False)
    windows: tuple[catalog.Spw, ...] = field(default=(), hash=False)

    def __post_init__(self) -> None:
        self.register()

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A spec unpickled in another process (a unit's child) brings its names along."""
        self.__dict__.update(state)
        self.register()

    def register(self) -> None:
        """Make this run file's targets and windows known to this process's catalog."""
        if self.targets or self.windows:
            catalog.register_run_entries(self.targets, self.windows)

    @property
    def setup(self) -> int:
        """The run's one Setup (:data:`catalog.WINDOW_SETUP` if none). A run of several
        Setups has no one Setup: an image's is :meth:`setup_of` its SPW label."""
        if len(self.setups) > 1:
            raise ValueError(f"{self.path.name} images Setups {', '.join(map(str, self.setups))}: "
                             f"ask setup_of(label) for an image's Setup")
        return self.setups[0] if self.setups else catalog.WINDOW_SETUP

    @property
    def window_setup(self) -> int:
        """The Setup a run file's window is imaged in: the run's one Setup (the run file
        refuses windows with several), else :data:`catalog.WINDOW_SETUP`."""
        return window_setup_of(self.setups)

    def setup_of(self, label: str) -> int:
        """The Setup of every image of SPW ``label`` in this run (its data directory
        ``<FIELD>-Setup<N>``, geometry, cost model)."""
        return catalog.setup_of_label(label, self.window_setup)

    def arrays_for(self, label: str) -> tuple[str, ...]:
        """The array kinds SPW ``label`` is imaged with: ``arrays`` with ``"default"``
        resolved for its Setup (:func:`catalog.default_array`), in run-file order."""
        return resolve_arrays(self.arrays, self.setup_of(label))

    def spw_overrides(self, label: str) -> SpwOverrides:
        """The overrides of one SPW (all None when the run file has none)."""
        for name, overrides in self.spw_settings:
            if name == label:
                return overrides
        return SpwOverrides()

    def nchunks_for(self, label: str) -> int | str:
        """Per-SPW ``nchunks`` if set, else the run-wide value."""
        per_spw = self.spw_overrides(label).nchunks
        return self.nchunks if per_spw is None else per_spw

    def image_keys(self) -> list[ImageKey]:
        """One key per (field, SPW, array, weighting), in run-file order (the SPWs
        Setup by Setup; each SPW with the array kinds of its Setup)."""
        arrays = {label: self.arrays_for(label) for label in self.spw_labels}
        return [ImageKey(f, label, array, format_weighting(w))
                for f in self.fields for label in self.spw_labels
                for array in arrays[label] for w in self.weightings]


def window_setup_of(setups: tuple[int, ...]) -> int:
    """A run file's window is imaged in the run's one Setup (several are refused with a
    window), else in none (:data:`catalog.WINDOW_SETUP`)."""
    return setups[0] if len(setups) == 1 else catalog.WINDOW_SETUP


def resolve_arrays(arrays: tuple[str, ...], setup: int) -> tuple[str, ...]:
    """Array kinds of one Setup's images: ``"default"`` -> :func:`catalog.default_array`."""
    return tuple(dict.fromkeys(catalog.default_array(setup) if kind in ARRAY_WORDS else kind for kind in arrays))


# ----------------------------------------------------------------------------
# Validation helpers: each raises RunFileError with "<file>: [table] key: ..."
# ----------------------------------------------------------------------------

def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


class _Checker:
    """Formats messages with the run file's name and the current table."""

    def __init__(self, path: Path) -> None:
        self.fname = path.name
        self.base = path.parent

    def fail(self, where: str, message: str) -> RunFileError:
        prefix = f"{self.fname}: {where}" if where else f"{self.fname}:"
        return RunFileError(f"{prefix} {message}".replace("\n", " "))

    def unknown_keys(self, where: str, table: Mapping[str, Any], allowed: tuple[str, ...],
                     what: str = "key") -> None:
        for key in table:
            if key not in allowed:
                hint = catalog.suggest(key, allowed)
                did = f' did you mean "{hint}"?' if hint else ""
                raise self.fail(where, f'unknown {what} "{key}";{did} allowed: {", ".join(allowed)}')

    def table(self, where: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a table, got {_type_name(value)} {_show(value)}")
        return value

    def string(self, where: str, key: str, value: Any, nonempty: bool = True) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"{key}: expected a string, got {_type_name(value)} {_show(value)}")
        if nonempty and not value.strip():
            raise self.fail(where, f"{key}: must not be empty")
        return value

    def boolean(self, where: str, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"{key}: expected true or false, got {_type_name(value)} {_show(value)}")
        return value

    def integer(self, where: str, key: str, value: Any, minimum: int | None = None,
                maximum: int | None = None, why: str = "") -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"{key}: expected an integer, got {_type_name(value)} {_show(value)}")
        if minimum is not None and value < minimum:
            raise self.fail(where, f"{key}: must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self.fail(where, f"{key}: must be <= {maximum}{why}, got {value}")
        return value

    def number(self, where: str, key: str, value: Any, minimum: float | None = None,
               positive: bool = False, maximum: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
            raise self.fail(where, f"{key}: expected a number, got {_type_name(value)} {_show(value)}")
        if positive and value <= 0:
            raise self.fail(where, f"{key}: must be > 0, got {value}")
        if minimum is not None and value < minimum:
            raise self.fail(where, f"{key}: must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self.fail(where, f"{key}: must be <= {maximum}, got {value}")
        return float(value)

    def array(self, where: str, key: str, value: Any, nonempty: bool = True) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, f"{key}: expected an array, got {_type_name(value)} {_show(value)}")
        if nonempty and not value:
            raise self.fail(where, f"{key}: must not be empty")
        return value

    def nchunks(self, where: str, value: Any) -> int | str:
        if isinstance(value, str):
            if value not in NCHUNKS_WORDS:
                hint = catalog.suggest(value, NCHUNKS_WORDS)
                did = f' did you mean "{hint}"?' if hint else ""
                raise self.fail(where, f'nchunks: unknown value "{value}";{did} allowed: '
                                       f'"default", "auto" or an integer >= 1')
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f'nchunks: expected "default", "auto" or an integer >= 1, '
                                   f"got {_type_name(value)} {_show(value)}")
        if value < 1:
            raise self.fail(where, f"nchunks: must be >= 1, got {value}")
        return value


# ----------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------

def _resolve(base: Path, text: str) -> Path:
    path = Path(os.path.expandvars(os.path.expanduser(text)))
    return Path(os.path.abspath(path if path.is_absolute() else base / path))


ENV_DATA_DIR = "FAUST_DATA_DIR"


def _data_dir_override() -> Path | None:
    """A batch job that staged the MSs (e.g. into /dev/shm, see faust_hpc.batch) points every
    rank at the copy through ``FAUST_DATA_DIR``; it wins over the run file's ``data_dir``."""
    staged = os.environ.get(ENV_DATA_DIR)
    return Path(os.path.abspath(os.path.expanduser(staged))) if staged else None


def _parse_run(ck: _Checker, raw: dict[str, Any], path: Path) -> dict[str, Any]:
    where = "[run]"
    run = ck.table(where, raw.get("run", {}))
    ck.unknown_keys(where, run, _RUN_KEYS)
    base = path.parent
    name = ck.string(where, "name", run.get("name", path.stem))
    if not _NAME_RE.match(name):
        raise ck.fail(where, f'name: must not contain "/", got {_show(name)}')
    for key in ("data_dir", "product_dir"):
        if key not in run:
            raise ck.fail(where, f"{key}: missing (a directory path; relative = relative to the run file)")
    casa_data = run.get("casa_data_dir")
    return {
        "name": name,
        "data_dir": _data_dir_override() or _resolve(base, ck.string(where, "data_dir", run["data_dir"])),
        "product_dir": _resolve(base, ck.string(where, "product_dir", run["product_dir"])),
        "casa_data_dir": None if casa_data is None
        else _resolve(base, ck.string(where, "casa_data_dir", casa_data)),
    }


def _parse_fields(ck: _Checker, where: str, value: Any, own: tuple[str, ...] = ()) -> tuple[str, ...]:
    """FAUST field names and this run file's own targets (``own``); ``"all"`` = every
    FAUST target (the catalog's, in its order)."""
    if value in FIELD_WORDS:
        return tuple(catalog.ALL_FIELD_NAMES)
    items = [value] if isinstance(value, str) else ck.array(where, "fields", value)
    fields: list[str] = []
    for item in items:
        ck.string(where, "fields", item)
        if item not in own and not catalog.is_faust_field(item):
            hint = catalog.suggest(item, [*catalog.ALL_FIELD_NAMES, *own])
            did = f' did you mean "{hint}"?' if hint else \
                f" valid values: a FAUST field ({', '.join(catalog.ALL_FIELD_NAMES)}), a [target.\"NAME\"] table, " \
                f'or "all" (every FAUST field)' 
            raise ck.fail(where, f'fields: unknown field "{item}";{did}')
        if item not in fields:
            fields.append(item)
    return tuple(fields)


def _setups_text(setups: tuple[int, ...]) -> str:
    """``Setup 1`` / ``Setups 1, 2``: how messages name the Setups a run images."""
    return f"Setup {setups[0]}" if len(setups) == 1 else f"Setups {', '.join(map(str, setups))}"


def _setup_spws(setups: tuple[int, ...], windows: tuple[catalog.Spw, ...]) -> list[catalog.Spw]:
    """The SPWs a run may image: its Setups' (Setup by Setup; none without a Setup),
    then its own windows."""
    faust = [spw for setup in setups for spw in catalog.spws_for_setup(setup)]
    return [*faust, *windows]


def _parse_spws(ck: _Checker, where: str, value: Any, setups: tuple[int, ...],
                windows: tuple[catalog.Spw, ...] = ()) -> tuple[str, ...]:
    usable = _setup_spws(setups, windows)
    in_setup = [s.label for s in usable]
    if isinstance(value, str):
        if value == "all":
            return tuple(in_setup)
        if value == "lines":
            return tuple(s.label for s in usable if not s.is_continuum)
        if value in catalog.all_spw_labels():  # a single label is accepted as a 1-list
            value = [value]
        else:
            hint = catalog.suggest(value, list(SPW_SELECTION_WORDS) + in_setup)
            did = f' did you mean "{hint}"?' if hint else ""
            raise ck.fail(where, f'spws: unknown value "{value}";{did} allowed: "all", "lines" '
                                 f"or an array of SPW labels")
    labels: list[str] = []
    for item in ck.array(where, "spws", value):
        ck.string(where, "spws", item)
        _check_label_in_setup(ck, where, "spws: ", item, setups, in_setup)
        if item not in labels:
            labels.append(item)
    return tuple(labels)


def _check_label_in_setup(ck: _Checker, where: str, lead: str, label: str, setups: tuple[int, ...],
                          in_setup: list[str]) -> None:
    if label not in in_setup and label not in catalog.ALL_SPW_LABELS:
        hint = catalog.suggest(label, [*catalog.ALL_SPW_LABELS, *in_setup])
        valid = f' valid labels of {_setups_text(setups)}: {", ".join(in_setup)}' if setups \
            else f' this run file\'s windows: {", ".join(in_setup) or "none"} (define one with [window."LABEL"])'
        did = f' did you mean "{hint}"?' if hint else valid
        raise ck.fail(where, f'{lead}unknown SPW label "{label}";{did}' if lead
                      else f"unknown SPW label;{did}")
    if label in in_setup:
        return
    if not setups:
        raise ck.fail("[imaging]", f'setup: missing (the FAUST SPW "{label}" needs the integer 1, 2 or 3)')
    other = catalog.setup_of_label(label)
    raise ck.fail(where, f'{lead}SPW "{label}" belongs to Setup {other}, but this run images '
                         f'{_setups_text(setups)} (its SPWs: {", ".join(in_setup)})')


def _parse_weightings(ck: _Checker, where: str, value: Any) -> tuple[float | str, ...]:
    items = ck.array(where, "weightings", value)
    out: list[float | str] = []
    for item in items:
        if isinstance(item, str):
            if item not in WEIGHTING_WORDS:
                hint = catalog.suggest(item, WEIGHTING_WORDS)
                did = f' did you mean "{hint}"?' if hint else ""
                raise ck.fail(where, f'weightings: unknown weighting "{item}";{did} allowed: a Briggs '
                                     f'robust number in [-2, 2], "natural" or "uniform"')
            w: float | str = item
        else:
            w = ck.number(where, "weightings", item, minimum=-2.0, maximum=2.0)
        if w not in out:
            out.append(w)
    return tuple(out)


_DEFAULT_ARRAYS_WHY = '"default" images each Setup with its own kind (joint for Setups 1-2, 12m for Setup 3)'


def _parse_arrays(ck: _Checker, where: str, value: Any, setups: tuple[int, ...]) -> tuple[str, ...]:
    """Array kinds (each valid for every Setup of the run) and ``"default"``."""
    items = [value] if isinstance(value, str) else ck.array(where, "arrays", value)
    allowed = (*ARRAY_KINDS, *ARRAY_WORDS)
    out: list[str] = []
    for item in items:
        ck.string(where, "arrays", item)
        if item not in allowed:
            hint = catalog.suggest(item, allowed)
            did = f' did you mean "{hint}"?' if hint else ""
            raise ck.fail(where, f'arrays: unknown array kind "{item}";{did} allowed: {", ".join(allowed)}')
        for setup in (setups or (catalog.WINDOW_SETUP,)) if item not in ARRAY_WORDS else ():
            try:
                check_array_kind(setup, item)
            except UserInputError as exc:
                more = f"; or {_DEFAULT_ARRAYS_WHY}" if len(setups) > 1 else ""
                raise ck.fail(where, f"arrays: {exc}{more}") from None
        if item not in out:
            out.append(item)
    return tuple(out)


def _parse_setups(ck: _Checker, where: str, value: Any) -> tuple[int, ...]:
    """``setup``: one FAUST Setup, an array of them, or ``"all"`` (run-file order, no repeats)."""
    valid = tuple(catalog.load_catalog().setups)
    if value in SETUP_WORDS:
        return valid
    items = value if isinstance(value, list) and value else [value]
    out: list[int] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or item not in valid:
            raise ck.fail(where, f"setup: expected the integer 1, 2 or 3, got {_type_name(item)} {_show(item)} "
                                 f'(also allowed: an array of them such as [1, 2], or "all" for every Setup)')
        if item not in out:
            out.append(item)
    return tuple(out)


def _check_every_setup_imaged(ck: _Checker, where: str, setups: tuple[int, ...], spws: tuple[str, ...]) -> None:
    """Every Setup named is imaged (a Setup without an SPW would only demand its data), and a
    run file's window, which has no Setup of its own, is imaged in one Setup's data."""
    windows = [label for label in spws if label not in catalog.ALL_SPW_LABELS]
    if windows and len(setups) > 1:
        raise ck.fail(where, f'spws: the run file\'s window "{windows[0]}" is imaged in one Setup\'s data, but '
                             f"this run images {_setups_text(setups)}; give one setup, or image the window in a "
                             f"run file of its own")
    for setup in setups:
        if not any(catalog.setup_of_label(label) == setup for label in spws if label not in windows):
            own = ", ".join(s.label for s in catalog.spws_for_setup(setup))
            raise ck.fail(where, f"spws: selects no SPW of Setup {setup} (its SPWs: {own}); add one, or remove "
                                 f"{setup} from setup")


def _parse_imaging(ck: _Checker, raw: dict[str, Any], windows: tuple[catalog.Spw, ...] = (),
                   targets: tuple[catalog.Target, ...] = ()) -> dict[str, Any]:
    where = "[imaging]"
    if "imaging" not in raw:
        raise ck.fail("", "missing table [imaging] (needs at least fields and setup)")
    img = ck.table(where, raw["imaging"])
    ck.unknown_keys(where, img, _IMAGING_KEYS)
    defaults = catalog.imaging_defaults()
    if "fields" not in img:
        raise ck.fail(where, "fields: missing")
    fields = _parse_fields(ck, where, img["fields"], tuple(t.name for t in targets))
    faust_fields = [f for f in fields if catalog.is_faust_field(f)]
    if "setup" not in img and not faust_fields:
        setups: tuple[int, ...] = ()   # only the run file's own targets: no FAUST Setup
    elif "setup" not in img:
        raise ck.fail(where, "setup: missing" + (f" (FAUST field {faust_fields[0]} needs the integer 1, 2 or 3)"
                                                 if faust_fields else ""))
    else:
        setups = _parse_setups(ck, where, img["setup"])
    spws = _parse_spws(ck, where, img.get("spws", "all"), setups, windows)
    if not spws:
        raise ck.fail(where, "spws: selects no SPW")
    _check_every_setup_imaged(ck, where, setups, spws)
    weightings = _parse_weightings(ck, where, img.get("weightings", list(defaults["weightings"])))
    # one Setup: its own kind, as written before "default" existed (the run's digest is unchanged)
    default_arrays = [catalog.default_array(setups[0] if len(setups) == 1 else catalog.WINDOW_SETUP)] \
        if len(setups) <= 1 else list(ARRAY_WORDS)
    arrays = _parse_arrays(ck, where, img.get("arrays", default_arrays), setups)
    fullcube = ck.boolean(where, "fullcube", img.get("fullcube", True))
    line_vwin = _parse_velocity(ck, where, "line_vwin", img.get("line_vwin", defaults["line_vwin"]), "20km/s")
    ext = ck.string(where, "ext", img.get("ext", "clean"))
    if not _EXT_RE.match(ext):
        raise ck.fail(where, f'ext: {_show(ext)} is not a file-name-safe word (letters, digits, _ . -)')
    nchunks = ck.nchunks(where, img.get("nchunks", "default"))
    oversample = img.get("oversample")
    cell = img.get("cell_arcsec")
    imsize = img.get("imsize")
    geometry = GeometryOverrides(
        oversample=None if oversample is None else ck.number(where, "oversample", oversample, positive=True),
        cell_arcsec=None if cell is None else ck.number(where, "cell_arcsec", cell, minimum=MIN_CELL_ARCSEC),
        imsize=None if imsize is None else ck.integer(where, "imsize", imsize, minimum=MIN_PIXELS_ACROSS_FOV,
                                                      maximum=MAX_IMSIZE, why=_IMSIZE_WHY),
    )
    thresholds = Thresholds(*(ck.number(where, key, img.get(key, defaults[key]), positive=True, maximum=MAX_SIGMA)
                              for key in ("nomask_sigma", "seedmask_sigma", "clean_sigma")))
    preserve = ck.boolean(where, "preserve_all_intermediate_products",
                          img.get("preserve_all_intermediate_products", False))
    last_chan = ck.boolean(where, "image_last_covered_channel", img.get("image_last_covered_channel", False))
    return dict(fields=fields, setups=setups, spw_labels=spws, weightings=weightings, arrays=arrays,
                fullcube=fullcube, line_vwin=line_vwin, ext=ext, nchunks=nchunks, geometry=geometry,
                thresholds=thresholds, preserve_all_intermediate_products=preserve,
                image_last_covered_channel=last_chan)


def _check_geometry(ck: _Checker, img: Mapping[str, Any], node_memory_gb: float) -> int:
    """The resolved cell and image size of every (field, array): a cell that leaves
    at least :data:`MIN_PIXELS_ACROSS_FOV` pixels across the field of view, an
    image whose tclean channel fits memory. Returns the smallest image size."""
    where, geo = "[imaging]", img["geometry"]
    window_setup = window_setup_of(img["setups"])
    kinds = {setup: resolve_arrays(img["arrays"], setup)
             for setup in dict.fromkeys(catalog.setup_of_label(label, window_setup) for label in img["spw_labels"])}
    smallest = MAX_IMSIZE
    for field, setup, kind in ((f, s, k) for f in img["fields"] for s, ks in kinds.items() for k in ks):
        if not catalog.is_faust_field(field):
            continue   # geometry from the data (read by the units); the imsize bound is checked above
        g = geometry_for(field, setup, kind, oversample=geo.oversample, cell_arcsec=geo.cell_arcsec,
                         imsize=geo.imsize)
        key = "cell_arcsec" if geo.cell_arcsec is not None else "oversample"
        fov = imsize_for(setup, kind, 1.0)  # arcsec: 2 x the primary beam's 10%-power width
        if g.cell_arcsec * MIN_PIXELS_ACROSS_FOV > fov:
            raise ck.fail(where, f"{key}: a cell of {g.cell_arcsec:.4g} arcsec is wider than 1/"
                                 f"{MIN_PIXELS_ACROSS_FOV} of the {kind} field of view ({fov} arcsec, Setup "
                                 f"{setup}); use at most {fov / MIN_PIXELS_ACROSS_FOV:.4g} arcsec")
        if g.cell_arcsec < MIN_CELL_ARCSEC:
            raise ck.fail(where, f"{key}: a cell of {g.cell_arcsec:.3g} arcsec is below "
                                 f"{MIN_CELL_ARCSEC:g} arcsec (a fifth of ALMA's finest beam)")
        what = "imsize" if geo.imsize is not None else f"{key} (it gives an imsize of {g.imsize} px)"
        if g.imsize > MAX_IMSIZE:
            raise ck.fail(where, f"{what}: images of more than {MAX_IMSIZE} px a side are refused"
                                 f"{_IMSIZE_WHY}; use a larger cell or set imsize")
        need = costmodel.channel_memory_gb(g.npix)
        if 0 < node_memory_gb < need:
            raise ck.fail(where, f"{what}: one tclean channel of {g.imsize} px needs ~{need:.1f} GB, more "
                                 f"than [scheduler] node_memory_gb = {node_memory_gb:g}")
        smallest = min(smallest, g.imsize)
    return smallest


def _check_spw_tables_selected(ck: _Checker, spw_settings: tuple[tuple[str, SpwOverrides], ...],
                               selected: tuple[str, ...]) -> None:
    """A ``[spw."LABEL"]`` table for an SPW the run does not image would be silently ignored."""
    for label, _ in spw_settings:
        if label not in selected:
            raise ck.fail(f'[spw."{label}"]', f"this run does not image this SPW ([imaging] spws selects "
                                             f"{', '.join(selected)}); add it to spws or remove the table")


def _automask_keys() -> dict[str, Any]:
    """Allowed auto-multithresh keys and their types (from the facts' defaults)."""
    defaults = catalog.imaging_defaults()
    keys: dict[str, Any] = {}
    for table in ("automask_12m", "automask_7m"):
        keys.update(defaults[table])
    return keys


def _parse_one_spw(ck: _Checker, label: str, raw: Any, setups: tuple[int, ...], max_scale_px: int = MAX_IMSIZE,
                   windows: tuple[catalog.Spw, ...] = ()) -> SpwOverrides:
    where = f'[spw."{label}"]'
    in_setup = [s.label for s in _setup_spws(setups, windows)]
    _check_label_in_setup(ck, where, "", label, setups, in_setup)
    table = ck.table(where, raw)
    ck.unknown_keys(where, table, _SPW_KEYS)
    kw: dict[str, Any] = {}
    if "nchunks" in table:
        kw["nchunks"] = ck.nchunks(where, table["nchunks"])
    if "rms" in table:
        kw["rms"] = ck.number(where, "rms", table["rms"], positive=True)
    if "gain" in table:
        kw["gain"] = ck.number(where, "gain", table["gain"], positive=True, maximum=1.0)
    if "cyclefactor" in table:
        kw["cyclefactor"] = ck.number(where, "cyclefactor", table["cyclefactor"], positive=True,
                                      maximum=MAX_CYCLEFACTOR)
    if "smallscalebias" in table:
        kw["smallscalebias"] = ck.number(where, "smallscalebias", table["smallscalebias"],
                                         minimum=-1.0, maximum=1.0)
    if "moments_vwin_kms" in table:
        kw["moments_vwin_kms"] = ck.number(where, "moments_vwin_kms", table["moments_vwin_kms"],
                                           positive=True, maximum=C_KMS)
    if "scales" in table:
        kw["scales"] = tuple(ck.integer(where, "scales", s, minimum=0, maximum=max_scale_px,
                                        why=" (the image size in pixels)")
                             for s in ck.array(where, "scales", table["scales"]))
    if "mask_ang_scales" in table:
        kw["mask_ang_scales"] = tuple(ck.number(where, "mask_ang_scales", s, minimum=0.0)
                                      for s in ck.array(where, "mask_ang_scales", table["mask_ang_scales"]))
    if "uvtaper" in table:
        kw["uvtaper"] = tuple(ck.string(where, "uvtaper", s)
                              for s in ck.array(where, "uvtaper", table["uvtaper"], nonempty=False))
    if "automask" in table:
        allowed = _automask_keys()
        am = ck.table(f"{where} automask", table["automask"])
        ck.unknown_keys(f"{where} automask", am, tuple(allowed), what="auto-multithresh key")
        clean: dict[str, Any] = {}
        for key, value in am.items():
            default = allowed[key]
            if isinstance(default, bool):
                clean[key] = ck.boolean(f"{where} automask", key, value)
            elif isinstance(default, int):
                clean[key] = ck.integer(f"{where} automask", key, value, minimum=0, maximum=MAX_AUTOMASK_INT)
            else:
                clean[key] = ck.number(f"{where} automask", key, value, minimum=0.0, maximum=MAX_SIGMA)
        kw["automask"] = FrozenDict(clean)
    return SpwOverrides(**kw)


def _parse_spw_tables(ck: _Checker, raw: dict[str, Any], setups: tuple[int, ...], max_scale_px: int = MAX_IMSIZE,
                      windows: tuple[catalog.Spw, ...] = ()) -> tuple[tuple[str, SpwOverrides], ...]:
    spw = ck.table("[spw]", raw.get("spw", {}))
    return tuple((label, _parse_one_spw(ck, label, value, setups, max_scale_px, windows))
                 for label, value in spw.items())


def _check_entry_name(ck: _Checker, where: str, name: str, what: str) -> None:
    """A target or window name that file names, unit ids and ``layout.parse`` can carry."""
    if not _ENTRY_NAME_RE.match(name) or any(_RESERVED_TOKEN_RE.match(t) for t in name.split("_")):
        raise ck.fail(where, f"{what} name {_show(name)}: use letters, digits and _ + . - (no \"/\", no white "
                             f"space, no _-separated part {'/'.join(ARRAY_KINDS)} or chunk<N>)")


def _parse_velocity(ck: _Checker, where: str, key: str, value: Any, example: str) -> str:
    """A velocity width (a quantity string) above 0 and below c."""
    text = ck.string(where, key, value)
    try:
        vwin = catalog.parse_velocity_kms(text)
        if not 0 < vwin < C_KMS:
            raise ValueError(f"must be above 0 and below the speed of light ({C_KMS:g} km/s)")
    except (ValueError, OverflowError) as exc:
        raise ck.fail(where, f'{key}: {exc}; expected a velocity width such as "{example}"') from None
    return text


def _parse_targets(ck: _Checker, raw: dict[str, Any]) -> tuple[catalog.Target, ...]:
    """``[target."NAME"]``: a field of the run file's own measurement sets (not FAUST's)."""
    table = ck.table("[target]", raw.get("target", {}))
    out: list[catalog.Target] = []
    for name, value in table.items():
        where = f'[target."{name}"]'
        if catalog.is_faust_field(name):
            raise ck.fail(where, "is a FAUST target: its values come from the catalog; use another name "
                                 "(the MS field name) or list it in [imaging] fields without a [target] table")
        _check_entry_name(ck, where, name, "target")
        t = ck.table(where, value)
        ck.unknown_keys(where, t, _TARGET_KEYS)
        if "data" not in t:
            raise ck.fail(where, 'data: missing (a directory of measurement sets, a glob, or a list of MS paths; '
                                 'relative to [run] data_dir)')
        data = t["data"]
        items = [data] if isinstance(data, str) else ck.array(where, "data", data)
        paths = tuple(ck.string(where, "data", item) for item in items)
        if "vsys_kms" not in t:
            raise ck.fail(where, "vsys_kms: missing (the systemic velocity in km/s, radio, LSRK)")
        vsys = ck.number(where, "vsys_kms", t["vsys_kms"], minimum=-C_KMS + 1.0, maximum=C_KMS - 1.0)
        position = {}
        for key, unit in (("ra", "hourangle"), ("dec", "deg")):
            if key in t:
                position[key] = ck.string(where, key, t[key])
                try:
                    from astropy.coordinates import Angle
                    Angle(position[key], unit=unit)
                except (ValueError, TypeError) as exc:
                    raise ck.fail(where, f'{key}: {_show(position[key])} is not an angle ({exc}); e.g. '
                                         f'ra = "15h22m00.0s", dec = "+05d04m00s"') from None
        if len(position) == 1:
            raise ck.fail(where, f"{'dec' if 'ra' in position else 'ra'}: missing (give both ra and dec, or "
                                 f"neither for the MS phase centre)")
        out.append(catalog.run_target(name, vsys, paths, **position))
    return tuple(out)


def _parse_windows(ck: _Checker, raw: dict[str, Any]) -> tuple[catalog.Spw, ...]:
    """``[window."LABEL"]``: a spectral window of the run file's own (rest frequency, which SPW)."""
    table = ck.table("[window]", raw.get("window", {}))
    out: list[catalog.Spw] = []
    for label, value in table.items():
        where = f'[window."{label}"]'
        if label in catalog.ALL_SPW_LABELS:
            raise ck.fail(where, "is a FAUST SPW label: its values come from the catalog; use another label")
        _check_entry_name(ck, where, label, "window")
        w = ck.table(where, value)
        ck.unknown_keys(where, w, _WINDOW_KEYS)
        if "restfreq" not in w:
            raise ck.fail(where, 'restfreq: missing (the line\'s rest frequency, e.g. "1420.405752MHz")')
        restfreq = w["restfreq"]
        text = restfreq if isinstance(restfreq, str) else None
        if text is None and not isinstance(restfreq, bool) and isinstance(restfreq, (int, float)):
            text = f"{restfreq!r}Hz"
        try:
            if text is None:
                raise ValueError(f"expected a frequency, got {_type_name(restfreq)} {_show(restfreq)}")
            hz = catalog.parse_frequency_hz(text)
            if not (_finite(hz) and hz > 0):
                raise ValueError(f"must be a positive frequency, got {_show(restfreq)}")
        except ValueError as exc:
            raise ck.fail(where, f'restfreq: {exc}; expected e.g. "1420.405752MHz"') from None
        select = w.get("spw")
        if select is not None:
            if isinstance(select, str):
                ck.string(where, "spw", select)
            else:
                select = ck.integer(where, "spw", select, minimum=0)
        kind = ck.string(where, "kind", w.get("kind", "line"))
        if kind not in catalog.WINDOW_KINDS:
            raise ck.fail(where, f'kind: unknown value {_show(kind)}; allowed: {", ".join(catalog.WINDOW_KINDS)}')
        vwin = None if "line_vwin" not in w else _parse_velocity(ck, where, "line_vwin", w["line_vwin"], "200km/s")
        out.append(catalog.window_spw(label, text, select=select, kind=kind, line_vwin=vwin))
    return tuple(out)


def _looks_like_ms(path: Path) -> bool:
    return path.is_dir() and (path / "table.dat").is_file()


def target_ms_paths(target: catalog.Target, data_dir: Path) -> list[str]:
    """The measurement sets a run-file target's ``data`` names, in order: an MS path,
    a directory (its ``*.ms``), or a glob (relative to ``data_dir``). Filesystem only."""
    from glob import escape, glob, has_magic

    found: list[str] = []
    for item in target.data:
        path = _resolve(data_dir, item)
        if has_magic(item):
            hits = [Path(p) for p in sorted(glob(str(path)))]
            hits = [h for h in hits if h.is_dir()]
        elif _looks_like_ms(path) or not path.is_dir():
            hits = [path] if path.exists() else []
        else:
            hits = [Path(p) for p in sorted(glob(os.path.join(escape(str(path)), "*.ms")))]
        for hit in hits:
            if str(hit) not in found:
                found.append(str(hit))
    return found


def _check_target_data(ck: _Checker, targets: tuple[catalog.Target, ...], fields: tuple[str, ...],
                       data_dir: Path) -> None:
    """Every imaged run-file target names at least one existing measurement set."""
    for t in targets:
        if t.name in fields and not target_ms_paths(t, data_dir):
            raise ck.fail(f'[target."{t.name}"]', f"data: {', '.join(t.data)} (relative to {data_dir}) names no "
                                                  f"measurement set; give an MS path, a directory of *.ms or a glob")


def _parse_scheduler(ck: _Checker, raw: dict[str, Any]) -> SchedulerSettings:
    where = "[scheduler]"
    sch = ck.table(where, raw.get("scheduler", {}))
    ck.unknown_keys(where, sch, _SCHEDULER_KEYS)
    d = SchedulerSettings()
    executor = ck.string(where, "executor", sch.get("executor", d.executor))
    if not _EXECUTOR_RE.match(executor):
        raise ck.fail(where, f'executor: expected "package.module:function", got {_show(executor)}')
    return SchedulerSettings(
        retries=ck.integer(where, "retries", sch.get("retries", d.retries), minimum=0, maximum=MAX_RETRIES,
                           why=" (more attempts repeat one failure; fix its cause)"),
        unit_timeout_s=ck.number(where, "unit_timeout_s", sch.get("unit_timeout_s", d.unit_timeout_s),
                                 minimum=0.0),
        node_memory_gb=ck.number(where, "node_memory_gb", sch.get("node_memory_gb", d.node_memory_gb),
                                 minimum=0.0),
        workers=ck.integer(where, "workers", sch.get("workers", d.workers), minimum=1, maximum=MAX_WORKERS),
        threads_per_unit=ck.integer(where, "threads_per_unit",
                                    sch.get("threads_per_unit", d.threads_per_unit), minimum=0,
                                    maximum=MAX_THREADS_PER_UNIT),
        executor=executor,
        learn_costs=ck.boolean(where, "learn_costs", sch.get("learn_costs", d.learn_costs)),
        learn_from=_parse_learn_from(ck, where, sch.get("learn_from", [])),
        lease_s=ck.number(where, "lease_s", sch.get("lease_s", d.lease_s), minimum=3.0),
        warm_start=ck.boolean(where, "warm_start", sch.get("warm_start", d.warm_start)),
    )


def _parse_learn_from(ck: _Checker, where: str, value: Any) -> tuple[Path, ...]:
    """Product directories of earlier runs to learn costs from (each must hold run records)."""
    dirs = []
    for item in ck.array(where, "learn_from", value, nonempty=False):
        path = _resolve(ck.base, ck.string(where, "learn_from", item))
        if not RunLayout(path).manifest_path.is_file():
            raise ck.fail(where, f"learn_from: {path} is not a product directory with run records (expected "
                                 f"{RunLayout(path).manifest_path.relative_to(path)} in it)")
        dirs.append(path)
    return tuple(dirs)


# ----------------------------------------------------------------------------
# Filesystem checks (check_paths=True)
# ----------------------------------------------------------------------------

def _check_readable_dir(ck: _Checker, key: str, path: Path) -> None:
    if not path.exists():
        raise ck.fail("[run]", f"{key}: directory {path} does not exist")
    if not path.is_dir():
        raise ck.fail("[run]", f"{key}: {path} is not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise ck.fail("[run]", f"{key}: directory {path} is not readable")


def _check_data_layout(ck: _Checker, data_dir: Path, fields: tuple[str, ...], setups: tuple[int, ...]) -> None:
    """The documented layout: ``<data_dir>/<FIELD>-Setup<N>/`` holds the MSs (every Setup imaged)."""
    for name, setup in ((f, s) for f in fields for s in setups):
        sub = data_dir / f"{name}-Setup{setup}"
        if not sub.is_dir():
            raise ck.fail("[run]", f"data_dir: no directory {sub.name} in {data_dir} "
                                   f"(expected <data_dir>/<FIELD>-Setup<N>/ with the MSs)")
        if not os.access(sub, os.R_OK | os.X_OK):
            raise ck.fail("[run]", f"data_dir: directory {sub} is not readable")


def _check_writable_dir(ck: _Checker, key: str, path: Path) -> None:
    """Writable = a probe file can be created (and is removed at once) in the
    directory, or in its nearest existing ancestor if it does not exist yet.
    Nothing is created if the check fails, and nothing is left if it passes."""
    probe_dir = path
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise ck.fail("[run]", f"{key}: cannot create {path}: {probe_dir} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".faust-hpc-probe-", dir=probe_dir)
    except OSError as exc:
        what = "directory" if probe_dir == path else f"parent directory {probe_dir} of"
        raise ck.fail("[run]", f"{key}: {what} {path if probe_dir != path else probe_dir} is not writable "
                               f"({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


# ----------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------

def load_runfile(path: str | os.PathLike[str], check_paths: bool = True) -> RunSpec:
    """Read and validate a run file; raise :class:`RunFileError` (one line)."""
    path = Path(os.path.abspath(path))
    fname = path.name
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RunFileError(f"{fname}: run file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunFileError(f"{fname}: cannot read run file {path}: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RunFileError(f"{fname}: TOML syntax error: {exc}".replace("\n", " ")) from None
    ck = _Checker(path)
    ck.unknown_keys("", raw, _TOP_TABLES, what="table")
    run = _parse_run(ck, raw, path)
    targets = _parse_targets(ck, raw)
    windows = _parse_windows(ck, raw)
    # the run file's names join the catalog for this process (restored if the file is refused)
    saved = (dict(catalog._RUN_TARGETS), dict(catalog._RUN_WINDOWS))
    catalog.register_run_entries(targets, windows)
    try:
        img = _parse_imaging(ck, raw, windows, targets)
        scheduler = _parse_scheduler(ck, raw)
        smallest_imsize = _check_geometry(ck, img, scheduler.node_memory_gb)
        spw_settings = _parse_spw_tables(ck, raw, img["setups"], smallest_imsize, windows)
        _check_spw_tables_selected(ck, spw_settings, img["spw_labels"])
        if check_paths:
            _check_readable_dir(ck, "data_dir", run["data_dir"])
            faust_fields = tuple(f for f in img["fields"] if catalog.is_faust_field(f))
            _check_data_layout(ck, run["data_dir"], faust_fields, img["setups"])
            _check_target_data(ck, targets, img["fields"], run["data_dir"])
            if run["casa_data_dir"] is not None:
                _check_readable_dir(ck, "casa_data_dir", run["casa_data_dir"])
            _check_writable_dir(ck, "product_dir", run["product_dir"])
    except BaseException:
        catalog.clear_run_entries()
        catalog.register_run_entries(saved[0].values(), saved[1].values())
        raise
    return RunSpec(path=path, scheduler=scheduler, spw_settings=spw_settings, targets=targets, windows=windows,
                   **run, **img)
