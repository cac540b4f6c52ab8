"""The FAUST imaging engine on casatasks: the original pipeline's documented API.

    from faust_hpc.imaging import ImageConfig, set_paths
    set_paths(prod_dir="products", data_dir="/scratch/faust/completed_SBs")
    config = ImageConfig.from_name("CB68", "244.936GHz_CS", weighting=0.5)
    config.run_pipeline(ext="clean")
    # -> the delivered FITS cube named by faust_hpc.layout.RunLayout.final_fits

Importing this package does not import CASA; the first stage that needs it
does, through :mod:`faust_hpc.casa_env` (offline measures, per-process log).

The original's module globals (``PROD_DIR``, ``DATA_DIR``, ``IMAG_DIR``,
``MOMA_DIR``, ``PLOT_DIR``, ``DIRTY_EXT``, ``NOMSK_EXT``/``NOMASK_EXT``,
``TINYIMG_EXT``) are attributes of this package that may be assigned
(``faust_hpc.imaging.PLOT_DIR = "/scratch/plots"``) and take effect as in the
original: their values live in :mod:`faust_hpc.user_paths`, which the
imaging and products layers both read when they need them.
"""
from __future__ import annotations

import sys

from faust_hpc import user_paths

from faust_hpc.catalog import (ALL_FIELD_NAMES, ALL_SPW_LABELS, ALL_SPWS, ALL_TARGETS, SPWS_BY_SETUP, Spw,
                               Target)
from faust_hpc.imaging.chunking import (ChunkConfig, ChunkedConfigSet, SpectralSelection, calc_chunk_freqs,
                                        calc_common_coverage_range, common_coverage, read_chunk_list,
                                        write_chunk_list)
from faust_hpc.imaging.config import ImageConfig, format_cube_robust, format_rms
from faust_hpc.imaging.dataset import DataSet, ms_contains_diameter, spw_ids_for_ot_name
from faust_hpc.imaging.image_tools import (ImageManager, check_delete_image_files, concat_parallel_all_extensions,
                                           concat_parallel_image, delete_all_extensions, delete_workdir,
                                           if_exists_remove, log_post, remove_end_from_pathname,
                                           replace_existing_file_with_new, safely_remove_file)
from faust_hpc.imaging.paths import set_paths
from faust_hpc.imaging.postprocess import (MAD_TO_RMS, calc_rms_from_image, check_max_residual, copy_pb_mask,
                                           create_mask_from_threshold, effective_beamwidth_from_image,
                                           export_fits, get_freq_axis_from_image, hanning_smooth_image,
                                           make_multiscale_joint_mask, primary_beam_correct,
                                           smooth_cube_to_common_beam)
from faust_hpc.imaging.stages import MASK_METHODS

ALL_TARGET_NAMES = ALL_FIELD_NAMES

__all__ = [
    "ALL_FIELD_NAMES", "ALL_TARGET_NAMES", "ALL_SPW_LABELS", "ALL_SPWS", "ALL_TARGETS", "SPWS_BY_SETUP",
    "Spw", "Target", "ChunkConfig", "ChunkedConfigSet", "SpectralSelection", "calc_chunk_freqs",
    "calc_common_coverage_range", "common_coverage", "read_chunk_list", "write_chunk_list",
    *user_paths.NAMES, "ImageConfig", "format_cube_robust", "format_rms", "DataSet",
    "ms_contains_diameter", "spw_ids_for_ot_name", "ImageManager", "check_delete_image_files",
    "concat_parallel_image", "concat_parallel_all_extensions", "delete_all_extensions", "delete_workdir",
    "if_exists_remove", "log_post", "remove_end_from_pathname",
    "replace_existing_file_with_new", "safely_remove_file", "set_paths", "MAD_TO_RMS", "calc_rms_from_image",
    "check_max_residual", "copy_pb_mask", "create_mask_from_threshold", "effective_beamwidth_from_image",
    "export_fits", "get_freq_axis_from_image", "hanning_smooth_image", "make_multiscale_joint_mask",
    "primary_beam_correct", "smooth_cube_to_common_beam", "MASK_METHODS",
]

from faust_hpc.imaging.recipes import (make_all_line_dirty_cubes, postproc_all_cleaned_images, run_pipeline,
                                      spw_list_to_dict)

__all__ += ["run_pipeline", "make_all_line_dirty_cubes", "postproc_all_cleaned_images", "spw_list_to_dict"]

# The moment-map and QA functions of the original module live in the products
# layer; they are reachable from here lazily (no import cycle, no CASA import).
_PRODUCTS = {
    "make_moments_from_image": "faust_hpc.products.moments", "make_all_moment_maps": "faust_hpc.products.moments",
    "MomentMapper": "faust_hpc.products.moments", "make_qa_plots_from_image": "faust_hpc.products.qa",
    "make_all_qa_plots": "faust_hpc.products.qa", "make_qa_plot": "faust_hpc.products.qa",
    "CubeSet": "faust_hpc.products.qa", "savefig": "faust_hpc.products.qa",
}
__all__ += list(_PRODUCTS)


def __getattr__(name: str):
    if name in _PRODUCTS:
        import importlib

        return getattr(importlib.import_module(_PRODUCTS[name]), name)
    raise AttributeError(f"module 'faust_hpc.imaging' has no attribute {name!r}")


# assigning a documented global on this package takes effect (see the docstring)
sys.modules[__name__].__class__ = user_paths.SettableGlobals
