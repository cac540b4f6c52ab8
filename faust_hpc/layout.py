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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from faust_hpc.catalog import all_field_names, all_spw_labels
from faust_hpc.errors import UserInputError
from faust_hpc.geometry import ARRAY_KINDS

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
SNAPSHOT_NAME = "snapshot.json"     # the folded manifest up to a byte offset (faust_hpc.run.snapshot)
SNAPSHOT_OUTPUTS_NAME = "snapshot.outputs.json"   # its units' outputs, checks and info (resume reads them)

CHUNK_TAG = "chunk"                 # "_chunk<N>" in chunk product names
TINYIMG_EXT = "tinyimg"             # the sum-of-weights stamp of a full SPW
DIRTY_EXT = "dirty"
NOMASK_EXT = "nomask"
CHUNK_LIST_SUFFIX = ".chunks.json"
COMMON_BEAM_SUFFIX = ".common_beam.json"   # the beam unit's record of the common beam across chunks
QA_PLOT_TAG = "qa_plot"            # "<base>_qa_plot_<kind>.<png|pdf>"
FITS_SUFFIX = ".fits"

# CASA image extensions of one imaging product, as tclean and postprocess write them.
IMAGE_EXT = "image"
COMMON_EXT = "image.common"
PBCOR_EXT = "image.pbcor"
PBCOR_COMMON_EXT = "image.pbcor.common"
FINAL_FITS_EXT = "image.pbcor.common.fits"
# The FITS files postprocess exports for every final image, as the original delivers them.
FINAL_FITS_EXTS = (FINAL_FITS_EXT, "mask.fits", "pb.fits")
CHUNK_PRODUCT_EXTS = ("image", "residual", "model", "mask", "pb", "psf", "sumwt")
# What postprocessing adds to each chunk (to the common beam across chunks): the concatenation's inputs.
CHUNK_POST_EXTS = (PBCOR_EXT, COMMON_EXT, PBCOR_COMMON_EXT)
FINAL_PRODUCT_EXTS = ("image", "image.common", "image.pbcor", "image.pbcor.common", "mask", "model", "pb",
                      "psf", "residual")


def final_fits_ext(im_ext: str) -> str | None:
    """The FITS file (one of :data:`FINAL_FITS_EXTS`) exported from final image extension ``im_ext``, if any."""
    fits = f"{im_ext}{FITS_SUFFIX}"
    return fits if fits in FINAL_FITS_EXTS else None

# The image-extension tail of a product path (labels and weightings contain dots,
# so os.path.splitext cannot find it).
_EXT_RE = re.compile(r"\.(image|mask|residual|pb|psf|model|sumwt|weight)(\..*)?$")
_CHUNK_RE = re.compile(rf"_{CHUNK_TAG}(\d+)(?=_|$)")
_CHUNK_TOKEN_RE = re.compile(rf"^{CHUNK_TAG}(\d+)$")
# A cookbook-style re-targeted SPW label (``216.582GHz_CH3CHO``) that is not in the
# catalog is recognised by its shape: "<freq>GHz_<molecule>" followed by an array kind.
_LABEL_RE = re.compile(rf"^(\d+\.\d+GHz_[^_]+(?:_[^_]+)*?)(?:_{CHUNK_TAG}\d+)?_({'|'.join(ARRAY_KINDS)})(?=_|$)")
# Any other label (a run file's window, e.g. ``HI``, not known to this process): the
# shortest text before an array kind.
_ANY_LABEL_RE = re.compile(rf"^(.+?)(?:_{CHUNK_TAG}\d+)?_({'|'.join(ARRAY_KINDS)})(?=_|$)")


def unit_slug(unit_id: str) -> str:
    """A unit id as one path component (``CB68/.../chunk07`` -> ``CB68__...__chunk07``)."""
    return unit_id.replace("/", "__")


def image_stem_name(field: str, label: str, array: str, weighting: str, chunk: int | None = None,
                    ext: str | Iterable[object] | None = None) -> str:
    """The base name of an image product, without directory or image extension:
    ``<FIELD>_<LABEL>[_chunk<N>]_<ARRAY>_<WEIGHTING>[_<EXT>]``. ``ext`` may be an
    iterable (joined by underscores, as the original API).

    The chunk tag follows the label, as in the original pipeline (its
    ``Spw.with_chunk`` renames the label to ``<LABEL>_chunk<N>``), so chunk
    products carry the names of the archive's."""
    head = label if chunk is None else f"{label}_{CHUNK_TAG}{int(chunk)}"
    parts = [field, head, array, weighting]
    if isinstance(ext, Iterable) and not isinstance(ext, str):
        parts.extend(str(e) for e in ext)
    elif ext is not None and ext != "":
        parts.append(str(ext))
    return "_".join(parts)


