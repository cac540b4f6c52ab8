"""Bounded-memory access to CASA image cubes: a plane or a strip at a time.

Why this module exists: the original pipeline read whole cubes into numpy
(``ia.getchunk()`` without limits) to make QA plots, which needed > 50 GB for
the Setup 3 cubes. Everything in :mod:`faust_hpc.products` goes through
:class:`PlaneReader`, which only asks CASA for bounded boxes
(``ia.getchunk`` with ``blc``/``trc``): one channel plane, or a *strip* of
rows across a few channels (:meth:`PlaneReader.block`). Strips matter
because CASA stores cubes in tiles spanning several channels and keeps the
tiles an access touched: a full-plane read of a 2000 x 2000 cube with 8-channel
tiles holds 128 MB of tiles per open image, a 50-row strip 3 MB. So the memory
of a QA or moment unit scales with the image *area* (its output maps), never
with the number of channels.

Also here: the robust noise estimate shared by QA and moments, and writing a
2-D map as FITS under a temporary name renamed into place. Product names and
their inverse (field, label, chunk parsed back out of a path) are
:mod:`faust_hpc.layout`'s.
"""
from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from faust_hpc import casa_env, spectral
from faust_hpc.fits_headers import set_archive_keywords
from faust_hpc.catalog import imaging_defaults
from faust_hpc.errors import PrerequisiteError, UserInputError

log = logging.getLogger(__name__)

MAD_TO_RMS = float(imaging_defaults().get("mad_to_rms", 1.482602218505602))
# Primary-beam response below which image pixels are blanked in QA plots and
# ignored by noise estimates (the pipeline's PBLIMIT for joint imaging).
PB_LIMIT = 0.2
# Largest number of pixels of one plane fed to the median in a noise estimate:
# a strided subsample keeps the estimate cheap on 2000 x 2000 planes.
RMS_MAX_SAMPLES = 262_144


# ----------------------------------------------------------------------------- inputs
def require(paths: Iterable[str | os.PathLike], why: str) -> None:
    """Raise one clear :class:`PrerequisiteError` naming every missing input."""
    missing = [str(p) for p in paths if not os.path.exists(p)]
    if missing:
        raise PrerequisiteError(f"{why}: missing {', '.join(missing)} (run the imaging "
                                f"finalize step for this image first)")


