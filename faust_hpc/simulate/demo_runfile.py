"""The ready-to-run ``demo.toml`` beside the simulated data.

It follows the run-file contract of the team brief. The FAUST defaults
(cell = res/10, imsize ~ 2 x the 12m primary beam ~ 1500 pixels, multiscale
scales up to 135 pixels) would make the tiny simulated data set take hours
to image, so the file overrides the geometry with the size preset's
cell/imsize, scales the multiscale scales to the same number of beams as the
defaults, and caps nchunks so every chunk keeps >= 8 channels.
"""
from __future__ import annotations

import os
from pathlib import Path

from faust_hpc.catalog import default_nchunks, get_setup, get_target, imaging_defaults
from faust_hpc.simulate.sizes import SimSize
from faust_hpc.simulate.windows import SimWindow

MIN_CHANNELS_PER_CHUNK = 8


MAX_SCALE_FRACTION_OF_IMAGE = 6   # a multiscale scale wider than 1/6 of the image does not fit a clean mask


def scales_fitting(scales: list[int], image_size: int) -> list[int]:
    """``scales`` (pixels) without those wider than a sixth of the image: the
    multiscale clean cannot fit them inside a clean mask (and diverges)."""
    return sorted({int(s) for s in scales if s <= image_size // MAX_SCALE_FRACTION_OF_IMAGE})


def scales_for(field: str, cell_arcsec: float, image_size: int) -> list[int]:
    """The default scales_pix keep their size in beams (at the default
    oversampling); scales wider than a sixth of the image are dropped (the
    multiscale clean cannot fit them inside a clean mask, and the simulated
    sources are smaller than that)."""
    defaults = imaging_defaults()
    oversample = float(defaults["oversample"])
    res = get_target(field).res
    scales = [int(round(s / oversample * res / cell_arcsec)) for s in defaults["scales_pix"]]
    return scales_fitting(scales, image_size)


def nchunks_for(window: SimWindow) -> int:
    return max(1, min(default_nchunks(window.spw), window.nchan // MIN_CHANNELS_PER_CHUNK))


def render_demo_runfile(field: str, setup: int, windows: list[SimWindow], size: SimSize) -> str:
    labels = ", ".join(f'"{w.label}"' for w in windows)
    scales = scales_for(field, size.image_cell_arcsec, size.image_size)
    arrays = "joint" if "7m" in get_setup(setup).arrays else "12m"   # Setup 3 has 12m data only
    lines = [
        f"# Demo run file written by `faust-hpc simulate` (size = {size.name}).",
        "# Simulated data: reduced channel counts at the real channel widths, centred on vsys.",
        "# GEOMETRY OVERRIDES: cell_arcsec/imsize below replace the FAUST defaults",
        "# (cell = res/10, imsize ~1500 px) so this data set images in minutes;",
        "# the per-SPW scales keep the default multiscale sizes in beams at this cell,",
        f"# and nchunks keeps >= {MIN_CHANNELS_PER_CHUNK} channels per chunk.",
        "[run]",
        f'name = "demo-{field}-setup{setup}"',
        'data_dir = "data"',
        'product_dir = "products"',
        "",
        "[imaging]",
        f'fields = ["{field}"]',
        f"setup = {setup}",
        f"spws = [{labels}]",
        "weightings = [0.5]",
        f'arrays = ["{arrays}"]',
        "fullcube = true",
        'ext = "clean"',
        'nchunks = "default"',
        f"cell_arcsec = {size.image_cell_arcsec}   # demo override (FAUST default: res/10)",
        f"imsize = {size.image_size}   # demo override (FAUST default: 2 x primary beam)",
        "",
    ]
    for window in windows:
        lines += [f'[spw."{window.label}"]',
                  f"nchunks = {nchunks_for(window)}",
                  f"scales = [{', '.join(str(s) for s in scales)}]",
                  ""]
    return "\n".join(lines)


def write_demo_runfile(path: Path, field: str, setup: int, windows: list[SimWindow], size: SimSize) -> Path:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(render_demo_runfile(field, setup, windows, size))
    tmp.replace(path)
    return path
