"""DataSet: which measurement sets to image, and the image geometry.

MS discovery follows the facts' layout ``<DATA_DIR>/<FIELD>-Setup<N>/<glob>``
for FAUST fields, and the ``data`` of a run file's ``[target."NAME"]``
(:func:`faust_hpc.runfile.target_ms_paths`) for any other field.
``kind`` selects execution blocks by dish diameter read with msmetadata
(12m: 12 +- 0.5 m, 7m: 7 +- 0.5 m; joint and all: every MS), never by file
name. Cell, image size, gridder and pblimit come from
:mod:`faust_hpc.geometry` (the documented rules) with the run file's optional
overrides; for a run file's target from its data (longest baseline and dish
diameters of the selected MSs, :func:`array_extent`, at the window's sky
frequency that :class:`~faust_hpc.imaging.config.ImageConfig` sets).

Discovery is lazy (first use of :attr:`DataSet.vis`), so creating a DataSet
costs nothing and needs no CASA; the first stage that touches the data
raises :class:`~faust_hpc.errors.UserInputError` naming the directory or
file when something is missing.
"""
from __future__ import annotations

import contextlib
import logging
import os
from glob import glob
from pathlib import Path
from typing import Any, Iterator

from functools import lru_cache

import astropy.units as u
import numpy as np

from faust_hpc import catalog, geometry, spectral
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


@contextlib.contextmanager
def _metadata(filen: str) -> Iterator[Any]:
    """An open msmetadata tool on ``filen``; a missing or unreadable MS is bad input."""
    if not os.path.isdir(filen):
        raise UserInputError(f"measurement set not found: {filen}")
    msmd = tools().msmetadata()
    try:
        msmd.open(filen)
        yield msmd
    except RuntimeError as exc:
        raise UserInputError(f"cannot read measurement set {filen}: {exc}") from exc
    finally:
        msmd.close()
        msmd.done()


def spw_ids_for_ot_name(vis: list[str], ot_name: str, label: str = "",
                        intent: str | None = None) -> list[str]:
    """SPW id of the window whose name ends in ``ot_name``, one per MS (12m and
    7m execution blocks number their windows differently)."""
    intent = intent or catalog.load_catalog().data_layout["science_intent"]
    ids: list[str] = []
    for filen in vis:
        with _metadata(filen) as msmd:
            try:
                sci = list(msmd.spwsforintent(intent))
            except RuntimeError:
                sci = []
            if not sci:
                sci = list(range(msmd.nspw()))
            names = list(msmd.namesforspws(sci))
        matches = [int(dd) for dd, name in zip(sci, names) if name.endswith(ot_name)]
        if not matches:
            what = f'SPW "{label}" (name ending "{ot_name}")' if label else f'SPW ending "{ot_name}"'
            raise UserInputError(f"{what} not found in measurement set {filen}; "
                                 f"its science windows are: {', '.join(names) or 'none'}")
        if len(matches) > 1:
            raise UserInputError(f'several SPWs end with "{ot_name}" in {filen}: is the MS concatenated?')
        ids.append(str(matches[0]))
    return ids


def array_extent(vis: list[str]) -> tuple[float, tuple[float, ...]]:
    """(longest baseline in m, dish diameters in m) of the unflagged antennas of
    the measurement sets (baselines within each MS), from their ANTENNA tables."""
    longest, dishes = 0.0, set()
    for filen in vis:
        tb = tools().table()
        try:
            tb.open(os.path.join(filen, "ANTENNA"))
            pos = np.asarray(tb.getcol("POSITION"), dtype=float)       # (3, nant), ITRF metres
            diam = np.asarray(tb.getcol("DISH_DIAMETER"), dtype=float)
            keep = ~np.asarray(tb.getcol("FLAG_ROW"), dtype=bool)
        except RuntimeError as exc:
            raise UserInputError(f"cannot read the antenna table of measurement set {filen}: {exc}") from exc
        finally:
            tb.close()
        pos, diam = pos[:, keep], diam[keep]
        if pos.shape[1] > 1:
            diff = pos[:, :, None] - pos[:, None, :]
            longest = max(longest, float(np.sqrt((diff ** 2).sum(axis=0)).max()))
        dishes.update(round(float(d), 3) for d in diam if d > 0)
    return longest, tuple(sorted(dishes))


