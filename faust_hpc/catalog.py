"""The FAUST catalog: targets, Setups, spectral windows and imaging defaults.

Values come from the package data file ``data/faust_facts.toml`` (a verbatim
copy of the project's reference facts), so there is exactly one place where a
number lives. Nothing here touches CASA or the filesystem beyond reading that
file; the plan layer and the run-file validator rely on that.

Lookups by name raise :class:`~faust_hpc.errors.CatalogError` with a
"did you mean" suggestion, because a typo in a label is the most common
mistake in a run file.
"""
from __future__ import annotations

import copy as _copy
import difflib
import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable, Mapping

from faust_hpc import spectral
from faust_hpc.errors import CatalogError
from faust_hpc.spectral import C_KMS, C_M_S  # noqa: F401  (owned by spectral; geometry and imaging.dataset read them here)

_QUANTITY_RE = re.compile(r"^\s*([-+0-9.eE]+)\s*([A-Za-z/]*)\s*$")
_FREQ_UNITS = {"hz": 1.0, "khz": 1e3, "mhz": 1e6, "ghz": 1e9}
_VEL_UNITS = {"km/s": 1.0, "m/s": 1e-3}


def parse_frequency_hz(text: str | float) -> float:
    """``"244.9355565GHz"`` -> 244.9355565e9 (a bare number is taken as Hz)."""
    if isinstance(text, (int, float)):
        return float(text)
    match = _QUANTITY_RE.match(text)
    if not match:
        raise ValueError(f"not a frequency quantity: {text!r}")
    value, unit = match.groups()
    unit = unit.lower() or "hz"
    if unit not in _FREQ_UNITS:
        raise ValueError(f"unknown frequency unit in {text!r} (use Hz, kHz, MHz or GHz)")
    return float(value) * _FREQ_UNITS[unit]


def parse_velocity_kms(text: str | float) -> float:
    """``"20km/s"`` -> 20.0 (a bare number is taken as km/s)."""
    if isinstance(text, (int, float)):
        return float(text)
    match = _QUANTITY_RE.match(text)
    if not match:
        raise ValueError(f"not a velocity quantity: {text!r}")
    value, unit = match.groups()
    unit = unit.lower() or "km/s"
    if unit not in _VEL_UNITS:
        raise ValueError(f"unknown velocity unit in {text!r} (use km/s or m/s)")
    return float(value) * _VEL_UNITS[unit]


@dataclass
class Target:
    """A target: field name, target beam HPBW (arcsec), vsys (km/s, LSRK).

    FAUST targets come from the facts file. A run file's ``[target."NAME"]``
    (:func:`register_run_entries`) has no catalog resolution (``res`` is 0:
    the geometry is read from its data), says where its measurement sets are
    (``data``: directories, globs or MS paths; relative to the run's
    ``data_dir``) and may give a phase centre (``ra``/``dec``, CASA strings)."""

    name: str
    res: float
    vsys: float
    data: tuple[str, ...] = ()
    ra: str | None = None
    dec: str | None = None
    faust: bool = True

    def vlsr_from_window(self, velo_width: str) -> str:
        """Start velocity (CASA quantity) of a window of full width ``velo_width``
        centred on vsys, as tclean's ``start`` wants it in velocity mode."""
        half = parse_velocity_kms(velo_width) / 2.0
        return f"{self.vsys - half:.4f}km/s"


@dataclass(frozen=True)
class Setup:
    """One FAUST correlator Setup: band, frequency span and arrays observed."""

    index: int
    band: int
    low_ghz: float
    high_ghz: float
    arrays: tuple[str, ...]


