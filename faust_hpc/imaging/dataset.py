"""DataSet: which measurement sets to image, and the image geometry.

MS discovery follows the facts' layout ``<DATA_DIR>/<FIELD>-Setup<N>/<glob>``.
``kind`` selects execution blocks by dish diameter read with msmetadata
(12m: 12 +- 0.5 m, 7m: 7 +- 0.5 m; joint: all), never by file name. Cell,
image size, gridder and pblimit come from :mod:`faust_hpc.geometry` (the
documented rules) with the run file's optional overrides.

Discovery is lazy (first use of :attr:`DataSet.vis`), so creating a DataSet
costs nothing and needs no CASA; the first stage that touches the data
raises :class:`~faust_hpc.errors.UserInputError` naming the directory or
file when something is missing.
"""
from __future__ import annotations

import logging
import os
from glob import glob
from pathlib import Path
from typing import Any

import astropy.units as u

from faust_hpc import catalog, geometry
from faust_hpc.errors import UserInputError
from faust_hpc.imaging import paths
from faust_hpc.imaging.image_tools import glob_escape, tools

log = logging.getLogger(__name__)


def ms_contains_diameter(ms_filen: str, diameter: float | None = None, epsilon: float = 0.5) -> bool:
    """Does the MS contain an antenna of this dish diameter (metres, +- epsilon)?"""
    if not os.path.isdir(ms_filen):
        raise UserInputError(f"measurement set not found: {ms_filen}")
    msmd = tools().msmetadata()
    try:
        msmd.open(ms_filen)
        ant_ids = msmd.antennaids(mindiameter=f"{diameter - epsilon}m", maxdiameter=f"{diameter + epsilon}m")
    except RuntimeError as exc:
        raise UserInputError(f"cannot read antenna table of measurement set {ms_filen}: {exc}") from exc
    finally:
        msmd.close()
        msmd.done()
    return len(ant_ids) > 0


def spw_ids_for_ot_name(vis: list[str], ot_name: str, label: str = "",
                        intent: str | None = None) -> list[str]:
    """SPW id of the window whose name ends in ``ot_name``, one per MS (12m and
    7m execution blocks number their windows differently)."""
    intent = intent or catalog.load_catalog().data_layout["science_intent"]
    ids: list[str] = []
    for filen in vis:
        if not os.path.isdir(filen):
            raise UserInputError(f"measurement set not found: {filen}")
        msmd = tools().msmetadata()
        try:
            msmd.open(filen)
            try:
                sci = list(msmd.spwsforintent(intent))
            except RuntimeError:
                sci = []
            if not sci:
                sci = list(range(msmd.nspw()))
            names = list(msmd.namesforspws(sci))
        except RuntimeError as exc:
            raise UserInputError(f"cannot read measurement set {filen}: {exc}") from exc
        finally:
            msmd.close()
            msmd.done()
        matches = [int(dd) for dd, name in zip(sci, names) if name.endswith(ot_name)]
        if not matches:
            what = f'SPW "{label}" (name ending "{ot_name}")' if label else f'SPW ending "{ot_name}"'
            raise UserInputError(f"{what} not found in measurement set {filen}; "
                                 f"its science windows are: {', '.join(names) or 'none'}")
        if len(matches) > 1:
            raise UserInputError(f'several SPWs end with "{ot_name}" in {filen}: is the MS concatenated?')
        ids.append(str(matches[0]))
    return ids