# ----------------------------------------------------------------------------- reading
class PlaneReader:
    """One open CASA image, read a channel plane at a time.

    Planes come back as float32 ``(ny, nx)`` arrays (row = Dec, the usual
    ``imshow(origin='lower')`` orientation) with masked pixels set to NaN. The
    Stokes axis must be degenerate (FAUST products are Stokes I).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        if not os.path.isdir(self.path):
            raise PrerequisiteError(f"{self.path}: CASA image not found")
        self._ia = casa_env.casatools().image()
        self._ia.open(self.path)
        self.shape: list[int] = [int(n) for n in self._ia.shape()]
        csys = self._ia.coordsys()
        try:
            types = list(csys.axiscoordinatetypes())
            self.units = list(csys.units())
            self.increment = list(csys.increment(format="n")["numeric"])
            self.restfreq_hz = float(csys.restfrequency()["value"][0]) if "Spectral" in types else None
            self.csys_record = csys.torecord()
        finally:
            csys.done()
        self.axis_types = types
        direction = [i for i, t in enumerate(types) if t == "Direction"]
        if len(direction) != 2:
            raise UserInputError(f"{self.path}: expected two direction axes, found axes {types}")
        self.x_axis, self.y_axis = direction
        self.spec_axis = types.index("Spectral") if "Spectral" in types else None
        self.stokes_axis = types.index("Stokes") if "Stokes" in types else None
        if self.stokes_axis is not None and self.shape[self.stokes_axis] != 1:
            raise UserInputError(f"{self.path}: has {self.shape[self.stokes_axis]} Stokes planes; "
                                 f"products are made from Stokes I images only")
        self.nx, self.ny = self.shape[self.x_axis], self.shape[self.y_axis]
        self.nchan = self.shape[self.spec_axis] if self.spec_axis is not None else 1
        self.has_mask = bool(self._ia.maskhandler("default"))
        try:
            tiles = [int(t) for t in self._ia.summary(list=False, verbose=False)["tileshape"]]
        except (KeyError, RuntimeError):
            tiles = [min(n, 64) for n in self.shape]
        self.tile_y = tiles[self.y_axis]
        self.tile_chan = tiles[self.spec_axis] if self.spec_axis is not None else 1

    # -- life cycle
    def close(self) -> None:
        if self._ia is not None:
            self._ia.done()
            self._ia = None

    def __enter__(self) -> "PlaneReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pixels
    def _box(self, chan: int) -> tuple[list[int], list[int]]:
        blc = [0] * len(self.shape)
        trc = [n - 1 for n in self.shape]
        if self.spec_axis is not None:
            if not 0 <= chan < self.nchan:
                raise IndexError(f"{self.path}: channel {chan} outside 0..{self.nchan - 1}")
            blc[self.spec_axis] = trc[self.spec_axis] = int(chan)
        return blc, trc

    def plane(self, chan: int) -> np.ndarray:
        """Channel ``chan`` as float32 ``(ny, nx)``; pixels masked in the image are NaN."""
        blc, trc = self._box(chan)
        data = np.asarray(self._ia.getchunk(blc=blc, trc=trc), dtype=np.float32)
        data = self._to_yx(data)
        if self.has_mask:
            good = self._to_yx(np.asarray(self._ia.getchunk(blc=blc, trc=trc, getmask=True)))
            data[~good] = np.nan
        return data

    def block(self, chan0: int, chan1: int, y0: int, y1: int) -> np.ndarray:
        """Channels ``chan0..chan1`` of rows ``y0..y1`` (inclusive) as float32
        ``(chan, y, x)``, masked pixels NaN.

        Why blocks: CASA stores cubes in tiles spanning several channels
        (e.g. 80 x 50 x 1 x 8) and caches every tile an access touches, so
        reading one full plane of a 2000 x 2000 cube holds 8 planes' worth of
        tiles (128 MB) per open image. A strip of rows across the channels
        touches only the tiles of that strip."""
        blc = [0] * len(self.shape)
        trc = [n - 1 for n in self.shape]
        blc[self.y_axis], trc[self.y_axis] = int(y0), int(y1)
        if self.spec_axis is not None:
            if not (0 <= chan0 <= chan1 < self.nchan):
                raise IndexError(f"{self.path}: channels {chan0}..{chan1} outside 0..{self.nchan - 1}")
            blc[self.spec_axis], trc[self.spec_axis] = int(chan0), int(chan1)
        data = self._to_cyx(np.asarray(self._ia.getchunk(blc=blc, trc=trc), dtype=np.float32))
        if self.has_mask:
            good = self._to_cyx(np.asarray(self._ia.getchunk(blc=blc, trc=trc, getmask=True)))
            data[~good] = np.nan
        return data

    def _to_cyx(self, chunk: np.ndarray) -> np.ndarray:
        keep = [self.spec_axis, self.y_axis, self.x_axis] if self.spec_axis is not None else [self.y_axis, self.x_axis]
        index = tuple(slice(None) if ax in keep else 0 for ax in range(chunk.ndim))
        remaining = [ax for ax in range(chunk.ndim) if ax in keep]
        out = np.transpose(chunk[index], [remaining.index(ax) for ax in keep])
        if self.spec_axis is None:
            out = out[None]
        return np.ascontiguousarray(out)

    def strips(self, budget_bytes: int, nchan: int) -> list[tuple[int, int]]:
        """Row ranges ``(y0, y1)`` (inclusive), aligned to the storage tiles,
        such that a block of ``nchan`` channels stays near ``budget_bytes``."""
        row_bytes = self.nx * max(nchan, 1) * 4
        tiles_per_strip = max(1, int(budget_bytes // max(row_bytes * self.tile_y, 1)))
        height = self.tile_y * tiles_per_strip
        return [(y, min(y + height, self.ny) - 1) for y in range(0, self.ny, height)]

    def _to_yx(self, chunk: np.ndarray) -> np.ndarray:
        # Keep the two direction axes, in (y, x) order, whatever the axis order on disk.
        index = [0] * chunk.ndim
        index[self.x_axis] = slice(None)
        index[self.y_axis] = slice(None)
        plane = chunk[tuple(index)]
        if self.x_axis < self.y_axis:
            plane = plane.T
        return np.ascontiguousarray(plane)

    # -- coordinates
    def frequencies_hz(self) -> np.ndarray:
        """Frequency of every channel (works for tabular spectral axes too)."""
        if self.spec_axis is None:
            raise UserInputError(f"{self.path}: image has no spectral axis")
        csys = self._ia.coordsys()
        try:
            pixel = [0.0] * len(self.shape)
            freqs = []
            unit = self.units[self.spec_axis]
            scale = {"Hz": 1.0, "kHz": 1e3, "MHz": 1e6, "GHz": 1e9}[unit]
            for k in range(self.nchan):
                pixel[self.spec_axis] = float(k)
                freqs.append(csys.toworld(pixel, "n")["numeric"][self.spec_axis] * scale)
        finally:
            csys.done()
        return np.asarray(freqs)

    def velocities_kms(self) -> np.ndarray:
        """Radio-convention velocity of every channel about the image's rest frequency."""
        if not self.restfreq_hz:
            raise UserInputError(f"{self.path}: image has no rest frequency; cannot derive velocities")
        return spectral.freq_to_velocity_kms(self.frequencies_hz(), self.restfreq_hz)

    @property
    def cell_arcsec(self) -> float:
        unit = self.units[self.x_axis]
        scale = {"rad": 206_264.80624709636, "deg": 3600.0, "arcmin": 60.0, "arcsec": 1.0}[unit]
        return abs(float(self.increment[self.x_axis])) * scale

    def brightness_unit(self) -> str:
        return str(self._ia.brightnessunit())

    def restoring_beam(self, chan: int | None = None) -> dict | None:
        """The restoring beam (per-plane beams: the one of ``chan``, else the middle plane)."""
        beam = self._ia.restoringbeam()
        if not beam:
            return None
        if "beams" in beam:
            k = self.nchan // 2 if chan is None else int(chan)
            return beam["beams"][f"*{k}"]["*0"]
        return beam

    def object_name(self) -> str:
        """The OBJECT header value (the field name in tclean products)."""
        try:
            return str(self._ia.summary(list=False, verbose=False).get("object", "") or "")
        except RuntimeError:
            return ""