def moment_map_name(base: str, moment_ext: str) -> str:
    """``<base>.<moment ext>.fits`` (e.g. ``..._clean.mom0.pbcor.fits``)."""
    return f"{base}.{moment_ext}{FITS_SUFFIX}"


def qa_plot_stem(base: str) -> str:
    """``<base>_qa_plot``: what every QA plot name of one image starts with."""
    return f"{base}_{QA_PLOT_TAG}"


def qa_plot_name(base: str, kind: str, fmt: str) -> str:
    """``<base>_qa_plot_<kind>.<fmt>`` (kind ``image`` or ``residual``)."""
    return f"{qa_plot_stem(base)}_{kind}.{fmt}"


def qa_plot_prefix(base: str) -> str:
    """The common start of every QA plot name (any kind) of one image."""
    return f"{qa_plot_stem(base)}_"


def chunk_stem_glob(field: str, label: str, array: str, weighting: str) -> str:
    """A glob (metacharacters of the names escaped) matching the stem of every
    chunk of one image: ``<FIELD>_<LABEL>_chunk*_<ARRAY>_<WEIGHTING>``."""
    import glob as _glob

    marker = image_stem_name(field, label, array, weighting, chunk=0)
    head, tail = marker.split(f"_{CHUNK_TAG}0_", 1)
    return f"{_glob.escape(head)}_{CHUNK_TAG}[0-9]*_{_glob.escape(tail)}"


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
    def image_base(self, field: str, label: str, array: str, weighting: str,
                   ext: str | Iterable[object] | None = None, chunk: int | None = None) -> Path:
        """``images/<FIELD>/<FIELD>_<LABEL>_<ARRAY>_<WEIGHTING>[_chunk<N>][_<EXT>]``."""
        return self.field_image_dir(field) / image_stem_name(field, label, array, weighting, chunk, ext)

    def tiny_stamp_base(self, field: str, label: str, array: str, weighting: str,
                        ext: str = TINYIMG_EXT) -> Path:
        """The sum-of-weights stamp belongs to the full SPW, never a chunk."""
        return self.image_base(field, label, array, weighting, ext=ext)

    def chunk_list(self, field: str, label: str, array: str, weighting: str, ext: str) -> Path:
        """Frozen chunk list ``<imagebase>_<ext>.chunks.json`` of the full cube."""
        base = self.image_base(field, label, array, weighting, ext=ext)
        return base.with_name(base.name + CHUNK_LIST_SUFFIX)

    def common_beam(self, field: str, label: str, array: str, weighting: str, ext: str) -> Path:
        """The common beam across chunks ``<imagebase>_<ext>.common_beam.json``,
        written by the image's beam unit and read by its postprocess units."""
        base = self.image_base(field, label, array, weighting, ext=ext)
        return base.with_name(base.name + COMMON_BEAM_SUFFIX)

    def final_fits(self, field: str, label: str, array: str, weighting: str, ext: str) -> Path:
        """The delivered cube ``<imagebase>_<ext>.image.pbcor.common.fits``."""
        base = self.image_base(field, label, array, weighting, ext=ext)
        return base.with_name(f"{base.name}.{FINAL_FITS_EXT}")

    # ---- moment maps and QA plots
    def moment_map(self, base: str, moment_ext: str, field: str | None = None) -> Path:
        """``moments/<FIELD>/<base>.<moment ext>.fits`` (no field: ``moments/``)."""
        root = self.field_moment_dir(field) if field else self.moments_dir
        return root / moment_map_name(base, moment_ext)

    def qa_plot(self, base: str, kind: str, fmt: str) -> Path:
        return self.plots_dir / qa_plot_name(base, kind, fmt)

    # ---- per-unit scratch and logs
    def workdir_for(self, name: str) -> Path:
        """CASA working directory of one configuration (``work/<image base name>``)."""
        return self.work_dir / name

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
    def snapshot_path(self) -> Path:
        return self.state_dir / SNAPSHOT_NAME

    @property
    def snapshot_outputs_path(self) -> Path:
        return self.state_dir / SNAPSHOT_OUTPUTS_NAME


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