@dataclass
class Spw:
    """A FAUST spectral window, with the original pipeline's constructor.

    ``chan_width`` is in kHz and ``tot_bw`` in MHz (TOPO) as documented;
    ``restfreq`` and ``ms_restfreq`` are CASA quantity strings. The label is
    derived from ``restfreq`` and ``mol_name`` every time it is read, so a
    :meth:`copy` re-targeted at another line (the cookbook's CH3CHO example)
    gets its own file names.
    """

    setup: int
    restfreq: str
    mol_name: str
    name: str
    ms_restfreq: str
    spw_id: int
    ot_name: str
    nchan: int
    chan_width: float
    tot_bw: float
    chunk: Any = field(default=None, compare=False)
    # A run file's [window."LABEL"] (see window_spw): its own label, which SPW of each
    # MS (an id, a name, or None = the one covering restfreq at vsys), line or continuum,
    # and an optional velocity window. None for FAUST windows.
    window_label: str | None = None
    select: int | str | None = None
    window_kind: str = "line"
    line_vwin: str | None = None

    @property
    def restfreq_hz(self) -> float:
        return parse_frequency_hz(self.restfreq)

    @property
    def short_restfreq(self) -> str:
        return f"{self.restfreq_hz / 1e9:.3f}GHz"

    @property
    def label(self) -> str:
        if self.window_label is not None:
            return self.window_label
        return f"{self.short_restfreq}_{self.mol_name}"

    @property
    def is_window(self) -> bool:
        """A run file's window (not a FAUST SPW): its channels are read from the data."""
        return self.window_label is not None

    @property
    def chan_width_hz(self) -> float:
        return self.chan_width * 1e3

    @property
    def tot_bw_hz(self) -> float:
        return self.tot_bw * 1e6

    @property
    def is_continuum(self) -> bool:
        """The wide (TDM-like, 1.875 GHz) continuum windows; a run file's ``kind = "continuum"``."""
        if self.is_window:
            return self.window_kind == "continuum"
        return self.mol_name == "cont"

    @property
    def chan_width_kms(self) -> float:
        return spectral.chan_width_kms(self.chan_width_hz, self.restfreq_hz)

    def nchan_from_window(self, velo_width: str) -> int:
        """Number of native channels spanning the full velocity width."""
        return int(round(parse_velocity_kms(velo_width) / self.chan_width_kms))

    def copy(self) -> "Spw":
        return _copy.deepcopy(self)

    def with_chunk(self, chunk: Any) -> "Spw":
        """A copy that carries a :class:`ChunkConfig` (None for the full cube)."""
        new = self.copy()
        new.chunk = chunk
        return new


@dataclass(frozen=True)
class Catalog:
    targets: Mapping[str, Target]
    setups: Mapping[int, Setup]
    spws: Mapping[str, Spw]
    imaging: Mapping[str, Any]
    data_layout: Mapping[str, Any]


@lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    """Parse the packaged facts file once per process."""
    text = resources.files("faust_hpc").joinpath("data/faust_facts.toml").read_text()
    facts = tomllib.loads(text)
    targets = {name: Target(name, float(v["res"]), float(v["vsys"]))
               for name, v in facts["targets"].items()}
    setups = {int(k): Setup(int(k), int(v["band"]), float(v["low_ghz"]), float(v["high_ghz"]),
                            tuple(v["arrays"]))
              for k, v in facts["setups"].items()}
    spws: dict[str, Spw] = {}
    for w in facts["spectral_windows"]["windows"]:
        spw = Spw(setup=int(w["setup"]), restfreq=w["restfreq"], mol_name=w["mol"], name=w["name"],
                  ms_restfreq=w["ms_restfreq"], spw_id=int(w["spw_id_12m"]), ot_name=w["ot_name"],
                  nchan=int(w["nchan"]), chan_width=float(w["chan_width_hz"]) / 1e3,
                  tot_bw=float(w["tot_bw_hz"]) / 1e6)
        if spw.label in spws:
            raise RuntimeError(f"duplicate SPW label in packaged facts: {spw.label}")
        spws[spw.label] = spw
    return Catalog(targets=targets, setups=setups, spws=spws,
                   imaging=facts["imaging"], data_layout=facts["data_layout"])