def spw_ids_for_window(vis: list[str], spw: catalog.Spw, field: str, vsys_kms: float) -> list[str]:
    """SPW id of a run file's window in each MS: its ``spw`` id, the SPW of that
    name, or (no ``spw``) the one of the field whose channels hold the rest
    frequency at vsys (radio velocity; the MS's channel frequencies, any frame,
    to within half a channel)."""
    target_hz = float(spectral.velocity_to_freq_hz(vsys_kms, spw.restfreq_hz))
    ids: list[str] = []
    for filen in vis:
        with _metadata(filen) as msmd:
            nspw = int(msmd.nspw())
            names = list(msmd.namesforspws(list(range(nspw))))
            try:
                of_field = sorted(int(i) for i in msmd.spwsforfield(field))
            except RuntimeError:
                of_field = list(range(nspw))
            ranges = {}
            for i in of_field:
                freqs = np.asarray(msmd.chanfreqs(i), dtype=float)
                half = float(np.abs(np.asarray(msmd.chanwidths(i), dtype=float)).max()) / 2.0
                ranges[i] = (float(freqs.min()) - half, float(freqs.max()) + half)
        where = f'window "{spw.label}"'
        if isinstance(spw.select, int):
            if spw.select not in ranges:
                raise UserInputError(f"{where}: spw = {spw.select} is not an SPW of field {field} in {filen}; its "
                                     f"SPWs: {', '.join(map(str, ranges)) or 'none'}")
            ids.append(str(spw.select))
            continue
        if isinstance(spw.select, str):
            matches = [i for i in ranges if names[i] == spw.select]
            if not matches:
                raise UserInputError(f'{where}: no SPW named "{spw.select}" for field {field} in {filen}; its SPW '
                                     f"names: {', '.join(repr(names[i]) for i in ranges) or 'none'}")
            ids.append(str(matches[0]))
            continue
        covering = [i for i, (lo, hi) in ranges.items() if lo <= target_hz <= hi]
        if not covering:
            spans = ", ".join(f"{i}: {lo / 1e6:.3f}-{hi / 1e6:.3f} MHz" for i, (lo, hi) in ranges.items())
            raise UserInputError(f"{where}: no SPW of field {field} in {filen} covers {spw.restfreq} at vsys "
                                 f"{vsys_kms:g} km/s ({target_hz / 1e6:.3f} MHz); its SPWs: {spans or 'none'}; "
                                 f"set spw = <id or name>")
        # the narrowest covering SPW: the line's window rather than a wide continuum one
        ids.append(str(min(covering, key=lambda i: ranges[i][1] - ranges[i][0])))
    return ids


def visibility_rows(vis: list[str], spw_ids: list[str], field: str) -> int:
    """Main-table rows of ``field`` in SPW ``spw_ids[i]`` of ``vis[i]``, summed:
    visibility rows per channel, the cost model's gridding size (an index
    query on two integer columns, no data read)."""
    total = 0
    for filen, spw in zip(vis, spw_ids):
        with _metadata(filen) as msmd:
            ddids = sorted(int(d) for d in msmd.datadescids(spw=int(spw)))
            fields = sorted(int(f) for f in msmd.fieldsforname(field))
        if not ddids or not fields:
            continue
        tb = tools().table()
        try:
            tb.open(filen)
            sub = tb.query(f"FIELD_ID IN {fields} AND DATA_DESC_ID IN {ddids}", columns="TIME")
            try:
                total += int(sub.nrows())
            finally:
                sub.close()
        finally:
            tb.close()
    return total


