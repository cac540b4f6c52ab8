"""Moment maps of the final cubes, computed one channel plane at a time.

As documented for the original pipeline (``MomentMapper``,
``make_moments_from_image``, ``make_all_moment_maps``): within a velocity
window of half-width ``vwin`` about the target's systemic velocity (5 km/s by
default, 1.25 km/s for CCH, whose hyperfine satellites are 2.5 km/s apart)

- ``max``      peak intensity, all emission in the window;
- ``mom0``     integrated intensity  M0 = dv * sum(I_i), pixels inside the clean mask;
- ``mom0_err`` dM0 = dv * sqrt(N) * rms;
- ``mom1``     M1 = sum(I_i v_i) / sum(I_i), pixels inside the clean mask *and*
  above ``m1_sigma`` times the noise of the Hanning-smoothed cube;
- ``mom1_err`` dM1 = |M1| sqrt((dN1/N1)^2 + (dM0/M0)^2) with N1 = dv sum(I_i v_i),
  dN1 = dv rms sqrt(sum v_i^2) (the documented quotient-rule estimate);
- ``mom2``     M2 = sqrt(sum(I_i (v_i - M1)^2) / sum(I_i)), clean mask and
  ``m2_sigma`` on the Hanning-smoothed cube.

The significance cut uses the Hanning-smoothed cube (it suppresses
single-channel noise spikes); the moments themselves use the unsmoothed data.
``max``, ``mom0`` and ``mom0_err`` are corrected for the primary beam at the
systemic velocity (``.pbcor`` in their names, as the original).

Why not ``ia.moments``: the masks need the smoothed cube, the clean mask and the
thresholds combined per pixel, and the error maps need the same sums. One pass
over the window's planes accumulates every sum at once, with memory bounded by
a handful of planes (the window is never read as a whole). The Hanning cube is
never written to disk: each smoothed plane is made from three raw planes.
"""
from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from faust_hpc.catalog import all_spw_labels, get_spw, get_target, imaging_defaults, parse_velocity_kms
from faust_hpc.errors import CatalogError, UserInputError
from faust_hpc.layout import COMMON_EXT, IMAGE_EXT, moment_map_name
from faust_hpc.layout import parse as parse_product
from faust_hpc.products import paths
from faust_hpc.products.cube import (PB_LIMIT, PlaneReader, check_same_grid, combine_plane_rms,
                                     hanning_plane, plane_or_single, require, robust_rms,
                                     sample_channels, write_map_fits)

log = logging.getLogger(__name__)

_DEFAULTS = imaging_defaults()["moments"]
DEFAULT_VWIN_KMS = float(_DEFAULTS["vwin_kms"])
CCH_VWIN_KMS = float(_DEFAULTS["cch_vwin_kms"])
DEFAULT_M1_SIGMA = float(_DEFAULTS["m1_sigma"])
DEFAULT_M2_SIGMA = float(_DEFAULTS["m2_sigma"])

# Bytes of one strip block (rows x window channels) read at a time.
STRIP_BYTES = 16 * 2 ** 20
# At most this many channels in one block (with the budget above).
MAX_BLOCK_CHANNELS = 64
# Pixels per sampled plane that enter the noise estimate.
RMS_SAMPLES_PER_PLANE = 131_072

# Output extensions, in the order they are written (each "<base>.<ext>.fits").
MOMENT_EXTS = ("max.pbcor", "mom0.pbcor", "mom0_err.pbcor", "mom1", "mom1_err", "mom2")


def _pb_strip(pb: PlaneReader, chan: int, y0: int, y1: int) -> np.ndarray:
    """Rows y0..y1 of the PB at ``chan`` (a single-plane PB serves every channel)."""
    k = 0 if pb.nchan == 1 else chan
    return pb.block(k, k, y0, y1)[0]


def default_vwin(label: str | None) -> float:
    """Documented default half-window: 1.25 km/s for CCH, else 5 km/s; a run file's
    window with a ``line_vwin`` (full width): half of it."""
    if label is not None and label in all_spw_labels():
        spw = get_spw(label)
        if spw.is_window and spw.line_vwin is not None:
            return parse_velocity_kms(spw.line_vwin) / 2.0
    mol = label.split("_", 1)[1] if label and "_" in label else None
    return CCH_VWIN_KMS if mol == "CCH" else DEFAULT_VWIN_KMS