def suggest(name: str, choices: Iterable[str]) -> str | None:
    """Closest valid name to a typo, case-insensitively, or None."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    if name.lower() in lowered:
        return lowered[name.lower()]
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def _unknown(kind: str, name: str, choices: Iterable[str]) -> CatalogError:
    hint = suggest(name, choices)
    if hint is not None:
        return CatalogError(f'unknown {kind} "{name}"; did you mean "{hint}"?')
    return CatalogError(f'unknown {kind} "{name}"; valid values: {", ".join(sorted(choices))}')


# ----------------------------------------------------------------------------
# Run-scoped entries: a run file's [target."NAME"] and [window."LABEL"] tables
# ----------------------------------------------------------------------------
WINDOW_SETUP = 0
"""The ``setup`` of a run file's window: no FAUST Setup (its frequencies come from the data)."""
WINDOW_NOMINAL_NCHAN = 256
WINDOW_NOMINAL_CHAN_KMS = 5.0
"""A window's channel count and width are read from the data by its prepare unit;
until then (``faust-hpc plan`` without CASA) the plan sizes it with these."""
WINDOW_KINDS = ("line", "continuum")

_RUN_TARGETS: dict[str, Target] = {}
_RUN_WINDOWS: dict[str, Spw] = {}


def run_target(name: str, vsys: float, data: Iterable[str], ra: str | None = None,
               dec: str | None = None) -> Target:
    """A run file's target (not FAUST's: its geometry comes from its data)."""
    return Target(name=name, res=0.0, vsys=float(vsys), data=tuple(data), ra=ra, dec=dec, faust=False)


def window_spw(label: str, restfreq: str, select: int | str | None = None, kind: str = "line",
               line_vwin: str | None = None) -> Spw:
    """A run file's window as an :class:`Spw` of Setup :data:`WINDOW_SETUP`, with nominal
    channels (:data:`WINDOW_NOMINAL_NCHAN` of :data:`WINDOW_NOMINAL_CHAN_KMS`)."""
    rest_hz = parse_frequency_hz(restfreq)
    width_khz = spectral.velocity_width_hz(WINDOW_NOMINAL_CHAN_KMS, rest_hz) / 1e3
    return Spw(setup=WINDOW_SETUP, restfreq=restfreq, mol_name=label, name=label, ms_restfreq=restfreq,
               spw_id=-1 if not isinstance(select, int) else select, ot_name="", nchan=WINDOW_NOMINAL_NCHAN,
               chan_width=width_khz, tot_bw=width_khz * WINDOW_NOMINAL_NCHAN / 1e3, window_label=label,
               select=select, window_kind=kind, line_vwin=line_vwin)


def register_run_entries(targets: Iterable[Target] = (), windows: Iterable[Spw] = ()) -> None:
    """Make a run file's targets and windows known to every lookup of this process
    (``get_target``, ``get_spw``, product-name parsing). Called by
    :func:`faust_hpc.runfile.load_runfile`, so every process that loads the run file
    (rank 0, workers, unit children) knows the same names. A later run file that
    defines a name again replaces it (the run file validator refuses names of
    FAUST's)."""
    faust = load_catalog()
    for t in targets:
        if t.name in faust.targets:
            raise CatalogError(f'target "{t.name}" is a FAUST target; its values come from the catalog')
        _RUN_TARGETS[t.name] = _copy.copy(t)
    for w in windows:
        if w.label in faust.spws:
            raise CatalogError(f'window "{w.label}" is a FAUST SPW label; its values come from the catalog')
        _RUN_WINDOWS[w.label] = w.copy()


def clear_run_entries() -> None:
    """Forget every run-file target and window of this process."""
    _RUN_TARGETS.clear()
    _RUN_WINDOWS.clear()


def is_faust_field(name: str) -> bool:
    return name in load_catalog().targets


