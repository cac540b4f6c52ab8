"""Write CASA image cubes plane by plane, shaped like tclean's products.

Used by the products tests (exact, cheap truth: a model convolved with a beam
plus noise, without running tclean) and by ``bench/qa_memory.py`` (a
2000 x 2000 x 200 cube written without ever holding it in memory).
Axes are ``[RA, Dec, Stokes, Frequency]`` in LSRK with a rest frequency, as
tclean writes them; the frequency axis runs so that radio velocity increases
with channel number, as for a FAUST cube imaged with a start velocity.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from faust_hpc import casa_env, spectral


@dataclass(frozen=True)
class CubeGrid:
    """Sky and spectral grid of a synthetic cube."""

    nx: int
    ny: int
    nchan: int
    cell_arcsec: float
    restfreq_hz: float = 244.9355565e9
    vsys_kms: float = 5.0
    dv_kms: float = 0.17           # channel width (radio velocity; negative: frequency increases)
    ra: str = "16h57m19.64s"
    dec: str = "-16d09m24.0s"
    first_velocity_kms: float | None = None   # None: vsys at the middle channel

    def velocities(self) -> np.ndarray:
        """Radio velocity of every channel."""
        if self.first_velocity_kms is not None:
            return self.first_velocity_kms + np.arange(self.nchan) * self.dv_kms
        return self.vsys_kms + (np.arange(self.nchan) - (self.nchan - 1) / 2.0) * self.dv_kms

    def frequencies(self) -> np.ndarray:
        return spectral.velocity_to_freq_hz(self.velocities(), self.restfreq_hz)

    def offsets_arcsec(self) -> tuple[np.ndarray, np.ndarray]:
        """East and north offsets (arcsec) of every pixel, arrays of shape (ny, nx).

        RA increases to the east, i.e. towards *lower* x pixel index."""
        x = (np.arange(self.nx) - self.nx // 2) * self.cell_arcsec
        y = (np.arange(self.ny) - self.ny // 2) * self.cell_arcsec
        east = -x[None, :] * np.ones((self.ny, 1))
        north = y[:, None] * np.ones((1, self.nx))
        return east, north


def coordsys_record(grid: CubeGrid) -> dict:
    ct = casa_env.casatools()
    me, cs = ct.measures(), ct.coordsys()
    csys = cs.newcoordsys(direction=True, spectral=True, stokes=["I"])
    try:
        csys.settelescope("ALMA")   # a FAUST-like cube (newcoordsys defaults to the VLA)
        direction = me.direction("J2000", grid.ra, grid.dec)
        freqs = grid.frequencies()
        csys.setdirection(refcode="J2000", proj="SIN", refpix=[grid.nx // 2, grid.ny // 2],
                          refval=[f"{direction['m0']['value']}rad", f"{direction['m1']['value']}rad"],
                          incr=[f"-{grid.cell_arcsec}arcsec", f"{grid.cell_arcsec}arcsec"])
        csys.setspectral(refcode="LSRK", restfreq=f"{grid.restfreq_hz}Hz")
        refpix = csys.referencepixel()["numeric"]
        refpix[3] = 0.0
        csys.setreferencepixel(value=list(refpix))
        refval = csys.referencevalue(format="n")["numeric"]
        refval[3] = freqs[0]
        csys.setreferencevalue(value=list(refval))
        incr = csys.increment(format="n")["numeric"]
        incr[3] = (freqs[-1] - freqs[0]) / max(grid.nchan - 1, 1) if grid.nchan > 1 else -1e5
        csys.setincrement(value=list(incr))
        return csys.torecord()
    finally:
        csys.done()
        cs.done()


def write_cube(path: str | os.PathLike, grid: CubeGrid, plane: Callable[[int], np.ndarray],
               unit: str = "Jy/beam", beam_arcsec: tuple[float, float, float] | None = None,
               nchan: int | None = None) -> Path:
    """Write ``plane(k)`` (a ``(ny, nx)`` array) for every channel into a new
    CASA image, holding one plane in memory at a time. ``nchan=1`` writes a
    single-plane image on the same grid (e.g. a frequency-independent PB)."""
    ct = casa_env.casatools()
    out = Path(path)
    shutil.rmtree(out, ignore_errors=True)
    n = grid.nchan if nchan is None else nchan
    ia = ct.image()
    try:
        ia.fromshape(outfile=str(out), shape=[grid.nx, grid.ny, 1, n], csys=coordsys_record(grid),
                             overwrite=True)
        ia.setbrightnessunit(unit)
        if beam_arcsec:
            bmaj, bmin, bpa = beam_arcsec
            ia.setrestoringbeam(major=f"{bmaj}arcsec", minor=f"{bmin}arcsec", pa=f"{bpa}deg")
        for k in range(n):
            data = np.asarray(plane(k), dtype=np.float32)
            assert data.shape == (grid.ny, grid.nx), data.shape
            ia.putchunk(pixels=data.T[:, :, None, None], blc=[0, 0, 0, k])
    finally:
        ia.done()
    return out


def gaussian_beam_kernel_sigma_pix(fwhm_arcsec: float, cell_arcsec: float) -> float:
    return fwhm_arcsec / cell_arcsec / np.sqrt(8.0 * np.log(2.0))


def primary_beam(grid: CubeGrid, fwhm_arcsec: float) -> np.ndarray:
    """Gaussian primary-beam response (1 at the phase centre)."""
    east, north = grid.offsets_arcsec()
    return np.exp(-4.0 * np.log(2.0) * (east ** 2 + north ** 2) / fwhm_arcsec ** 2).astype(np.float32)


# ----------------------------------------------------------------------------- a test source
@dataclass(frozen=True)
class DiskModel:
    """A rotating (Keplerian) line-emitting disk, the simulated FAUST source.

    Same geometry as the team's reference simulator: position angle of the
    major axis 135 deg (east of north), inclination 60 deg, rotation speed
    2 km/s at 0.5 arcsec, the receding side where the major-axis offset is
    positive. ``peak`` is the brightness (image units) before the beam."""

    peak: float = 0.1
    fwhm_arcsec: float = 1.5
    sigma_v_kms: float = 0.35
    pa_deg: float = 135.0
    inc_deg: float = 60.0
    v_at_half_arcsec: float = 2.0

    def major_offset(self, east: np.ndarray, north: np.ndarray) -> np.ndarray:
        pa = np.deg2rad(self.pa_deg)
        return east * np.sin(pa) + north * np.cos(pa)

    def radius(self, east: np.ndarray, north: np.ndarray) -> np.ndarray:
        pa, inc = np.deg2rad(self.pa_deg), np.deg2rad(self.inc_deg)
        xmaj = east * np.sin(pa) + north * np.cos(pa)
        ymin = -east * np.cos(pa) + north * np.sin(pa)
        return np.hypot(xmaj, ymin / np.cos(inc))

    def vlos(self, east: np.ndarray, north: np.ndarray, vsys: float) -> np.ndarray:
        r = self.radius(east, north)
        xmaj = self.major_offset(east, north)
        speed = self.v_at_half_arcsec * (np.maximum(r, 0.15) / 0.5) ** -0.5
        return vsys + speed * np.sin(np.deg2rad(self.inc_deg)) * xmaj / np.maximum(r, 1e-6)

    def surface(self, east: np.ndarray, north: np.ndarray) -> np.ndarray:
        r = self.radius(east, north)
        return self.peak * np.exp(-4.0 * np.log(2.0) * (r / self.fwhm_arcsec) ** 2)

    def plane(self, east: np.ndarray, north: np.ndarray, v: float, vsys: float) -> np.ndarray:
        """Brightness at velocity ``v`` (a Gaussian line about the local vlos)."""
        prof = np.exp(-0.5 * ((v - self.vlos(east, north, vsys)) / self.sigma_v_kms) ** 2)
        return self.surface(east, north) * prof

    def integral(self, east: np.ndarray, north: np.ndarray) -> np.ndarray:
        """Analytic velocity integral of :meth:`plane` (image units x km/s)."""
        return self.surface(east, north) * np.sqrt(2.0 * np.pi) * self.sigma_v_kms


def _smooth(data: np.ndarray, sigma_pix: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(data, sigma_pix, mode="constant")


def write_disk_products(image_dir: str | os.PathLike, base: str, grid: CubeGrid, model: DiskModel,
                        beam_fwhm_arcsec: float = 0.4, noise: float = 0.004, pb_fwhm_arcsec: float = 25.0,
                        mask_level: float = 1.0, seed: int = 7) -> dict:
    """Write ``<base>.image``, ``.image.common``, ``.residual``, ``.mask`` and
    ``.pb`` of a disk observed with a Gaussian beam and primary beam plus
    beam-correlated noise of rms ``noise``; return the truth.

    The restored image is ``PB x (disk convolved with the beam) + noise`` (not
    PB-corrected, like tclean's); the residual is the noise alone; the clean
    mask covers the noiseless emission above ``mask_level`` x noise, grown by
    one beam, as an auto-multithresh mask would. Truth: ``integral`` (the
    analytic velocity integral convolved with the beam, sky units x km/s),
    ``major_offset`` (arcsec), the velocities and the noise."""
    root = Path(image_dir)
    root.mkdir(parents=True, exist_ok=True)
    sigma_pix = gaussian_beam_kernel_sigma_pix(beam_fwhm_arcsec, grid.cell_arcsec)
    east, north = grid.offsets_arcsec()
    velo = grid.velocities()
    pb = primary_beam(grid, pb_fwhm_arcsec)
    beam = (beam_fwhm_arcsec, beam_fwhm_arcsec, 0.0)

    def noise_plane(k: int, salt: int) -> np.ndarray:
        rng = np.random.default_rng([seed, salt, k])
        white = _smooth(rng.standard_normal((grid.ny, grid.nx)), sigma_pix)
        return (noise * white / white.std()).astype(np.float32)

    def sky(k: int) -> np.ndarray:
        return _smooth(model.plane(east, north, float(velo[k]), grid.vsys_kms), sigma_pix) * pb

    def image(k: int) -> np.ndarray:
        return sky(k) + noise_plane(k, 0)

    grow = max(1, int(round(beam_fwhm_arcsec / grid.cell_arcsec)))

    def mask(k: int) -> np.ndarray:
        from scipy.ndimage import binary_dilation

        core = sky(k) > mask_level * noise
        return binary_dilation(core, iterations=grow).astype(np.float32) if core.any() else core.astype(np.float32)

    paths = {}
    for ext, fn, unit in ((".image", image, "Jy/beam"), (".residual", lambda k: noise_plane(k, 1), "Jy/beam"),
                          (".mask", mask, ""), (".pb", lambda k: pb, "")):
        paths[ext] = write_cube(root / f"{base}{ext}", grid, fn, unit=unit,
                                beam_arcsec=beam if ext == ".image" else None)
    common = root / f"{base}.image.common"
    shutil.rmtree(common, ignore_errors=True)
    shutil.copytree(paths[".image"], common)
    paths[".image.common"] = common
    return {"paths": paths, "integral": _smooth(model.integral(east, north), sigma_pix),
            "major_offset": model.major_offset(east, north), "velocities": velo, "noise": noise,
            "pb": pb}
