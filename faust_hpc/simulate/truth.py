"""What the tests compare against: ``DIR/truth/truth.json`` + model FITS.

Per SPW the JSON holds the true peak (Jy/pixel, and Jy/beam at the target's
nominal beam), the integrated flux (Jy km/s, radio velocities w.r.t. the
window's rest frequency), vsys, the noise (per-visibility sigma per array,
visibility counts, expected natural-weighted image rms for 12m, 7m and
joint), the simulated LSRK channel frequencies and, for line windows, the
disk's rotation (``redshifted_pa_deg``: the side of the major axis where
v > vsys, east of north) so a test can check the sign of a moment-1
gradient. Paths in the JSON are relative to the simulation directory.

:func:`model_cube_from_fits` and :func:`truth_convolved_peak` are the
helpers the imaging tests use to compare restored images with the truth.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from faust_hpc.simulate.skymodel import convolve_to_beam

TRUTH_VERSION = 1


def write_truth_json(path: Path, truth: dict[str, Any]) -> Path:
    truth = {"version": TRUTH_VERSION, **truth}
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(truth, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def read_truth_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def model_cube_from_fits(fits_path: Path) -> tuple[np.ndarray, float]:
    """(cube[x, y, chan] in Jy/pixel, cell in arcsec) from a truth FITS file
    (astropy order [chan, stokes, y, x] -> the model's [x, y, chan])."""
    from astropy.io import fits

    with fits.open(fits_path) as hdul:
        data = np.asarray(hdul[0].data, dtype=np.float64)
        header = hdul[0].header
    while data.ndim > 3:
        data = data[0] if data.shape[0] == 1 else data[:, 0]
    cell = abs(float(header["CDELT2"])) * 3600.0
    return np.transpose(data, (2, 1, 0)), cell


def integrated_flux_jy_kms(cube: np.ndarray, chan_width_kms: float) -> float:
    return float(cube.sum() * abs(chan_width_kms))


def truth_convolved_peak(fits_path: Path, bmaj_arcsec: float, bmin_arcsec: float | None = None,
                         bpa_deg: float = 0.0, channel: int | None = None) -> float:
    """Peak (Jy/beam) of the true cube convolved to a restoring beam, over all
    channels or one channel."""
    cube, cell = model_cube_from_fits(fits_path)
    if channel is not None:
        cube = cube[:, :, channel:channel + 1]
    return float(convolve_to_beam(cube, cell, bmaj_arcsec, bmin_arcsec, bpa_deg).max())


def beam_area_pixels(bmaj_arcsec: float, bmin_arcsec: float, cell_arcsec: float) -> float:
    return math.pi / (4.0 * math.log(2.0)) * bmaj_arcsec * bmin_arcsec / cell_arcsec ** 2
