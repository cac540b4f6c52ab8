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


def set_archive_keywords(fits_path: str | os.PathLike, object_name: str | None, datamin: float | None = None,
                         datamax: float | None = None) -> None:
    """Set ``OBJECT`` (the field; kept as it is when None), ``INSTRUME`` (the
    image's ``TELESCOP``, so ``'ALMA'`` on every FAUST product as the archive's
    and the true instrument on data of other telescopes), ``DATAMIN`` and
    ``DATAMAX`` in the primary header, in place (call it on the temporary
    file, before the rename). The extremes are those of the finite pixels,
    computed from the file when not given."""
    from astropy.io import fits

    with fits.open(fits_path, mode="update", memmap=True) as hdul:
        header = hdul[0].header
        if datamin is None or datamax is None:
            data = np.asarray(hdul[0].data)
            finite = np.isfinite(data)
            datamin, datamax = (float(data[finite].min()), float(data[finite].max())) if finite.any() \
                else (float("nan"), float("nan"))
        if object_name is not None:
            header["OBJECT"] = object_name
        header["INSTRUME"] = str(header.get("TELESCOP") or ARCHIVE_INSTRUMENT).strip() or ARCHIVE_INSTRUMENT
        if np.isfinite(datamin) and np.isfinite(datamax):
            header["DATAMIN"] = float(datamin)
            header["DATAMAX"] = float(datamax)