def product_dir_of(path: str | os.PathLike) -> Path | None:
    """``<prod>/images/<FIELD>/<name>`` -> ``<prod>`` (None if not in that layout)."""
    p = Path(path).resolve()
    if len(p.parents) >= 3 and p.parents[1].name == IMAGES_DIRNAME:
        return p.parents[2]
    return None


@dataclass(frozen=True)
class ProductName:
    """What a product path says: ``<FIELD>_<LABEL>_<ARRAY>_<WEIGHTING>[_chunk<N>][_<EXT>].<image ext>``.

    Parts that cannot be recognised are None (a field must be a catalog name;
    a label a catalog label or shaped like one). ``stem`` is the path without
    its image extension."""

    field: str | None
    label: str | None
    array: str | None
    weighting: str | None
    chunk: int | None
    ext: str | None
    image_ext: str | None
    stem: str

    @property
    def base(self) -> str:
        """The stem's file name (no directory, no image extension)."""
        return os.path.basename(self.stem)

    @property
    def is_chunk(self) -> bool:
        return self.chunk is not None

    @property
    def mol_name(self) -> str | None:
        if self.label is None:
            return None
        return self.label.split("_", 1)[1] if "_" in self.label else None


def _longest_prefix(text: str, names: Iterable[str]) -> str | None:
    """The longest ``name`` such that ``text`` is ``name`` or starts with ``name_``."""
    return next((n for n in sorted(names, key=len, reverse=True)
                 if text == n or text.startswith(n + "_")), None)


def parse(path: str | os.PathLike, require_image_ext: bool = False) -> ProductName:
    """The single inverse of the names above: what a product path names.

    Field and label are recognised by catalog names first (longest match; the
    run file's targets and windows are catalog names in every process that
    loaded it), a re-targeted label (``216.582GHz_CH3CHO``) by its shape, any
    other label as the text before the array kind. With
    ``require_image_ext`` a path without a CASA image extension is bad input."""
    stem, image_ext = split_image_ext(path)
    if image_ext is None and require_image_ext:
        raise UserInputError(f"{stem}: not a CASA product name (expected a name ending in "
                             f".image, .image.common, .mask, .residual or .pb)")
    base = os.path.basename(stem)
    unknown = ProductName(None, None, None, None, chunk_index_of(stem), None, image_ext, stem)
    field = _longest_prefix(base, all_field_names())
    if field is None:
        return unknown
    rest = base[len(field) + 1:]
    label = _longest_prefix(rest, all_spw_labels())
    if label is None:
        match = _LABEL_RE.match(rest) or _ANY_LABEL_RE.match(rest)
        label = match.group(1) if match else None
    if label is None:
        return ProductName(field, None, None, None, unknown.chunk, None, image_ext, stem)
    tokens = rest[len(label) + 1:].split("_") if len(rest) > len(label) else []
    chunk: int | None = None
    named: list[str] = []           # array, weighting, in that order
    while tokens and len(named) < 2:
        match = _CHUNK_TOKEN_RE.match(tokens[0])
        if match and chunk is None:
            chunk = int(match.group(1))
        else:
            named.append(tokens[0])
        tokens.pop(0)
    if tokens and chunk is None and _CHUNK_TOKEN_RE.match(tokens[0]):
        chunk = int(_CHUNK_TOKEN_RE.match(tokens[0]).group(1))
        tokens.pop(0)
    array = named[0] if named and named[0] in ARRAY_KINDS else None
    weighting = named[1] if array is not None and len(named) > 1 else None
    ext = "_".join(tokens) if tokens and weighting is not None else None
    return ProductName(field, label, array, weighting, chunk, ext, image_ext, stem)


__all__ = ["RunLayout", "unit_slug", "image_stem_name", "chunk_stem_glob", "split_image_ext", "chunk_index_of",
           "CHUNK_PRODUCT_EXTS", "CHUNK_POST_EXTS", "FINAL_PRODUCT_EXTS", "FINAL_FITS_EXT", "FINAL_FITS_EXTS",
           "final_fits_ext", "ProductName", "parse",
           "product_dir_of", "moment_map_name", "qa_plot_stem", "qa_plot_name", "qa_plot_prefix"]
