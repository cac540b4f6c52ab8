"""Image geometry by the documented FAUST rules, in pure Python.

Both the imaging engine (``DataSet.cell``/``imsize``/``gridder``/``pblimit``)
and the planner (cost and memory estimates) need these numbers; keeping them
here means the plan is computed from the same rules CASA will be given, with
no CASA import.

Rules (``faust_facts.toml`` [imaging]):
- 12m and joint cell = target HPBW / oversample (10 by default);
- 7m cell = (lambda at the Setup's high frequency / 50 m) / oversample;
- imsize = 2 x 1.13 lambda / D (lambda at the Setup's low frequency, D = 12 m
  for joint/12m, 7 m for 7m) / cell, truncated to an integer and rounded up to
  an even 2^a 3^b 5^c 7^d -- exactly the original code's
  ``getOptimumSize(int(w))`` (CASA's ``cleanhelper``), so the default sizes
  are those of the products in the ALMA archive;
- gridder mosaic for joint Setups 1-2, standard otherwise;
- pblimit 0.2 joint, -0.01 single array.

A run file's own target (not FAUST's, :func:`data_geometry`) gets the same
rules from its data: cell = (lambda / longest baseline) / oversample, and
imsize = 2 x 1.13 lambda / D / cell with D the smallest dish diameter in its
measurement sets (lambda at the window's sky frequency at vsys); gridder
mosaic and the joint pblimit when the dishes differ, else standard and the
single-array pblimit. Until the data are read (``faust-hpc plan`` without
CASA) the plan sizes such images with :data:`NOMINAL_DATA_IMSIZE`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from faust_hpc.catalog import C_M_S, WINDOW_SETUP, get_setup, get_target, imaging_defaults
from faust_hpc.errors import UserInputError

ARRAY_KINDS = ("joint", "12m", "7m", "all")
"""The ALMA kinds (joint = 12m + 7m) and ``all``: every measurement set, whatever its dishes."""
ALMA_ARRAY_KINDS = ARRAY_KINDS[:3]
NOMINAL_DATA_IMSIZE = 512
"""Image size the plan assumes for a run-file target before its data are read."""
RAD_TO_ARCSEC = 180.0 / math.pi * 3600.0
ACA_MAX_BASELINE_M = 50.0
DISH_DIAMETER_M = {"joint": 12.0, "12m": 12.0, "7m": 7.0}


def optimum_size(n: int) -> int:
    """Smallest even integer >= n whose prime factors are all <= 7: what
    CASA's ``cleanhelper.getOptimumSize`` returns (the original pipeline's
    image-size rounding). Re-implemented because the planner must not import
    CASA, and the helper itself calls ``numpy.product``, gone in NumPy 2."""
    size = max(int(n), 2)
    size += size % 2
    while True:
        rest = size
        for p in (2, 3, 5, 7):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return size
        size += 2


def check_array_kind(setup: int, kind: str) -> None:
    """Setup 3 has 12m data only; anything else is one of joint/12m/7m/all (a run
    file's window, Setup :data:`~faust_hpc.catalog.WINDOW_SETUP`, takes any kind)."""
    if kind not in ARRAY_KINDS:
        raise UserInputError(f'unknown array kind "{kind}"; valid values: {", ".join(ARRAY_KINDS)}')
    if setup == WINDOW_SETUP or kind == "all":
        return
    arrays = get_setup(setup).arrays
    if kind in ("joint", "7m") and "7m" not in arrays:
        raise UserInputError(f'array kind "{kind}" is not available for Setup {setup} '
                             f'(it has {"/".join(arrays)} data only); use "12m"')


@dataclass(frozen=True)
class Geometry:
    """Cell (arcsec), image size (pixels), gridder and pblimit of one image."""

    cell_arcsec: float
    imsize: int
    gridder: str
    pblimit: float

    @property
    def npix(self) -> int:
        return self.imsize * self.imsize


def _faust_kind(kind: str) -> str:
    """A FAUST field imaged with ``all`` takes the joint rules (every MS of the Setup)."""
    return "joint" if kind == "all" else kind


def cell_12m(field: str, oversample: float | None = None) -> float:
    oversample = oversample or float(imaging_defaults()["oversample"])
    return get_target(field).res / oversample


def cell_7m(setup: int, oversample: float | None = None) -> float:
    oversample = oversample or float(imaging_defaults()["oversample"])
    wavelength = C_M_S / (get_setup(setup).high_ghz * 1e9)
    return wavelength / ACA_MAX_BASELINE_M * RAD_TO_ARCSEC / oversample


def cell_for(field: str, setup: int, kind: str, oversample: float | None = None) -> float:
    return cell_7m(setup, oversample) if kind == "7m" else cell_12m(field, oversample)


def _imsize(freq_hz: float, dish_m: float, cell_arcsec: float) -> int:
    """The original's rule: 2 x the primary beam's 1.13 lambda / D, in cells."""
    pb_width = 1.13 * C_M_S / freq_hz / dish_m * RAD_TO_ARCSEC
    # int(), not ceil(): the original truncates the width before rounding it up
    return optimum_size(int(2.0 * pb_width / cell_arcsec))


def imsize_for(setup: int, kind: str, cell_arcsec: float) -> int:
    return _imsize(get_setup(setup).low_ghz * 1e9, DISH_DIAMETER_M[_faust_kind(kind)], cell_arcsec)


def gridder_for(setup: int, kind: str) -> str:
    return "mosaic" if (_faust_kind(kind) == "joint" and setup in (1, 2)) else "standard"


def pblimit_for(kind: str) -> float:
    defaults = imaging_defaults()
    return float(defaults["pblimit_joint"] if _faust_kind(kind) == "joint" else defaults["pblimit_single_array"])


def geometry_for(field: str, setup: int, kind: str, *, oversample: float | None = None,
                 cell_arcsec: float | None = None, imsize: int | None = None) -> Geometry:
    """The documented geometry, with the run file's optional overrides
    (an explicit cell wins over an oversampling factor)."""
    check_array_kind(setup, kind)
    cell = cell_arcsec if cell_arcsec is not None else cell_for(field, setup, _faust_kind(kind), oversample)
    size = imsize if imsize is not None else imsize_for(setup, kind, cell)
    return Geometry(cell_arcsec=cell, imsize=int(size), gridder=gridder_for(setup, kind),
                    pblimit=pblimit_for(kind))


def data_geometry(freq_hz: float, max_baseline_m: float, dish_diameters_m: tuple[float, ...], *,
                  oversample: float | None = None, cell_arcsec: float | None = None,
                  imsize: int | None = None) -> Geometry:
    """The geometry of a run file's target from its data (see the module doc):
    ``freq_hz`` the window's sky frequency, the longest baseline and the dish
    diameters of the selected measurement sets."""
    if max_baseline_m <= 0 or not dish_diameters_m or min(dish_diameters_m) <= 0:
        raise UserInputError(f"cannot size the image: longest baseline {max_baseline_m:g} m, dish diameters "
                             f"{', '.join(f'{d:g}' for d in dish_diameters_m) or 'none'} m")
    oversample = oversample or float(imaging_defaults()["oversample"])
    res_arcsec = C_M_S / freq_hz / max_baseline_m * RAD_TO_ARCSEC
    cell = cell_arcsec if cell_arcsec is not None else res_arcsec / oversample
    size = imsize if imsize is not None else _imsize(freq_hz, min(dish_diameters_m), cell)
    mixed = max(dish_diameters_m) - min(dish_diameters_m) > 0.5
    return Geometry(cell_arcsec=cell, imsize=int(size), gridder="mosaic" if mixed else "standard",
                    pblimit=pblimit_for("joint" if mixed else "12m"))


def nominal_data_geometry(imsize: int | None = None) -> Geometry:
    """What the plan assumes for a run file's target before its data are read
    (only ``npix`` and ``gridder`` enter the cost model)."""
    return Geometry(cell_arcsec=float("nan"), imsize=int(imsize or NOMINAL_DATA_IMSIZE), gridder="standard",
                    pblimit=pblimit_for("12m"))