@lru_cache(maxsize=32)
def _cached_extent(vis: tuple[str, ...]) -> tuple[float, tuple[float, ...]]:
    return array_extent(list(vis))


class DataSet:
    """The measurement sets and image geometry of one field, Setup and array kind.

    Parameters
    ----------
    field : FAUST field name (``ALL_FIELD_NAMES``) or a run file's target.
    setup : 1, 2 or 3 (a run file's target imaged in its own windows: 0).
    kind : ``'joint'``, ``'12m'``, ``'7m'`` or ``'all'``.
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
        if self.target.faust or setup != catalog.WINDOW_SETUP:
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
        # a run file's target: the sky frequency its geometry is computed at (ImageConfig sets it)
        self.sky_freq_hz: float | None = None

    @property
    def is_faust(self) -> bool:
        return self.target.faust

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
        if not self.is_faust:
            from faust_hpc.runfile import target_ms_paths

            found = target_ms_paths(self.target, self.data_dir)
            if not found:
                raise UserInputError(f"target {self.field}: data {', '.join(self.target.data)} (relative to "
                                     f"{self.data_dir}) names no measurement set")
            return found
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
            if self.kind in ("joint", "all"):
                selected = found
            else:
                diameter = geometry.DISH_DIAMETER_M[self.kind]
                selected = [f for f in found if ms_contains_diameter(f, diameter=diameter)]
                if not selected:
                    raise UserInputError(f"no {self.kind} execution block (dish diameter {diameter:g} m) "
                                         f"among {', '.join(os.path.basename(f) for f in found)}")
            self._vis = selected
            log.info("%s %s: %d MS selected", self.field, self.kind, len(selected))
        return list(self._vis)

    @vis.setter
    def vis(self, value: list[str]) -> None:
        self._vis = [str(v) for v in value]

    # -- geometry ---------------------------------------------------------
    @property
    def geometry(self) -> geometry.Geometry:
        if not self.is_faust:
            return self._data_geometry(oversample=self.oversample, cell_arcsec=self.cell_arcsec_override,
                                       imsize=self.imsize_override)
        return geometry.geometry_for(self.field, self.setup, self.kind, oversample=self.oversample,
                                     cell_arcsec=self.cell_arcsec_override, imsize=self.imsize_override)

    @property
    def default_geometry(self) -> geometry.Geometry:
        """The documented geometry without run-file overrides."""
        if not self.is_faust:
            return self._data_geometry()
        return geometry.geometry_for(self.field, self.setup, self.kind)

    def _sky_freq(self) -> float:
        if self.sky_freq_hz is None:
            raise UserInputError(f"{self!r}: the geometry of a run file's target needs the window's sky "
                                 f"frequency (set dset.sky_freq_hz, as ImageConfig does)")
        return float(self.sky_freq_hz)

    def _data_geometry(self, **overrides: Any) -> geometry.Geometry:
        longest, dishes = _cached_extent(tuple(self.vis))
        return geometry.data_geometry(self._sky_freq(), longest, dishes, **overrides)

    @property
    def phasecenter(self) -> str:
        """tclean's phase centre: a run file's ``ra``/``dec`` (J2000), else "" (the MS's)."""
        return f"J2000 {self.target.ra} {self.target.dec}" if self.target.ra is not None else ""

    @property
    def res_arcsec(self) -> float:
        """The target resolution: FAUST's catalog value; for a run file's target
        lambda / longest baseline at the window's sky frequency (from the data)."""
        if self.is_faust:
            return self.target.res
        longest, _ = _cached_extent(tuple(self.vis))
        if longest <= 0:
            raise UserInputError(f"{self.field}: no baseline in {', '.join(self.vis)}: cannot size the image")
        return catalog.C_M_S / self._sky_freq() / longest * geometry.RAD_TO_ARCSEC

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
