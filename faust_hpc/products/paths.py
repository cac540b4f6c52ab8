"""Where products are read and written: the documented PROD_DIR layout.

The imaging layer owns the settable directory names
(``faust_hpc.imaging.paths``: ``PROD_DIR``, ``IMAG_DIR``, ``MOMA_DIR``,
``PLOT_DIR``, as the original module-level globals). The products layer reads
them *at call time*, so a user who sets them once (as in the original
``faust_imaging.cfg``) gets the same behaviour; every function also accepts
explicit directories, which is what the run-file driven units and the tests
use. Without either, the current directory is the product directory (the
original pipeline ran CASA from PROD_DIR).
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path


def _imaging_paths() -> object | None:
    try:
        return importlib.import_module("faust_hpc.imaging.paths")
    except ImportError:
        return None


def _configured(name: str) -> Path | None:
    module = _imaging_paths()
    value = getattr(module, name, None) if module is not None else None
    return Path(value) if value else None


def prod_dir(explicit: str | os.PathLike | None = None) -> Path:
    if explicit is not None:
        return Path(explicit)
    return _configured("PROD_DIR") or Path.cwd()


def image_dir(explicit: str | os.PathLike | None = None, prod: str | os.PathLike | None = None) -> Path:
    if explicit is not None:
        return Path(explicit)
    if prod is not None:
        return Path(prod) / "images"
    return _configured("IMAG_DIR") or prod_dir() / "images"


def moment_dir(explicit: str | os.PathLike | None = None, prod: str | os.PathLike | None = None) -> Path:
    """``moments/`` (per-field sub-directories are added by the caller)."""
    if explicit is not None:
        return Path(explicit)
    if prod is not None:
        return Path(prod) / "moments"
    return _configured("MOMA_DIR") or prod_dir() / "moments"


def plot_dir(explicit: str | os.PathLike | None = None, prod: str | os.PathLike | None = None) -> Path:
    if explicit is not None:
        return Path(explicit)
    if prod is not None:
        return Path(prod) / "plots"
    return _configured("PLOT_DIR") or prod_dir() / "plots"


def product_dir_of_image(path: str | os.PathLike) -> Path | None:
    """``<prod>/images/<FIELD>/<name>`` -> ``<prod>`` (None if not in that layout)."""
    p = Path(path).resolve()
    if len(p.parents) >= 3 and p.parents[1].name == "images":
        return p.parents[2]
    return None