class DataSet:
    """The measurement sets and image geometry of one field, Setup and array kind.

    Parameters
    ----------
    field : FAUST field name (``ALL_FIELD_NAMES``).
    setup : 1, 2 or 3.
    kind : ``'joint'``, ``'12m'`` or ``'7m'``.
    data_dir : overrides ``paths.DATA_DIR``.
    oversample, cell_arcsec, imsize : optional geometry overrides (run file).
    """

    low_freqs = {k: v.low_ghz for k, v in catalog.load_catalog().setups.items()}
    high_freqs = {k: v.high_ghz for k, v in catalog.load_catalog().setups.items()}

    def __init__(self, field: str, setup: int = 1, kind: str = "joint", *,
                 data_dir: str | os.PathLike | None = None, oversample: float | None = None,
                 cell_arcsec: float | None = None, imsize: int | None = None):
        kind = kind.lower()
        self.target = catalog.get_target(field)
        catalog.get_setup(setup)
        geometry.check_array_kind(setup, kind)
        self.field = field
        self.setup = int(setup)
        self.kind = kind
        self.data_dir = Path(data_dir).expanduser().resolve() if data_dir is not None else paths.get_data_dir()
        self.oversample = oversample
        self.cell_arcsec_override = cell_arcsec
        self.imsize_override = imsize
        self._vis: list[str] | None = None

    def __repr__(self) -> str:
        return f"DataSet({self.field!r}, setup={self.setup}, kind={self.kind!r}, data_dir='{self.data_dir}')"

    # -- measurement sets -------------------------------------------------
    @property
    def ms_dir(self) -> Path:
        return self.data_dir / f"{self.field}-Setup{self.setup}"

    @property
    def ms_fmt(self) -> str:
        """Glob of the measurement sets: ``<DATA_DIR>/<FIELD>-Setup<N>/<ms_glob>``."""
        return str(self.ms_dir / catalog.load_catalog().data_layout["ms_glob"])

    def find_all_ms(self) -> list[str]:
        if not self.ms_dir.is_dir():
            raise UserInputError(f"data directory {self.ms_dir} does not exist; expected "
                                 f"<data_dir>/{self.field}-Setup{self.setup}/ with the measurement sets")
        pattern = glob_escape(str(self.ms_dir)) + "/" + catalog.load_catalog().data_layout["ms_glob"]
        found = sorted(glob(pattern))
        if not found:
            raise UserInputError(f"no measurement set matching {self.ms_fmt}")
        return found

    @property
    def vis(self) -> list[str]:
        """Measurement sets of this array kind (sorted, discovered once)."""
        if self._vis is None:
            found = self.find_all_ms()
            if self.kind == "joint":
                selected = found
            else:
                diameter = geometry.DISH_DIAMETER_M[self.kind]
                selected = [f for f in found if ms_contains_diameter(f, diameter=diameter)]
                if not selected:
                    raise UserInputError(f"no {self.kind} execution block (dish diameter {diameter:g} m) "
                                         f"among {', '.join(os.path.basename(f) for f in found)}")
            self._vis = selected
            log.info("%s %s Setup%d: %d MS selected", self.field, self.kind, self.setup, len(selected))
        return list(self._vis)

    @vis.setter
    def vis(self, value: list[str]) -> None:
        self._vis = [str(v) for v in value]

    # -- geometry ---------------------------------------------------------
    @property
    def geometry(self) -> geometry.Geometry:
        return geometry.geometry_for(self.field, self.setup, self.kind, oversample=self.oversample,
                                     cell_arcsec=self.cell_arcsec_override, imsize=self.imsize_override)

    @property
    def default_geometry(self) -> geometry.Geometry:
        """The documented geometry without run-file overrides."""
        return geometry.geometry_for(self.field, self.setup, self.kind)

    @property
    def cell_12m(self) -> str:
        return _arcsec_str(geometry.cell_12m(self.field, self.oversample))

    @property
    def cell_7m(self) -> str:
        return _arcsec_str(geometry.cell_7m(self.setup, self.oversample))

    @property
    def cell_arcsec(self) -> float:
        return self.geometry.cell_arcsec

    @property
    def cell(self) -> str:
        return _arcsec_str(self.cell_arcsec)

    @property
    def imsize(self) -> list[int]:
        size = self.geometry.imsize
        return [size, size]

    @property
    def gridder(self) -> str:
        return self.geometry.gridder

    @property
    def pblimit(self) -> float:
        return self.geometry.pblimit

    @staticmethod
    def calc_res(freq: Any, diam: Any) -> float:
        """lambda / D in arcsec (no 1.028 Airy factor, as documented), with the
        documented arguments: ``freq`` in Hz and ``diam`` in metres as the
        original, or astropy quantities in any frequency / length unit."""
        freq_hz = u.Quantity(freq, u.Hz).to_value(u.Hz)
        diam_m = u.Quantity(diam, u.m).to_value(u.m)
        return catalog.C_M_S / freq_hz / diam_m * geometry.RAD_TO_ARCSEC

    def check_if_product_dirs_exist(self, prod_dir: str | os.PathLike | None = None) -> Path:
        return paths.field_image_dir(Path(prod_dir) if prod_dir else paths.get_prod_dir(), self.field)


def _arcsec_str(value: float) -> str:
    return f"{value:.6g}arcsec"
