"""Archive header keywords of every exported FITS cube and map.

Why its own module: the original pipeline set these before delivery
(``util/fix_header.py``), so the ALMA archive's cubes and moment maps carry
them; the imaging layer (cubes) and the products layer (moment maps) both
write FITS, and the keywords are written here once for both. Pure astropy:
no CASA import.
"""
from __future__ import annotations

import os

import numpy as np

ARCHIVE_INSTRUMENT = "ALMA"


def finite_extremes(data: np.ndarray | None) -> tuple[float, float]:
    """(min, max) of the finite values of ``data``, NaN when there are none;
    plane by plane over the leading axes (a memory-mapped cube stays on disk)."""
    lo, hi = np.inf, -np.inf
    if data is not None and data.size:
        planes = data.reshape((-1,) + data.shape[-2:]) if data.ndim > 2 else data[np.newaxis]
        for plane in planes:
            values = np.asarray(plane)
            finite = values[np.isfinite(values)]
            if finite.size:
                lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    return (lo, hi) if lo <= hi else (float("nan"), float("nan"))


def set_archive_keywords(fits_path: str | os.PathLike, object_name: str | None, datamin: float | None = None,
                         datamax: float | None = None) -> None:
    """Set ``OBJECT`` (the field; kept as it is when None), ``INSTRUME`` (the
    image's ``TELESCOP``, so ``'ALMA'`` on every FAUST product as the archive's
    and the true instrument on data of other telescopes), ``DATAMIN`` and
    ``DATAMAX`` in the primary header, in place (call it on the temporary
    file, before the rename). The extremes are those of the finite pixels
    (masked pixels are NaN in an exported cube), computed from the file when
    not given: one plane at a time through the memory map, so a cube of any
    size costs one read pass and a plane of memory (CASA's imstat took 1.7 us
    per pixel for its robust statistics, which these keywords do not need)."""
    from astropy.io import fits

    with fits.open(fits_path, mode="update", memmap=True) as hdul:
        header = hdul[0].header
        if datamin is None or datamax is None:
            datamin, datamax = finite_extremes(hdul[0].data)
        if object_name is not None:
            header["OBJECT"] = object_name
        header["INSTRUME"] = str(header.get("TELESCOP") or ARCHIVE_INSTRUMENT).strip() or ARCHIVE_INSTRUMENT
        if np.isfinite(datamin) and np.isfinite(datamax):
            header["DATAMIN"] = float(datamin)
            header["DATAMAX"] = float(datamax)
