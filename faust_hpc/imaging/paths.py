"""Where products are written and measurement sets are read (documented API).

The original pipeline kept these as module globals (``PROD_DIR``,
``DATA_DIR``, ``IMAG_DIR``, ``MOMA_DIR``, ``PLOT_DIR``) and required CASA to
be started in ``PROD_DIR`` because some tasks dislike absolute paths. Here
every path handed to CASA is absolute, so each stage may run in its own
working directory. The globals stay, readable and assignable here and on
:mod:`faust_hpc.imaging`; their values live in :mod:`faust_hpc.user_paths`
(shared with the products layer) and the names below them come from
:mod:`faust_hpc.layout`. They are read when a
:class:`~faust_hpc.imaging.dataset.DataSet` or
:class:`~faust_hpc.imaging.config.ImageConfig` is created (each object keeps
the value it was created with, so changing the globals later never moves the
files of an existing configuration).
"""
from __future__ import annotations

import sys
from pathlib import Path

from faust_hpc import user_paths
from faust_hpc.layout import RunLayout
from faust_hpc.user_paths import set_paths

sys.modules[__name__].__class__ = user_paths.SettableGlobals


def get_prod_dir() -> Path:
    return user_paths.prod_dir()


def get_data_dir() -> Path:
    return user_paths.data_dir()


def field_image_dir(prod_dir: Path, field: str) -> Path:
    """The field's image folder of :class:`~faust_hpc.layout.RunLayout` (created on demand: tclean writes there)."""
    path = RunLayout(prod_dir).field_image_dir(field)
    path.mkdir(parents=True, exist_ok=True)
    return path


__all__ = ["set_paths", "get_prod_dir", "get_data_dir", "field_image_dir", *user_paths.DIR_NAMES]