def all_field_names() -> tuple[str, ...]:
    """FAUST field names, then the run-file targets known to this process."""
    return (*load_catalog().targets, *(n for n in _RUN_TARGETS if n not in load_catalog().targets))


def all_spw_labels() -> tuple[str, ...]:
    """FAUST SPW labels, then the run-file windows known to this process."""
    return (*load_catalog().spws, *(n for n in _RUN_WINDOWS if n not in load_catalog().spws))


def get_target(name: str) -> Target:
    """The :class:`Target` for a field name, FAUST's or a run file's (a copy: callers may modify it)."""
    targets = load_catalog().targets
    if name in targets:
        return _copy.copy(targets[name])
    if name in _RUN_TARGETS:
        return _copy.copy(_RUN_TARGETS[name])
    raise _unknown("field", name, all_field_names())


def get_spw(label: str) -> Spw:
    """The :class:`Spw` for a label such as ``244.936GHz_CS``, or a run file's window (a copy)."""
    spws = load_catalog().spws
    if label in spws:
        return spws[label].copy()
    if label in _RUN_WINDOWS:
        return _RUN_WINDOWS[label].copy()
    raise _unknown("SPW label", label, all_spw_labels())


def get_setup(index: int) -> Setup:
    setups = load_catalog().setups
    if index not in setups:
        raise CatalogError(f"unknown Setup {index}; valid values: {', '.join(map(str, setups))}")
    return setups[index]


def setup_of_label(label: str, window_setup: int = WINDOW_SETUP) -> int:
    """The Setup an image of SPW ``label`` is made from: a FAUST SPW's own Setup;
    a run file's window has none of its own and takes ``window_setup`` (the run's
    one Setup, or :data:`WINDOW_SETUP`). The one place every layer asks (a whole-
    program run images several Setups, so no run-wide Setup is an image's)."""
    spws = load_catalog().spws
    if label in spws:
        return spws[label].setup
    if label in _RUN_WINDOWS:
        return window_setup
    raise _unknown("SPW label", label, all_spw_labels())


def default_array(setup: int) -> str:
    """The array kind a Setup is imaged with by default: ``joint`` (12m + 7m) where
    it has 7m data (Setups 1-2), else ``12m`` (Setup 3); ``all`` without a Setup."""
    if setup == WINDOW_SETUP:
        return "all"
    return "joint" if "7m" in get_setup(setup).arrays else "12m"


def spws_for_setup(setup: int) -> list[Spw]:
    """All SPWs of a Setup, in catalog (baseband) order."""
    get_setup(setup)
    return [s.copy() for s in load_catalog().spws.values() if s.setup == setup]


def default_nchunks(spw: Spw) -> int:
    """The documented default chunk count: 4/40 (Setups 1-2), 20/80 (Setup 3);
    a run file's window takes the Setup 1-2 counts (4 line, 40 continuum)."""
    table = load_catalog().imaging["nchunks"]
    prefix = "s3" if spw.setup == 3 else "s12"
    kind = "tdm" if spw.is_continuum else "fdm"
    return int(table[f"{prefix}_{kind}"])


def imaging_defaults() -> Mapping[str, Any]:
    """The ``[imaging]`` table of the facts (read-only view by convention)."""
    return load_catalog().imaging


# The original pipeline's module-level names, for users of its API.
ALL_TARGETS: Mapping[str, Target] = load_catalog().targets
ALL_FIELD_NAMES: tuple[str, ...] = tuple(load_catalog().targets)
ALL_SPWS: Mapping[str, Spw] = load_catalog().spws
ALL_SPW_LABELS: tuple[str, ...] = tuple(load_catalog().spws)
SPWS_BY_SETUP: Mapping[int, tuple[Spw, ...]] = {
    k: tuple(s for s in load_catalog().spws.values() if s.setup == k) for k in load_catalog().setups
}