def check_same_grid(ref: PlaneReader, other: PlaneReader, single_plane_ok: bool = False) -> None:
    """Products of one imaging run share their grid; anything else is a mix-up."""
    same = (other.nx, other.ny) == (ref.nx, ref.ny) and (
        other.nchan == ref.nchan or (single_plane_ok and other.nchan == 1))
    if not same:
        raise UserInputError(f"{other.path}: grid {other.nx}x{other.ny}x{other.nchan} does not match "
                             f"{ref.path} ({ref.nx}x{ref.ny}x{ref.nchan})")


def plane_or_single(reader: PlaneReader, chan: int) -> np.ndarray:
    """A plane of an image that may have one plane for all channels (a PB)."""
    return reader.plane(0 if reader.nchan == 1 else chan)


# ----------------------------------------------------------------------------- noise
def robust_rms(values: np.ndarray) -> float:
    """Median-absolute-deviation noise of the finite values (NaN if none).

    A strided subsample caps the cost on large planes; the stride is fixed by
    the size, so the estimate is deterministic."""
    flat = values.ravel()
    stride = max(1, int(np.ceil(flat.size / RMS_MAX_SAMPLES)))
    sample = flat[::stride]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return float("nan")
    med = np.median(sample)
    return float(MAD_TO_RMS * np.median(np.abs(sample - med)))


def combine_plane_rms(per_plane: Sequence[float]) -> float:
    """Cube noise from per-plane noise: the median is robust to the channels
    where emission fills much of the field."""
    vals = np.asarray([v for v in per_plane if np.isfinite(v) and v > 0])
    if vals.size == 0:
        raise UserInputError("cannot estimate the noise: the image has no finite pixels "
                             "inside the primary-beam limit")
    return float(np.median(vals))


def sample_channels(nchan: int, max_planes: int = 48) -> list[int]:
    """Evenly spaced channel indices (all of them for small cubes)."""
    if nchan <= max_planes:
        return list(range(nchan))
    return sorted({int(round(x)) for x in np.linspace(0, nchan - 1, max_planes)})


