"""Module-level recipes of the original API that loop over Setups, SPWs and
weightings (``run_pipeline(field, ...)``, ``make_all_line_dirty_cubes``,
``postproc_all_cleaned_images``). The MPI launcher does the same work unit by
unit; these are for interactive, serial use.
"""
from __future__ import annotations

import logging
import os
from glob import glob
from typing import Iterable

from faust_hpc import user_paths
from faust_hpc.catalog import SPWS_BY_SETUP, Spw, get_setup
from faust_hpc.layout import parse as parse_product
from faust_hpc.imaging.config import ImageConfig
from faust_hpc.imaging.dataset import DataSet
from faust_hpc.imaging.image_tools import glob_escape
from faust_hpc.imaging.postprocess import (check_max_residual, export_final_products, primary_beam_correct,
                                           smooth_cube_to_common_beam)

log = logging.getLogger(__name__)


def spw_list_to_dict(spws: Iterable[Spw]) -> dict[str, Spw]:
    """Documented API: SPWs by label, in the given order."""
    return {spw.label: spw for spw in spws}


def run_pipeline(field: str, setup: int | None = None, weightings: Iterable[float | str] | None = None,
                 fullcube: bool = True, do_cont: bool = True, chunked: bool = True, ext: str = "clean") -> None:
    """Run the pipeline for every SPW (and weighting) of one or all Setups."""
    setups = [setup] if setup is not None else sorted(SPWS_BY_SETUP)
    for s in setups:
        get_setup(s)
        for spw in SPWS_BY_SETUP[s]:
            if spw.is_continuum and not do_cont:
                continue
            for weighting in (weightings or (0.5,)):
                config = ImageConfig.from_name(field, spw.label, weighting=weighting, fullcube=fullcube)
                config.run_pipeline(ext=ext, use_chunking=chunked)


def make_all_line_dirty_cubes(dset: DataSet, weighting: float | str = 0.5, fullcube: bool = True) -> None:
    """A dirty cube of every SPW of the DataSet's Setup."""
    for spw in SPWS_BY_SETUP[dset.setup]:
        ImageConfig(dset, spw.copy(), weighting=weighting, fullcube=fullcube).make_dirty_cube()


def postproc_all_cleaned_images(dset: DataSet, ext: str = "clean") -> None:
    """Postprocess every unchunked ``<field>_*_<ext>.image`` of the DataSet's field."""
    pattern = os.path.join(glob_escape(str(user_paths.image_dir() / dset.field)),
                           f"{glob_escape(dset.field)}_*_{ext}.image")
    for imagename in sorted(glob(pattern)):
        if parse_product(imagename).is_chunk:
            continue
        base = imagename[: -len(".image")]
        check_max_residual(base)
        primary_beam_correct(base)
        for im_ext in (".image", ".image.pbcor"):
            smooth_cube_to_common_beam(base + im_ext, pbimage=base + ".pb")
        export_final_products(base, object_name=dset.field)
