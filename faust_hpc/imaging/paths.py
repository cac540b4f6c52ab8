"""Where products are written and measurement sets are read.

The original pipeline kept these as module globals (``PROD_DIR``,
``DATA_DIR``, ``MOMA_DIR``, ``PLOT_DIR``) and required CASA to be started in
``PROD_DIR`` because some tasks dislike absolute paths. Here every path handed
to CASA is absolute, so each stage may run in its own working directory; the
globals remain for users of the documented API and are read when a
:class:`~faust_hpc.imaging.dataset.DataSet` or
:class:`~faust_hpc.imaging.config.ImageConfig` is created (each object keeps
the value it was created with, so changing the globals later never moves the
files of an existing configuration).
"""
from __future__ import annotations

import os
from pathlib import Path

PROD_DIR: Path = Path(os.environ.get("FAUST_PROD_DIR", ".")).resolve()
DATA_DIR: Path = Path(os.environ.get("FAUST_DATA_DIR", ".")).resolve()
IMAG_DIR: Path = PROD_DIR / "images"
MOMA_DIR: Path = PROD_DIR / "moments"
PLOT_DIR: Path = PROD_DIR / "plots"


def set_paths(prod_dir: str | os.PathLike | None = None,
              data_dir: str | os.PathLike | None = None) -> None:
    """Set PROD_DIR (and the images/moments/plots folders below it) and DATA_DIR."""
    global PROD_DIR, DATA_DIR, IMAG_DIR, MOMA_DIR, PLOT_DIR
    if prod_dir is not None:
        PROD_DIR = Path(prod_dir).expanduser().resolve()
        IMAG_DIR = PROD_DIR / "images"
        MOMA_DIR = PROD_DIR / "moments"
        PLOT_DIR = PROD_DIR / "plots"
    if data_dir is not None:
        DATA_DIR = Path(data_dir).expanduser().resolve()


def get_prod_dir() -> Path:
    return PROD_DIR


def get_data_dir() -> Path:
    return DATA_DIR


def field_image_dir(prod_dir: Path, field: str) -> Path:
    """``<PROD_DIR>/images/<FIELD>`` (created on demand)."""
    path = Path(prod_dir) / "images" / field
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_workdir(prod_dir: Path, name: str) -> Path:
    """Per-configuration CASA working directory ``<PROD_DIR>/work/<name>``."""
    return Path(prod_dir) / "work" / name