def hanning_plane(prev: np.ndarray | None, cur: np.ndarray, nxt: np.ndarray | None) -> np.ndarray:
    """One plane of a Hanning-smoothed cube (weights 1/4, 1/2, 1/4 along the
    spectral axis), renormalised where a neighbour is missing (cube edges) or
    NaN, so a blank neighbour never drags a plane towards zero."""
    num = np.where(np.isfinite(cur), 0.5 * cur, 0.0).astype(np.float32)
    den = np.where(np.isfinite(cur), 0.5, 0.0).astype(np.float32)
    for side in (prev, nxt):
        if side is None:
            continue
        ok = np.isfinite(side)
        num += np.where(ok, 0.25 * side, 0.0)
        den += np.where(ok, 0.25, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[~np.isfinite(cur)] = np.nan
    return out


# ----------------------------------------------------------------------------- writing
def temp_sibling(final: Path, suffix: str = "") -> Path:
    """A hidden temporary name in the final file's directory (same filesystem,
    so the rename into place is atomic)."""
    return final.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{final.name}{suffix}")


def write_map_fits(outfile: Path, data_yx: np.ndarray, template: PlaneReader, chan: int,
                   unit: str, beam: dict | None = None, object_name: str | None = None) -> Path:
    """Write a 2-D map on the template's sky grid as FITS, atomically.

    The map keeps the cube's axes (degenerate Stokes and spectral axes, the
    latter at channel ``chan``, e.g. the systemic velocity) so FITS viewers
    and WCS readers treat it like the cube it came from. The archive keywords
    (``OBJECT``, ``INSTRUME``, ``DATAMIN``, ``DATAMAX``) are set as on the cubes."""
    ct = casa_env.casatools()
    outfile = Path(outfile)
    outfile.parent.mkdir(parents=True, exist_ok=True)
    tmp_im = temp_sibling(outfile, ".im")
    tmp_fits = temp_sibling(outfile)
    arr = np.asarray(data_yx, dtype=np.float32)
    if template.x_axis < template.y_axis:
        arr = arr.T  # (ny, nx) -> (nx, ny)
    pixels = _expand(arr, template)
    csys = ct.coordsys()
    csys.fromrecord(template.csys_record)
    if template.spec_axis is not None:
        _move_spectral_reference(csys, template, chan)
    ia = ct.image()
    try:
        ia.fromarray(outfile=str(tmp_im), pixels=pixels, csys=csys.torecord(), overwrite=True)
        ia.setbrightnessunit(unit)
        if beam:
            ia.setrestoringbeam(major=beam["major"], minor=beam["minor"], pa=beam["positionangle"])
        ia.tofits(outfile=str(tmp_fits), overwrite=True, velocity=False, history=False)
    finally:
        ia.done()
        csys.done()
        shutil.rmtree(tmp_im, ignore_errors=True)
    # astropy, not casatasks.imhead: importing casatasks costs ~150 MB per process
    finite = np.isfinite(arr)
    set_archive_keywords(tmp_fits, object_name or None, float(arr[finite].min()) if finite.any() else None,
                         float(arr[finite].max()) if finite.any() else None)
    os.replace(tmp_fits, outfile)
    return outfile


def _expand(arr_xy: np.ndarray, template: PlaneReader) -> np.ndarray:
    """Insert the degenerate axes of the template around a 2-D (x, y) map
    (NaN pixels stay NaN in the FITS file: blank)."""
    shape = [1] * len(template.shape)
    shape[template.x_axis], shape[template.y_axis] = template.nx, template.ny
    out = arr_xy
    for axis in range(len(template.shape)):
        if axis not in (template.x_axis, template.y_axis):
            out = np.expand_dims(out, axis)
    assert list(out.shape) == shape, (out.shape, shape)
    return out


def _move_spectral_reference(csys: Any, template: PlaneReader, chan: int) -> None:
    """Make pixel 0 of the single-plane map sit at the template's channel ``chan``."""
    pixel = [0.0] * len(template.shape)
    pixel[template.spec_axis] = float(chan)
    world = csys.toworld(pixel, "n")["numeric"]
    refpix = csys.referencepixel()["numeric"]
    refval = csys.referencevalue(format="n")["numeric"]
    refpix[template.spec_axis] = 0.0
    refval[template.spec_axis] = world[template.spec_axis]
    csys.setreferencepixel(value=list(refpix))
    csys.setreferencevalue(value=list(refval))
