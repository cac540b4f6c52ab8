"""The run file that images the prepared NGC 5921 data (``DIR/ngc5921.toml``).

NGC 5921 is not a FAUST target, so the file defines it with the run file's
``[target."N5921_2"]`` (the MS field name, where the data are, vsys) and the
HI line with ``[window."HI"]`` (rest frequency, SPW 0, a line window), and
images that pair through the launcher like any other run file.

Which channels (``band``):

- ``"line"`` (the default, what ``faust-hpc demo --real`` images): a
  :data:`LINE_VWIN_KMS` window about vsys (``fullcube = false``, channels
  3-56 of 0-62): every channel with HI emission (7-49, about 1380-1600
  km/s LSRK radio; the calibration's line-free channels are 4-6 and 50-59)
  plus line-free channels on both sides to measure the noise, and none of
  the band edges. The edge
  channels are the bandpass roll-off: channel 0 has ~16x the median noise,
  and an unmasked clean over it diverges (the guard stops it and flags its
  chunk); a cube that includes them images worse and gains no emission.
- ``"full"``: the whole band (``fullcube = true``), edges included: the
  run in which the guard must stop the chunk holding channel 0.

Geometry: by default the run file sets no ``cell_arcsec`` / ``imsize``, so
they come from the data (cell = resolution / 10, image size from the longest
baseline and the VLA's 25 m dishes read from the MS: ~900 px); a caller may
pin them (the tests use a small image at the data's natural cell;
``faust-hpc demo --real`` uses :data:`DEMO_IMSIZE`: the data's own size,
960 px for 2x the primary beam, takes over an hour on 2 cores). A pinned
image size also gets the documented multiscale scales (pixels at resolution
/ 10: 0, 15, 45, 135) that fit in it: in a 96 px image the 45 and 135 px
scales make the masked clean of the emission channels diverge.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faust_hpc.catalog import imaging_defaults
from faust_hpc.realdata.ngc5921 import DATA_SUBDIR, MS_NAME, TARGET_FIELD, load_ngc5921_record
from faust_hpc.simulate.demo_runfile import scales_fitting

RUNFILE_NAME = "ngc5921.toml"
WINDOW_LABEL = "HI"
VSYS_KMS = 1480.0            # NGC 5921's systemic velocity (the HI line's centre in this data set)
LINE_VWIN_KMS = 280.0        # 54 channels of 5.15 km/s about vsys (3-56): the emission and line-free channels
BANDS = ("line", "full")
DEFAULT_NCHUNKS = 3          # 2 worker ranks under `mpirun -n 3`: a few chunks keep both busy
DEMO_IMSIZE = 256            # `demo --real`: 18' at the data's 4.2" cell, the whole HI disc (~10') and sky around it
MOMENTS_VWIN_KMS = 140.0     # moments' half-window about vsys: the whole rotation curve (-100..+120 km/s)


@dataclass(frozen=True)
class RealRunOptions:
    """What the NGC 5921 run file may vary (None: the run file's / the data's default)."""

    band: str = "line"
    nchunks: int = DEFAULT_NCHUNKS
    imsize: int | None = None          # pixels a side; None: from the data
    cell_arcsec: float | None = None   # None: from the data (resolution / 10)
    product_dir: str = "products"
    name: str = "ngc5921"
    retries: int = 1
    fit_scales: bool = True            # False: the documented scales even in a small image (see _scales_line)


def render_ngc5921_runfile(record: dict[str, Any], options: RealRunOptions = RealRunOptions()) -> str:
    """The TOML text of the NGC 5921 run file for a finished preparation's
    ``record`` (``ngc5921.json``)."""
    if options.band not in BANDS:
        raise ValueError(f"band {options.band!r}: expected one of {BANDS}")
    full = options.band == "full"
    geometry = []
    if options.cell_arcsec is not None:
        geometry.append(f"cell_arcsec = {options.cell_arcsec:g}   # fixed here (default: resolution / 10)")
    if options.imsize is not None:
        geometry.append(f"imsize = {int(options.imsize)}   # fixed here (default: from the longest baseline and "
                        f"the dish size)")
    why = ("# The whole band, edges included: channel 0 (bandpass roll-off, ~16x the median noise)\n"
           "# makes the unmasked clean of its chunk diverge; the guard stops it and flags the chunk."
           if full else
           f"# A {LINE_VWIN_KMS:g} km/s window about vsys (channels 3-56): all HI emission (7-49, ~1380-1600 km/s)\n"
           "# plus line-free channels on both sides for the noise, and none of the band edges\n"
           "# (the bandpass roll-off: channel 0 has ~16x the median noise and diverges an unmasked clean).")
    lines = [
        f"# NGC 5921 (VLA D array, HI 21 cm) prepared by `faust-hpc prepare-real` "
        f"({record.get('nchan')} channels, {record.get('frequency_frame', 'LSRK')}).",
        "# Written by `faust-hpc demo --real`; not a FAUST target: defined below.",
        "[run]",
        f'name = "{options.name}"',
        'data_dir = "."',
        f'product_dir = "{options.product_dir}"',
        "",
        f'[target."{record.get("field", TARGET_FIELD)}"]   # the MS field name',
        f'data = "{record.get("ms", f"{DATA_SUBDIR}/{MS_NAME}")}"',
        f"vsys_kms = {VSYS_KMS:.1f}",
        "",
        f'[window."{WINDOW_LABEL}"]',
        f'restfreq = "{record["rest_frequency"]}"',
        f"spw = {int(record.get('spw', 0))}",
        'kind = "line"',
        "",
        why,
        "[imaging]",
        f'fields = ["{record.get("field", TARGET_FIELD)}"]',
        f'spws = ["{WINDOW_LABEL}"]',
        'arrays = ["all"]',
        "weightings = [0.5]",
        f"fullcube = {'true' if full else 'false'}",
        *([] if full else [f'line_vwin = "{LINE_VWIN_KMS:g}km/s"']),
        'ext = "clean"',
        f"nchunks = {int(options.nchunks)}",
        *geometry,
        "",
        f'[spw."{WINDOW_LABEL}"]',
        f"moments_vwin_kms = {MOMENTS_VWIN_KMS:.1f}",
        *_scales_line(options.imsize, options.fit_scales),
        "",
        "[scheduler]",
        f"retries = {int(options.retries)}",
        "",
    ]
    return "\n".join(lines)


def _scales_line(imsize: int | None, fit: bool = True) -> list[str]:
    """``scales`` for a pinned image size (the documented ones that fit in it);
    none otherwise, or when ``fit`` is False: the documented scales are kept,
    as in the issue's report of the runaway clean (the full-band test's
    configuration: with only the scales that fit a small image, channel 0's
    clean converges to a negative model instead of running away)."""
    if imsize is None or not fit:
        return []
    scales = scales_fitting([int(s) for s in imaging_defaults()["scales_pix"]], imsize)
    return [f"scales = [{', '.join(map(str, scales))}]   # the documented scales that fit in {imsize} px"]


def write_ngc5921_runfile(outdir: str | os.PathLike, options: RealRunOptions = RealRunOptions(),
                          filename: str = RUNFILE_NAME) -> Path:
    """Write ``outdir/<filename>`` for the NGC 5921 data prepared in ``outdir``
    (under a temporary name, renamed into place); returns its path."""
    outdir = Path(outdir).resolve()
    record = load_ngc5921_record(outdir)
    if record is None:
        raise FileNotFoundError(f"no finished NGC 5921 preparation in {outdir}: run prepare_ngc5921 first")
    path = outdir / filename
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(render_ngc5921_runfile(record, options))
    os.replace(tmp, path)
    return path
