"""The known sky, as numpy cubes in Jy/pixel on an LSRK channel grid.

Narrow (line) windows: a rotating, inclined disk with a Keplerian-like
velocity field centred on vsys, so that moment 1 shows a gradient whose
redshifted side points to ``DiskModel.redshifted_pa_deg`` (east of north).
Continuum window: a "line forest" (several lines from a compact source at
fixed offsets inside the window) on top of weak, extended, flat-spectrum
emission (what remains after continuum subtraction).

The cubes here have unit scale; :mod:`.core` scales them so the disk peak has
a stated signal-to-noise ratio once the noise of the actual observation is
known (the prediction is linear, so scaling after the fact is exact).

Array layout everywhere: ``cube[x, y, chan]`` with x along RA pixels (RA
decreasing with x, as in a CASA image with a negative RA increment) and y
along Dec pixels, both centred on pixel ``npix // 2`` (the field centre).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.signal import fftconvolve

from faust_hpc import spectral

FWHM_TO_SIGMA = 1.0 / math.sqrt(8.0 * math.log(2.0))


@dataclass(frozen=True)
class ModelGrid:
    npix: int
    cell_arcsec: float

    def offsets(self) -> tuple[np.ndarray, np.ndarray]:
        """(east, north) offsets in arcsec of every pixel, shape [npix, npix]."""
        x = (np.arange(self.npix) - self.npix // 2) * self.cell_arcsec
        xx, yy = np.meshgrid(x, x, indexing="ij")
        return -xx, yy


@dataclass(frozen=True)
class DiskModel:
    """Inclined disk with v_los = vsys + v0 (r/r0)^-1/2 sin(i) cos(phi)."""

    redshifted_pa_deg: float = 135.0   # PA (east of north) of the redshifted major-axis side
    inclination_deg: float = 60.0
    fwhm_arcsec: float = 1.5           # Gaussian intensity profile (deprojected radius)
    vproj_r0_kms: float = 1.0          # v0 sin(i) at r0
    r0_arcsec: float = 0.5
    rmin_arcsec: float = 0.15          # velocity is capped inside this radius
    sigma_v_kms: float = 0.2           # local line width (Gaussian sigma)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ForestLine:
    offset_fraction: float   # position in the window, fraction of its bandwidth from the centre
    relative_peak: float
    fwhm_kms: float = 3.0


@dataclass(frozen=True)
class ForestModel:
    """Lines from a compact source plus weak extended flat-spectrum emission."""

    lines: tuple[ForestLine, ...] = (ForestLine(-0.30, 1.0), ForestLine(-0.12, 0.5),
                                     ForestLine(0.08, 0.7), ForestLine(0.27, 0.35))
    compact_fwhm_arcsec: float = 0.6
    # weak, flat-spectrum, resolved emission (~2.5 sigma per beam and channel at the default
    # SNR): summed over the wide window its flux is comparable to the whole forest's
    extended_fwhm_arcsec: float = 1.2
    extended_relative_peak: float = 0.1    # of the strongest line, per nominal beam

    def as_dict(self) -> dict:
        return {"lines": [asdict(l) for l in self.lines], "compact_fwhm_arcsec": self.compact_fwhm_arcsec,
                "extended_fwhm_arcsec": self.extended_fwhm_arcsec,
                "extended_relative_peak": self.extended_relative_peak}


def disk_for_band(band_kms: float) -> DiskModel:
    """A disk whose velocity range fits well inside a window of ``band_kms``:
    the fastest gas (at rmin) plus 3 sigma stays within ~60 % of the half band."""
    return DiskModel(vproj_r0_kms=min(1.0, 0.1 * band_kms))


def disk_cube(grid: ModelGrid, velocities_kms: np.ndarray, vsys_kms: float, disk: DiskModel) -> np.ndarray:
    east, north = grid.offsets()
    pa = math.radians(disk.redshifted_pa_deg)
    cos_i = math.cos(math.radians(disk.inclination_deg))
    along = east * math.sin(pa) + north * math.cos(pa)       # towards the redshifted side
    across = -east * math.cos(pa) + north * math.sin(pa)
    radius = np.hypot(along, across / cos_i)                 # deprojected, arcsec
    speed = disk.vproj_r0_kms * (np.maximum(radius, disk.rmin_arcsec) / disk.r0_arcsec) ** -0.5
    vlos = vsys_kms + speed * along / np.maximum(radius, 1e-9)
    intensity = np.exp(-4.0 * math.log(2.0) * (radius / disk.fwhm_arcsec) ** 2)
    profile = np.exp(-0.5 * ((velocities_kms[None, None, :] - vlos[:, :, None]) / disk.sigma_v_kms) ** 2)
    return (intensity[:, :, None] * profile).astype(np.float64)


def gaussian_blob(grid: ModelGrid, fwhm_arcsec: float) -> np.ndarray:
    east, north = grid.offsets()
    return np.exp(-4.0 * math.log(2.0) * (east ** 2 + north ** 2) / fwhm_arcsec ** 2)


def forest_cube(grid: ModelGrid, freqs_hz: np.ndarray, rest_hz: float, forest: ForestModel,
                nominal_beam_arcsec: float) -> np.ndarray:
    """Line forest + extended emission, normalised so the strongest line has
    unit peak per nominal beam (before the global scaling)."""
    lines, extended = forest_components(grid, freqs_hz, rest_hz, forest, nominal_beam_arcsec)
    return lines + extended


def forest_components(grid: ModelGrid, freqs_hz: np.ndarray, rest_hz: float, forest: ForestModel,
                      nominal_beam_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """(line forest, extended emission) cubes of :func:`forest_cube`."""
    velocities = spectral.freq_to_velocity_kms(freqs_hz, rest_hz)
    compact = gaussian_blob(grid, forest.compact_fwhm_arcsec)
    compact /= peak_per_beam(compact[:, :, None], grid.cell_arcsec, nominal_beam_arcsec)
    spectrum = np.zeros_like(velocities)
    for line, v0 in zip(forest.lines, forest_line_velocities(freqs_hz, rest_hz, forest)):
        spectrum += line.relative_peak * np.exp(-0.5 * ((velocities - v0) / (line.fwhm_kms * FWHM_TO_SIGMA)) ** 2)
    extended = gaussian_blob(grid, forest.extended_fwhm_arcsec)
    extended *= forest.extended_relative_peak / peak_per_beam(extended[:, :, None], grid.cell_arcsec,
                                                              nominal_beam_arcsec)
    return (compact[:, :, None] * spectrum[None, None, :],
            np.broadcast_to(extended[:, :, None], (grid.npix, grid.npix, len(freqs_hz))).copy())


def forest_line_velocities(freqs_hz: np.ndarray, rest_hz: float, forest: ForestModel) -> list[float]:
    """Centre (radio velocity w.r.t. the window's rest frequency, km/s) of each forest line."""
    velocities = spectral.freq_to_velocity_kms(freqs_hz, rest_hz)
    band_kms = abs(velocities[-1] - velocities[0]) * len(velocities) / max(len(velocities) - 1, 1)
    return [float(velocities.mean() + line.offset_fraction * band_kms) for line in forest.lines]


def beam_kernel(npix: int, cell_arcsec: float, bmaj: float, bmin: float, bpa_deg: float) -> np.ndarray:
    """Unit-peak elliptical Gaussian (FWHM in arcsec, PA east of north) on a
    ``[x, y]`` grid of the model's orientation."""
    grid = ModelGrid(npix, cell_arcsec)
    east, north = grid.offsets()
    pa = math.radians(bpa_deg)
    along = east * math.sin(pa) + north * math.cos(pa)
    across = -east * math.cos(pa) + north * math.sin(pa)
    return np.exp(-4.0 * math.log(2.0) * ((along / bmaj) ** 2 + (across / bmin) ** 2))


def convolve_to_beam(cube: np.ndarray, cell_arcsec: float, bmaj: float, bmin: float | None = None,
                     bpa_deg: float = 0.0) -> np.ndarray:
    """Jy/pixel cube ``[x, y, chan]`` -> Jy/beam for a Gaussian beam (what a
    restored image of perfect data would show)."""
    bmin = bmaj if bmin is None else bmin
    npix = cube.shape[0]
    size = min(npix, int(2 * math.ceil(3.0 * bmaj / cell_arcsec)) + 1)
    kernel = beam_kernel(size if size % 2 else size + 1, cell_arcsec, bmaj, bmin, bpa_deg)
    return fftconvolve(cube, kernel[:, :, None], mode="same", axes=(0, 1))


def peak_per_beam(cube: np.ndarray, cell_arcsec: float, beam_arcsec: float) -> float:
    return float(convolve_to_beam(cube, cell_arcsec, beam_arcsec).max())