def moment_paths(imagename: str | os.PathLike, moma_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """The FITS files :class:`MomentMapper` writes for an image, by extension."""
    name = parse_product(imagename, require_image_ext=True)
    outdir = _moment_outdir(name.stem, name.field, moma_dir)
    return {ext: outdir / moment_map_name(name.base, ext) for ext in MOMENT_EXTS}


def _moment_outdir(stem: str, field: str | None, moma_dir: str | os.PathLike | None) -> Path:
    if moma_dir is not None:
        root = Path(moma_dir)
    else:
        prod = paths.product_dir_of_image(f"{stem}.{IMAGE_EXT}")
        root = paths.moment_dir(prod=prod) if prod is not None else paths.moment_dir()
    return root / field if field else root


@dataclass
class _Sums:
    """Running per-pixel float64 sums for one mask. Moment 2 passes velocities
    relative to vsys: its variance is a difference of two sums, and about
    vsys both stay small, so a pixel with emission in a single channel gives
    a dispersion of 0 to within 1e-6 km/s (absolute velocities in float32
    left 0.0004-0.55 km/s)."""

    s0: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    n: np.ndarray

    @classmethod
    def zeros(cls, shape: tuple[int, int]) -> "_Sums":
        return cls(np.zeros(shape), np.zeros(shape), np.zeros(shape), np.zeros(shape, dtype=np.int32))

    def add(self, data: np.ndarray, sel: np.ndarray, v: float) -> None:
        vals = np.where(sel, data.astype(np.float64, copy=False), 0.0)
        self.s0 += vals
        self.s1 += vals * v
        self.s2 += vals * (v * v)
        self.n += sel


class MomentMapper:
    """Moment maps of one cube (the documented class).

    Parameters
    ----------
    imagename : CASA image, normally ``<stem>.image.common`` (the common-beam,
        not primary-beam corrected restored cube, whose noise is uniform, so
        one threshold suits the whole field). ``<stem>.mask`` and ``<stem>.pb``
        must exist beside it.
    vwin : velocity half-window in km/s about vsys (documented default 5; None:
        the per-line default, 1.25 km/s for CCH, half a run-file window's
        ``line_vwin``, as ``make_moments_from_image``).
    m1_sigma, m2_sigma : thresholds (multiples of the Hanning-cube noise) for
        the pixels used by moment 1 and moment 2.
    overwrite : remake existing FITS files (False: skip when all exist).
    rms : noise of the unsmoothed cube in image units (None: estimated from
        the cube, median over planes of the MAD noise within the PB limit).
    vsys : systemic velocity in km/s (None: the catalog value of the field
        named by the file, or the run file's ``vsys_kms`` of its target).
    moma_dir : output root (``<moma_dir>/<FIELD>/``); None: the ``moments/``
        directory of the product directory the image lives in.
    """

    def __init__(self, imagename: str | os.PathLike, vwin: float | None = DEFAULT_VWIN_KMS,
                 m1_sigma: float = DEFAULT_M1_SIGMA, m2_sigma: float = DEFAULT_M2_SIGMA,
                 overwrite: bool = True, rms: float | None = None, vsys: float | None = None,
                 moma_dir: str | os.PathLike | None = None, pb_limit: float = PB_LIMIT) -> None:
        self.imagename = str(imagename).rstrip("/")
        name = parse_product(self.imagename, require_image_ext=True)
        self.stem = name.stem
        self.basename = name.base
        self.field, self.label = name.field, name.label
        self.vwin = float(default_vwin(self.label) if vwin is None else vwin)
        if not self.vwin > 0:
            raise UserInputError(f"moments velocity half-window must be > 0 km/s, got {vwin}")
        self.m1_sigma, self.m2_sigma = float(m1_sigma), float(m2_sigma)
        self.overwrite = overwrite
        self.rms_override = rms
        self.pb_limit = pb_limit
        self.maskname = self.stem + ".mask"
        self.pbname = self.stem + ".pb"
        self.pbcor_input = ".pbcor" in os.path.basename(self.imagename)
        self.vsys = self._resolve_vsys(vsys)
        self.outputs = moment_paths(self.imagename, moma_dir)
        self.outdir = next(iter(self.outputs.values())).parent

    def _resolve_vsys(self, vsys: float | None) -> float:
        if vsys is not None:
            return float(vsys)
        if self.field is None:
            raise UserInputError(f"{self.imagename}: cannot tell the field from the file name (expected "
                                 f"<FIELD>_<LABEL>_<ARRAY>_<WEIGHTING>_<EXT> with a FAUST field or a run "
                                 f"file's target); pass vsys=")
        try:
            return get_target(self.field).vsys
        except CatalogError as exc:  # pragma: no cover - parse only returns catalog fields
            raise UserInputError(str(exc)) from None

    # ----------------------------------------------------------------- documented helpers
    def get_cube_velocity_axis(self, as_region_subim: bool = False,
                               with_image_axes: bool = False) -> np.ndarray:
        """Velocity (km/s) of every channel, or only of the window's channels."""
        with PlaneReader(self.imagename) as cube:
            velo = cube.velocities_kms()
            if as_region_subim:
                velo = velo[self._window(velo)]
            if with_image_axes:
                shape = [1] * len(cube.shape)
                shape[cube.spec_axis] = velo.size
                velo = velo.reshape(shape)
        return velo

    def _window(self, velo: np.ndarray) -> np.ndarray:
        """Indices of the channels within vsys +- vwin, in channel order."""
        inside = np.flatnonzero(np.abs(velo - self.vsys) <= self.vwin + 1e-9)
        if inside.size == 0:
            raise UserInputError(
                f"{self.imagename}: no channel within {self.vsys - self.vwin:.2f}..{self.vsys + self.vwin:.2f} km/s "
                f"(the cube spans {velo.min():.2f}..{velo.max():.2f} km/s); choose another vwin")
        return inside

    def get_top_right_corner_pixels(self, size: int | None = None) -> np.ndarray:
        """The unsmoothed cube's pixels in the top-right corner of the field
        (the last ``size`` rows and columns, default 1/8 of the image side),
        over the velocity window's channels: ``(nchan, size, size)``. That
        corner lies far from the target at the phase centre, so its pixels
        sample the noise (read as one bounded block, never the whole cube)."""
        with PlaneReader(self.imagename) as cube:
            win = self._window(cube.velocities_kms())
            n = max(1, min(cube.nx, cube.ny) // 8) if size is None else int(size)
            if not 0 < n <= min(cube.nx, cube.ny):
                raise UserInputError(f"corner size must be 1..{min(cube.nx, cube.ny)} pixels, got {size}")
            block = cube.block(int(win[0]), int(win[-1]), cube.ny - n, cube.ny - 1)
            return np.ascontiguousarray(block[:, :, cube.nx - n:])

    def get_region(self) -> tuple[int, int]:
        """First and last channel (inclusive) of the velocity window."""
        with PlaneReader(self.imagename) as cube:
            win = self._window(cube.velocities_kms())
        return int(win[0]), int(win[-1])

    def get_vlsr_pb_plane(self) -> np.ndarray:
        """Primary beam at the channel nearest vsys."""
        with PlaneReader(self.imagename) as cube, PlaneReader(self.pbname) as pb:
            velo = cube.velocities_kms()
            return plane_or_single(pb, int(np.argmin(np.abs(velo - self.vsys))))

    def get_rms(self, cube: PlaneReader, pb: PlaneReader) -> tuple[float, float]:
        """Noise of the unsmoothed and of the Hanning-smoothed cube.

        Both are measured (MAD, inside the PB limit) on the same sampled
        planes, read strip by strip, so a user-given ``rms`` is carried over to
        the Hanning cube by the measured ratio (about 1/1.3 for the correlated
        channels of ALMA cubes, 1/1.63 for independent ones)."""
        chans = sample_channels(cube.nchan)
        stride = max(1, int(np.ceil(cube.nx * cube.ny / RMS_SAMPLES_PER_PLANE)))
        raw: dict[int, list[np.ndarray]] = {k: [] for k in chans}
        hann: dict[int, list[np.ndarray]] = {k: [] for k in chans}
        for y0, y1 in cube.strips(STRIP_BYTES, 3):
            for k in chans:
                lo, hi = max(k - 1, 0), min(k + 1, cube.nchan - 1)
                blk = cube.block(lo, hi, y0, y1)
                inside = _pb_strip(pb, k, y0, y1) >= self.pb_limit
                cur = blk[k - lo]
                smooth = hanning_plane(blk[k - lo - 1] if k > lo else None, cur, blk[k - lo + 1] if k < hi else None)
                raw[k].append(np.where(inside, cur, np.nan).ravel()[::stride].copy())
                hann[k].append(np.where(inside, smooth, np.nan).ravel()[::stride].copy())
        rms_raw = combine_plane_rms([robust_rms(np.concatenate(raw[k])) for k in chans])
        rms_hann = combine_plane_rms([robust_rms(np.concatenate(hann[k])) for k in chans])
        if self.rms_override is not None:
            rms_hann *= float(self.rms_override) / rms_raw
            rms_raw = float(self.rms_override)
        return rms_raw, rms_hann

    def get_rms_map(self, with_pb_atten: bool = False) -> np.ndarray:
        """The noise per pixel: uniform in the flat-noise cube; divided by the
        PB at vsys when ``with_pb_atten`` (the noise of a PB-corrected map)."""
        with PlaneReader(self.imagename) as cube, PlaneReader(self.pbname) as pb:
            rms, _ = self.get_rms(cube, pb)
        pbplane = self.get_vlsr_pb_plane()
        rms_map = np.full(pbplane.shape, rms, dtype=np.float32)
        if with_pb_atten:
            with np.errstate(invalid="ignore", divide="ignore"):
                rms_map = np.where(pbplane >= self.pb_limit, rms_map / pbplane, np.nan)
        return rms_map

    # ----------------------------------------------------------------- the work
    def existing(self) -> bool:
        return all(p.exists() for p in self.outputs.values())

    def make_moments(self, remove_hanning: bool = True) -> list[Path]:
        """Create all moment maps (``remove_hanning`` is kept for the documented
        API; no Hanning cube is ever written, so there is nothing to remove)."""
        if not self.overwrite and self.existing():
            log.info("moment maps exist, skipping: %s", self.basename)
            return list(self.outputs.values())
        require([self.imagename, self.maskname, self.pbname], f"moment maps of {self.basename}")
        with PlaneReader(self.imagename) as cube, PlaneReader(self.maskname) as mask, \
                PlaneReader(self.pbname) as pb:
            check_same_grid(cube, mask)
            check_same_grid(cube, pb, single_plane_ok=True)
            maps = self._accumulate(cube, mask, pb)
            self.outdir.mkdir(parents=True, exist_ok=True)
            written = []
            beam = cube.restoring_beam(self._vsys_chan)
            for ext in MOMENT_EXTS:
                data, unit = maps.pop(ext)
                out = self.outputs[ext]
                write_map_fits(out, data, cube, self._vsys_chan, unit, beam=beam, object_name=self.field)
                del data
                written.append(out)
                log.info("wrote %s", out)
        return written

    def _accumulate(self, cube: PlaneReader, mask: PlaneReader,
                    pb: PlaneReader) -> dict[str, tuple[np.ndarray, str]]:
        """All maps, computed strip by strip of rows: each strip reads the
        window's channels (plus one on each side for the Hanning smoothing)
        once, so memory is the output maps plus one strip block."""
        velo = cube.velocities_kms()
        win = self._window(velo)
        dv = float(np.median(np.abs(np.diff(velo)))) if velo.size > 1 else 1.0
        self._vsys_chan = int(np.argmin(np.abs(velo - self.vsys)))
        rms, rms_hann = self.get_rms(cube, pb)
        self.rms, self.rms_hann = rms, rms_hann
        log.info("%s: window %d..%d (%d channels, dv=%.4f km/s), rms=%.4g, hanning rms=%.4g",
                 self.basename, win[0], win[-1], win.size, dv, rms, rms_hann)
        first, last = int(win[0]), int(win[-1])
        # Channels per block: a block of one tile-row strip stays within the budget
        # however wide the window (the sums are additive over channel blocks).
        cstep = max(1, min(MAX_BLOCK_CHANNELS, int(STRIP_BYTES // (cube.nx * cube.tile_y * 4)) - 2,
                           last - first + 1))
        bunit = cube.brightness_unit()
        full = {ext: np.full((cube.ny, cube.nx), np.nan, dtype=np.float32) for ext in MOMENT_EXTS}
        units: dict[str, str] = {}
        for y0, y1 in cube.strips(STRIP_BYTES, cstep + 2):
            shape = (y1 - y0 + 1, cube.nx)
            peak = np.full(shape, -np.inf, dtype=np.float32)
            m0, m1, m2 = _Sums.zeros(shape), _Sums.zeros(shape), _Sums.zeros(shape)
            sum_v2_m1 = np.zeros(shape)   # sum of v_i^2 over the moment-1 pixels (for its error)
            for c0 in range(first, last + 1, cstep):
                c1 = min(c0 + cstep - 1, last)
                lo, hi = max(c0 - 1, 0), min(c1 + 1, cube.nchan - 1)   # neighbours for the Hanning plane
                blk = cube.block(lo, hi, y0, y1)
                mblk = mask.block(c0, c1, y0, y1)
                for k in range(c0, c1 + 1):
                    v = float(velo[k])
                    cur = blk[k - lo]
                    finite = np.isfinite(cur)
                    np.fmax(peak, np.where(finite, cur, -np.inf), out=peak)
                    in_mask = (mblk[k - c0] > 0.5) & finite
                    hann = hanning_plane(blk[k - lo - 1] if k > lo else None, cur,
                                         blk[k - lo + 1] if k < hi else None)
                    with np.errstate(invalid="ignore"):
                        sel1 = in_mask & (hann > self.m1_sigma * rms_hann)
                        sel2 = in_mask & (hann > self.m2_sigma * rms_hann)
                    m0.add(cur, in_mask, v)
                    m1.add(cur, sel1, v)
                    m2.add(cur, sel2, v - self.vsys)
                    sum_v2_m1 += np.where(sel1, v * v, 0.0)
                del blk, mblk
            pbstrip = _pb_strip(pb, self._vsys_chan, y0, y1)
            for ext, data, unit in self._finish(peak, m0, m1, m2, sum_v2_m1, dv, rms, pbstrip, bunit):
                full[ext][y0:y1 + 1] = data
                units[ext] = unit
        return {ext: (full[ext], units[ext]) for ext in MOMENT_EXTS}

    def _finish(self, peak: np.ndarray, m0: _Sums, m1: _Sums, m2: _Sums, sum_v2_m1: np.ndarray,
                dv: float, rms: float, pbplane: np.ndarray, bunit: str) -> Iterator[tuple[str, np.ndarray, str]]:
        """Yield ``(ext, map, unit)`` one map at a time, releasing the sums each
        map no longer needs, so the peak memory stays near that of the sums."""
        nan = np.nan
        flux_unit = bunit or "Jy/beam"
        if self.pbcor_input:
            pbcor = np.ones(pbplane.shape, dtype=np.float32)
        else:
            pbcor = np.where(pbplane >= self.pb_limit, pbplane, nan).astype(np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            yield "max.pbcor", np.where(np.isfinite(peak), peak, nan).astype(np.float32) / pbcor, flux_unit
            del peak
            has0 = m0.n > 0
            yield "mom0.pbcor", (np.where(has0, dv * m0.s0, nan) / pbcor).astype(np.float32), f"{flux_unit}.km/s"
            yield ("mom0_err.pbcor", (np.where(has0, dv * np.sqrt(m0.n) * rms, nan) / pbcor).astype(np.float32),
                   f"{flux_unit}.km/s")
            del has0, m0
            ok1 = (m1.n > 0) & (m1.s0 > 0)
            mom1 = np.where(ok1, m1.s1 / m1.s0, nan)
            yield "mom1", mom1.astype(np.float32), "km/s"
            # dM1 = |M1| sqrt((dN1/N1)^2 + (dM0/M0)^2), N1 = dv sum(I v), dN1 = dv rms sqrt(sum v^2)
            rel_n1 = rms * np.sqrt(sum_v2_m1) / np.abs(m1.s1)
            rel_m0 = rms * np.sqrt(m1.n) / m1.s0
            yield ("mom1_err", np.where(ok1, np.abs(mom1) * np.hypot(rel_n1, rel_m0), nan).astype(np.float32),
                   "km/s")
            del ok1, mom1, rel_n1, rel_m0, m1, sum_v2_m1
            # no valid channel (or no positive sum): NaN, never 0
            ok2 = (m2.n > 0) & (m2.s0 > 0)
            mean2 = np.where(ok2, m2.s1 / m2.s0, nan)            # relative to vsys, float64
            var2 = np.clip(m2.s2 / m2.s0 - mean2 ** 2, 0.0, None)
            del mean2
            yield "mom2", np.where(ok2, np.sqrt(var2), nan).astype(np.float32), "km/s"

    # documented single-moment entry points (each makes the full set: one pass is
    # as cheap as any one of them)
    def make_max(self) -> Path:
        return self._one("max.pbcor")

    def make_mom0(self) -> Path:
        return self._one("mom0.pbcor")

    def make_mom0_err(self) -> Path:
        return self._one("mom0_err.pbcor")

    def make_mom1(self) -> Path:
        return self._one("mom1")

    def make_mom1_err(self) -> Path:
        return self._one("mom1_err")

    def make_mom2(self) -> Path:
        return self._one("mom2")

    def _one(self, ext: str) -> Path:
        if self.overwrite or not self.outputs[ext].exists():
            saved, self.overwrite = self.overwrite, True
            try:
                self.make_moments()
            finally:
                self.overwrite = saved
        return self.outputs[ext]


def resolve_moment_image(path: str | os.PathLike) -> str:
    """The cube moments are made from: ``<stem>.image.common`` when it exists
    (the documented input), else the path as given."""
    text = str(path).rstrip("/")
    name = parse_product(text, require_image_ext=True)
    common = f"{name.stem}.{COMMON_EXT}"
    if name.image_ext == IMAGE_EXT and os.path.isdir(common):
        return common
    return text


def make_moments_from_image(path: str | os.PathLike, vwin: float | None = None, overwrite: bool = True,
                            **kwargs) -> list[Path]:
    """Moment maps for one image (``.image`` or ``.image.common``); returns the
    FITS files. ``kwargs`` go to :class:`MomentMapper` (``rms``, ``moma_dir``,
    ``m1_sigma``, ``m2_sigma``, ``vsys``)."""
    mapper = MomentMapper(resolve_moment_image(path), vwin=vwin, overwrite=overwrite, **kwargs)
    return mapper.make_moments()


def find_images(field: str, ext: str = "clean", ignore_chunks: bool = True,
                image_dir: str | os.PathLike | None = None, suffix: str = ".image") -> list[str]:
    """Images ``<IMAG_DIR>/<field>/<field>_*_<ext><suffix>``, sorted."""
    root = paths.image_dir(image_dir)
    pattern = os.path.join(glob.escape(str(root)), field, f"{glob.escape(field)}_*_{glob.escape(ext)}{suffix}")
    found = sorted(glob.glob(pattern))
    if ignore_chunks:
        found = [p for p in found if not parse_product(p).is_chunk]
    return found


def make_all_moment_maps(field: str, ext: str = "clean", vwin: float | None = None, ignore_chunks: bool = True,
                         overwrite: bool = True, image_dir: str | os.PathLike | None = None,
                         moma_dir: str | os.PathLike | None = None) -> list[Path]:
    """Moment maps for every image of a field with the given extension name.

    ``vwin=None`` uses the documented default per line (5 km/s, CCH 1.25 km/s);
    a number applies to all lines."""
    images = find_images(field, ext, ignore_chunks, image_dir, f".{COMMON_EXT}") or \
        find_images(field, ext, ignore_chunks, image_dir, f".{IMAGE_EXT}")
    if not images:
        raise UserInputError(f"no images {field}_*_{ext}.image[.common] under "
                             f"{paths.image_dir(image_dir) / field}; check the field name and ext")
    written: list[Path] = []
    for image in images:
        written += make_moments_from_image(image, vwin=vwin, overwrite=overwrite, moma_dir=moma_dir)
    return written


def iter_moment_outputs(imagenames: Iterable[str], moma_dir: str | os.PathLike | None = None) -> Iterable[Path]:
    for name in imagenames:
        yield from moment_paths(name, moma_dir).values()


def partial_outputs(imagename: str | os.PathLike, moma_dir: str | os.PathLike | None = None) -> list[str]:
    """Temporary files a crashed moments unit may have left beside its outputs
    (``.tmp-<pid>-<random>-<name>``; the launcher may delete them before a retry)."""
    outputs = moment_paths(imagename, moma_dir)
    outdir = next(iter(outputs.values())).parent
    if not outdir.is_dir():
        return []
    base = parse_product(imagename, require_image_ext=True).base
    return sorted(str(p) for p in outdir.glob(f".tmp-*-{glob.escape(base)}.*"))
