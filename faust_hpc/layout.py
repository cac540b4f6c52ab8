"""Every path and file name of a run, in one place.

Why one owner: the original pipeline's names are a contract with the ALMA
archive (``images/<FIELD>/<FIELD>_<LABEL>_<ARRAY>_<WEIGHTING>_<EXT>.<image
ext>``), with the resume logic (a unit is done while its named outputs exist)
and with every reader of products (moments, QA, the report). When each of
those spelled the names itself they drifted apart; here each rule is written
once, and :func:`parse` is the single inverse that turns a product path back
into what it names.

``RunLayout(product_dir)`` is a pure value: it computes paths and creates
nothing (callers create directories when they write). It never touches CASA
or the run's records.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# --------------------------------------------------------------------------- fixed names
IMAGES_DIRNAME = "images"
MOMENTS_DIRNAME = "moments"
PLOTS_DIRNAME = "plots"
LOGS_DIRNAME = "logs"
JOB_LOGS_DIRNAME = "jobs"          # under logs/
WORK_DIRNAME = "work"
REPORT_DIRNAME = "report"
STATE_DIRNAME = ".faust-hpc"
MANIFEST_NAME = "manifest.jsonl"
MANIFEST_LOCK_NAME = "manifest.lock"
RUN_LOCK_NAME = "run.lock"
OWNER_NAME = "owner.json"

CHUNK_TAG = "chunk"                 # "_chunk<N>" in chunk product names
TINYIMG_EXT = "tinyimg"             # the sum-of-weights stamp of a full SPW
DIRTY_EXT = "dirty"
NOMASK_EXT = "nomask"
CHUNK_LIST_SUFFIX = ".chunks.json"

# CASA image extensions of one imaging product, as tclean and postprocess write them.
IMAGE_EXT = "image"
COMMON_EXT = "image.common"
PBCOR_EXT = "image.pbcor"
PBCOR_COMMON_EXT = "image.pbcor.common"
FINAL_FITS_EXT = "image.pbcor.common.fits"
CHUNK_PRODUCT_EXTS = ("image", "residual", "model", "mask", "pb", "psf", "sumwt")
FINAL_PRODUCT_EXTS = ("image", "image.common", "image.pbcor", "image.pbcor.common", "mask", "model", "pb",
                      "psf", "residual")

# The image-extension tail of a product path (labels and weightings contain dots,
# so os.path.splitext cannot find it).
_EXT_RE = re.compile(r"\.(image|mask|residual|pb|psf|model|sumwt|weight)(\..*)?$")
_CHUNK_RE = re.compile(rf"_{CHUNK_TAG}(\d+)(?=_|$)")


def unit_slug(unit_id: str) -> str:
    """A unit id as one path component (``CB68/.../chunk07`` -> ``CB68__...__chunk07``)."""
    return unit_id.replace("/", "__")


def image_stem_name(field: str, label: str, array: str, weighting: str, chunk: int | None = None,
                    ext: str | None = None) -> str:
    """The base name of an image product, without directory or image extension."""
    parts = [field, label, array, weighting]
    if chunk is not None:
        parts.append(f"{CHUNK_TAG}{int(chunk)}")
    if ext:
        parts.append(ext)
    return "_".join(parts)


@dataclass(frozen=True)
class RunLayout:
    """The directory tree of one run (one product directory)."""

    product_dir: Path

    def __init__(self, product_dir: str | os.PathLike) -> None:
        object.__setattr__(self, "product_dir", Path(product_dir))

    # ---- top-level directories
    @property
    def images_dir(self) -> Path:
        return self.product_dir / IMAGES_DIRNAME

    def field_image_dir(self, field: str) -> Path:
        return self.images_dir / field

    @property
    def moments_dir(self) -> Path:
        return self.product_dir / MOMENTS_DIRNAME

    def field_moment_dir(self, field: str) -> Path:
        return self.moments_dir / field

    @property
    def plots_dir(self) -> Path:
        return self.product_dir / PLOTS_DIRNAME

    @property
    def report_dir(self) -> Path:
        return self.product_dir / REPORT_DIRNAME

    @property
    def logs_dir(self) -> Path:
        return self.product_dir / LOGS_DIRNAME

    @property
    def job_logs_dir(self) -> Path:
        return self.logs_dir / JOB_LOGS_DIRNAME

    @property
    def work_dir(self) -> Path:
        return self.product_dir / WORK_DIRNAME

    # ---- image products
    def image_base(self, field: str, label: str, array: str, weighting: str, ext: str | None = None,
                   chunk: int | None = None) -> Path:
        """``images/<FIELD>/<FIELD>_<LABEL>_<ARRAY>_<WEIGHTING>[_chunk<N>][_<EXT>]``."""
        return self.field_image_dir(field) / image_stem_name(field, label, array, weighting, chunk, ext)

    def tiny_stamp_base(self, field: str, label: str, array: str, weighting: str) -> Path:
        """The sum-of-weights stamp belongs to the full SPW, never a chunk."""
        return self.image_base(field, label, array, weighting, ext=TINYIMG_EXT)

    def chunk_list(self, field: str, label: str, array: str, weighting: str, ext: str) -> Path:
        """Frozen chunk list ``<imagebase>_<ext>.chunks.json`` of the full cube."""
        base = self.image_base(field, label, array, weighting, ext=ext)
        return base.with_name(base.name + CHUNK_LIST_SUFFIX)

    # ---- per-unit scratch and logs
    def unit_workdir(self, unit_id: str) -> Path:
        return self.work_dir / unit_slug(unit_id)

    def unit_log(self, unit_id: str, attempt: int) -> Path:
        return self.logs_dir / f"{unit_slug(unit_id)}.attempt{int(attempt)}.casa.log"

    def unit_out(self, unit_id: str, attempt: int) -> Path:
        """stdout/stderr of one attempt's child process."""
        return self.logs_dir / f"{unit_slug(unit_id)}.attempt{int(attempt)}.out"

    def unit_traceback(self, unit_id: str, attempt: int) -> Path:
        """The traceback of an attempt that raised (written by the unit's child)."""
        return self.logs_dir / f"{unit_slug(unit_id)}.attempt{int(attempt)}.traceback.txt"

    def command_log(self, command: str, run_name: str | None = None) -> Path:
        """CASA log of a serial command (``image``, ``moments``, ``qa``)."""
        name = f"{command}-{run_name}" if run_name else command
        return self.logs_dir / f"{name}.casa.log"

    # ---- run state
    @property
    def state_dir(self) -> Path:
        return self.product_dir / STATE_DIRNAME

    @property
    def manifest_path(self) -> Path:
        return self.state_dir / MANIFEST_NAME

    @property
    def manifest_lock_path(self) -> Path:
        return self.state_dir / MANIFEST_LOCK_NAME

    @property
    def run_lock_path(self) -> Path:
        return self.state_dir / RUN_LOCK_NAME

    @property
    def owner_path(self) -> Path:
        return self.state_dir / OWNER_NAME


# --------------------------------------------------------------------------- the inverse
def split_image_ext(path: str | os.PathLike) -> tuple[str, str | None]:
    """``.../X_clean.image.pbcor.common.fits`` -> (``.../X_clean``, ``image.pbcor.common.fits``);
    a path without an image extension comes back whole with None."""
    text = str(path).rstrip("/")
    match = _EXT_RE.search(os.path.basename(text))
    if not match:
        return text, None
    return text[: len(text) - len(match.group(0))], match.group(0)[1:]


def chunk_index_of(path: str | os.PathLike) -> int | None:
    """The chunk number a product name carries, or None for a full-cube product."""
    match = _CHUNK_RE.search(os.path.basename(split_image_ext(path)[0]))
    return int(match.group(1)) if match else None


__all__ = ["RunLayout", "unit_slug", "image_stem_name", "split_image_ext", "chunk_index_of",
           "CHUNK_PRODUCT_EXTS", "FINAL_PRODUCT_EXTS", "FINAL_FITS_EXT"]
