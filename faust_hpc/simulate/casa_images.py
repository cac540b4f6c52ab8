"""Numpy model cubes <-> CASA images and FITS files.

The simulator predicts visibilities from a CASA image (Jy/pixel); the truth
for the tests is exported to FITS by CASA itself so its WCS (SIN projection,
LSRK FREQ axis, RESTFRQ) is exactly what CASA used for the prediction.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from faust_hpc import casa_env
from faust_hpc.simulate.skymodel import ModelGrid


def _fmt(value: float, unit: str) -> str:
    # NumPy 2 reprs (np.float64(...)) are not CASA quantities: always format floats.
    return f"{float(value):.10g}{unit}"


def write_model_image(path: Path, cube: np.ndarray, grid: ModelGrid, ra: str, dec: str,
                      freqs_lsrk_hz: np.ndarray, rest_hz: float) -> Path:
    """Write ``cube[x, y, chan]`` (Jy/pixel) as a CASA image [ra, dec, stokes I, freq]."""
    tools = casa_env.casatools()
    me = tools.measures()
    direction = me.direction("J2000", ra, dec)
    csys = tools.coordsys().newcoordsys(direction=True, spectral=True, stokes=["I"])
    centre = float(grid.npix // 2)
    csys.setdirection(refcode="J2000", proj="SIN", refpix=[centre, centre],
                      refval=[_fmt(direction["m0"]["value"], "rad"), _fmt(direction["m1"]["value"], "rad")],
                      incr=[_fmt(-grid.cell_arcsec, "arcsec"), _fmt(grid.cell_arcsec, "arcsec")])
    csys.setspectral(refcode="LSRK", restfreq=_fmt(rest_hz, "Hz"))
    csys.setreferencepixel(value=[centre, centre, 0.0, 0.0])
    refval = csys.referencevalue(format="n")["numeric"]
    refval[3] = float(freqs_lsrk_hz[0])
    csys.setreferencevalue(value=refval)
    incr = csys.increment(format="n")["numeric"]
    incr[3] = float(freqs_lsrk_hz[1] - freqs_lsrk_hz[0]) if len(freqs_lsrk_hz) > 1 else 1.0
    csys.setincrement(value=incr)
    shutil.rmtree(path, ignore_errors=True)
    ia = tools.image()
    ia.fromarray(outfile=str(path), pixels=cube[:, :, None, :].astype(np.float32),
                 csys=csys.torecord(), overwrite=True)
    ia.setbrightnessunit("Jy/pixel")
    ia.close()
    csys.done()
    return path


def scale_image(path: Path, factor: float) -> None:
    ia = casa_env.casatools().image()
    ia.open(str(path))
    pixels = ia.getchunk()
    ia.putchunk(pixels * float(factor))
    ia.close()


def export_fits(image: Path, fits_path: Path) -> Path:
    """CASA image -> FITS, written under a temporary name and renamed."""
    tmp = fits_path.with_name(fits_path.name + ".part")
    tmp.unlink(missing_ok=True)
    ia = casa_env.casatools().image()
    ia.open(str(image))
    ia.setbrightnessunit("Jy/pixel")
    ia.tofits(outfile=str(tmp), velocity=False, overwrite=True, stokeslast=True)
    ia.close()
    tmp.replace(fits_path)
    return fits_path
