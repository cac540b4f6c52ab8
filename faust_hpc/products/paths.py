"""Where products are read and written: the documented PROD_DIR layout.

The settable directories (``PROD_DIR``, ``IMAG_DIR``, ``MOMA_DIR``,
``PLOT_DIR``, the original's module globals) live in
:mod:`faust_hpc.user_paths`, which the imaging layer shares; the folder
names below a product directory are :mod:`faust_hpc.layout`'s. The products
layer reads the globals *at call time*, so a user who sets them once (as in
the original ``faust_imaging.cfg``) gets the same behaviour; every function
also accepts explicit directories, which is what the run-file driven units and
the tests use.
"""
from __future__ import annotations

import os
from pathlib import Path

from faust_hpc import user_paths
from faust_hpc.layout import RunLayout, product_dir_of


def prod_dir(explicit: str | os.PathLike | None = None) -> Path:
    return Path(explicit) if explicit is not None else user_paths.prod_dir()


def image_dir(explicit: str | os.PathLike | None = None, prod: str | os.PathLike | None = None) -> Path:
    if explicit is not None:
        return Path(explicit)
    return RunLayout(prod).images_dir if prod is not None else user_paths.image_dir()


def moment_dir(explicit: str | os.PathLike | None = None, prod: str | os.PathLike | None = None) -> Path:
    """``moments/`` (per-field sub-directories are added by the caller): the
    explicit one, else an assigned ``MOMA_DIR``, else that of ``prod``."""
    if explicit is not None:
        return Path(explicit)
    if prod is None or user_paths.is_assigned("MOMA_DIR"):
        return user_paths.moment_dir()
    return RunLayout(prod).moments_dir


def plot_dir(explicit: str | os.PathLike | None = None, prod: str | os.PathLike | None = None) -> Path:
    """The explicit plot folder, else an assigned ``PLOT_DIR``, else that of ``prod``."""
    if explicit is not None:
        return Path(explicit)
    if prod is None or user_paths.is_assigned("PLOT_DIR"):
        return user_paths.plot_dir()
    return RunLayout(prod).plots_dir


def product_dir_of_image(path: str | os.PathLike) -> Path | None:
    """The product directory an image lives in (None if not in the layout; see
    :func:`faust_hpc.layout.product_dir_of`)."""
    return product_dir_of(path)
