"""ImageConfig: one field x SPW x array kind x weighting, and its pipeline.

The documented user interface of the original pipeline: create a
configuration with :meth:`ImageConfig.from_name`, adjust its attributes, then
call the stages (``make_dirty_cube``, ``clean_line_nomask``,
``make_seed_mask``, ``clean_line``, ``postprocess``) or ``run_pipeline``.
The stage bodies live in :mod:`faust_hpc.imaging.stages` and every file name
in :mod:`faust_hpc.layout`; this module holds the configuration and the
spectral selection, and asks the layout for its names.

Every path is absolute (under ``prod_dir``), and every stage runs in its own
working directory (``workdir``/<stage>), so stages of different chunks can
run side by side in separate processes.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import sys
from glob import glob
from pathlib import Path
from typing import Any, Iterable, Iterator

from faust_hpc import catalog, spectral, user_paths
from faust_hpc.catalog import Spw, imaging_defaults
from faust_hpc.errors import PrerequisiteError, UserInputError
from faust_hpc.layout import RunLayout, chunk_stem_glob
from faust_hpc.layout import parse as parse_product
from faust_hpc.imaging import paths, stages
from faust_hpc.imaging.chunking import (ChunkConfig, ChunkedConfigSet, SpectralSelection, common_coverage,
                                        make_chunks, read_chunk_list, window_selection, write_chunk_list)
from faust_hpc.imaging.dataset import DataSet, spw_ids_for_ot_name, spw_ids_for_window
from faust_hpc.imaging.image_tools import delete_workdir, glob_escape, in_workdir, log_post, safely_remove_file
from faust_hpc.imaging.postprocess import calc_rms_from_image
from faust_hpc.units import format_weighting

log = logging.getLogger(__name__)

_DEFAULT = object()  # sentinel: "the documented default"
MASK_SCALES_BEAMS = (0.0, 3.0, 8.0)
"""Seed-mask smoothing scales of a run file's target, in beams of the masked image
(FAUST's 0/1/3 arcsec over its typical 0.36-arcsec target beam, rounded)."""


def format_cube_robust(weighting: float | int | str) -> tuple[float | None, str]:
    """(robust, tclean weighting) for a number (Briggs robust) or a name."""
    if isinstance(weighting, bool):
        raise UserInputError(f"invalid weighting {weighting!r}: use a Briggs robust number, 'natural' or 'uniform'")
    if isinstance(weighting, (int, float)):
        return float(weighting), "briggs"
    if weighting in ("natural", "uniform"):
        return None, weighting
    try:
        return float(weighting), "briggs"
    except (TypeError, ValueError):
        raise UserInputError(f"invalid weighting {weighting!r}: use a Briggs robust number, "
                             f"'natural' or 'uniform'") from None


def format_rms(rms: float, sigma: float = 1, unit: str = "Jy") -> str:
    return f"{float(sigma) * float(rms)!r}{unit}"


class ImageConfig:
    """Configuration of tclean and the pipeline stages for one image product.

    Parameters
    ----------
    dset : DataSet
    spw : Spw
    fullcube : image the whole SPW (True) or a ``line_vwin`` window about vsys.
    weighting : Briggs robust number, or ``'natural'`` / ``'uniform'``.
    chunk : ChunkConfig or None (no chunking).
    prod_dir : products directory (default ``paths.PROD_DIR``).

    Attributes
    ----------
    scales : multiscale scales in pixels (documented [0, 15, 45, 135] at the
        documented cell of res/10; scaled with the cell when the run file
        overrides it, so the angular scales stay the same).
    mask_ang_scales : seed-mask smoothing FWHMs in arcsec ([0, 1, 3]); for a
        run file's target None: :data:`MASK_SCALES_BEAMS` times the beam of
        the image being masked (FAUST's 1 and 3 arcsec are ~3 and ~8 of its
        0.36-arcsec beams; a 53-arcsec VLA beam cannot be smoothed to 1 arcsec).
    autom_kwargs : auto-multithresh parameters (the 7m set for ``kind='7m'``).
    smallscalebias, gain, cyclefactor, uvtaper, line_vwin, parallel,
    preserve_all_intermediate_products : as documented.
    rms : global RMS (Jy); computed from the dirty cube unless set.
    workdir : CASA working directory for this configuration's stages.
    """

    preserve_all_intermediate_products = False
    smallscalebias = float(imaging_defaults()["smallscalebias"])
    gain = float(imaging_defaults()["gain"])
    cyclefactor = float(imaging_defaults()["cyclefactor"])
    uvtaper: list[str] | None = None
    parallel = False
    line_vwin = str(imaging_defaults()["line_vwin"])
    # Opt-in (run file [imaging] image_last_covered_channel): also image the last
    # fully covered channel, which the original pipeline leaves out.
    image_last_covered_channel = False

    def __init__(self, dset: DataSet, spw: Spw, fullcube: bool = True, weighting: float | str = 0.5,
                 chunk: ChunkConfig | None = None, prod_dir: str | os.PathLike | None = None):
        if not spw.is_window and dset.setup != spw.setup:
            raise UserInputError(f"SPW {spw.label} belongs to Setup {spw.setup}, but the DataSet is "
                                 f"for Setup {dset.setup}")
        self.dset = dset
        self.spw = spw.with_chunk(chunk)
        self.fullcube = bool(fullcube)
        self.chunk = chunk
        self.robust, self.weighting_kind = format_cube_robust(weighting)
        self.weighting = weighting
        self.prod_dir = Path(prod_dir).expanduser().resolve() if prod_dir is not None else paths.get_prod_dir()
        defaults = imaging_defaults()
        if spw.line_vwin is not None:
            self.line_vwin = spw.line_vwin
        if not dset.is_faust:
            # geometry from the data, read when a stage first needs it (never at construction:
            # the launcher builds configurations for names alone, without CASA)
            dset.sky_freq_hz = float(spectral.velocity_to_freq_hz(dset.target.vsys, spw.restfreq_hz))
        self._cell_scale_factor: float | None = None if dset.cell_arcsec_override is not None else 1.0
        if dset.is_faust:
            self._cell_scale_factor = dset.default_geometry.cell_arcsec / dset.cell_arcsec
        self._scales: list[int] | None = None
        self._nomask_scale_upper_limit: float | None = None
        self.mask_ang_scales: list[float] | None = (
            [float(s) for s in defaults["mask_ang_scales_arcsec"]] if dset.is_faust else None)
        table = defaults["automask_7m"] if dset.kind == "7m" else defaults["automask_12m"]
        self.autom_kwargs = {"usemask": "auto-multithresh", **copy.deepcopy(dict(table)), "verbose": True}
        self._rms: float | None = None
        self._rms_cache: tuple[Any, float] | None = None
        self._spw_ids: list[str] | None = None
        self.workdir: Path | None = None
        self.frozen_chunks_ext = "clean"

    @property
    def cell_scale_factor(self) -> float:
        """Documented cell / actual cell: pixel scales keep their angular size."""
        if self._cell_scale_factor is None:
            self._cell_scale_factor = self.dset.default_geometry.cell_arcsec / self.dset.cell_arcsec
        return self._cell_scale_factor

    @property
    def scales(self) -> list[int]:
        if self._scales is None:
            self._scales = self._scaled_pixels(imaging_defaults()["scales_pix"])
        return self._scales

    @scales.setter
    def scales(self, value: Iterable[int]) -> None:
        self._scales = [int(s) for s in value]

    @property
    def nomask_scale_upper_limit(self) -> float:
        if self._nomask_scale_upper_limit is None:
            limit = float(imaging_defaults()["nomask_scale_upper_limit_pix"])
            self._nomask_scale_upper_limit = limit * self.cell_scale_factor
        return self._nomask_scale_upper_limit

    @nomask_scale_upper_limit.setter
    def nomask_scale_upper_limit(self, value: float) -> None:
        self._nomask_scale_upper_limit = float(value)

    def mask_scales_arcsec(self, beam_arcsec: float) -> list[float]:
        """The seed mask's smoothing scales: ``mask_ang_scales`` when set (FAUST's
        0/1/3 arcsec, or the run file's), else :data:`MASK_SCALES_BEAMS` x the beam."""
        if self.mask_ang_scales is not None:
            return [float(s) for s in self.mask_ang_scales]
        return [round(b * float(beam_arcsec), 3) for b in MASK_SCALES_BEAMS]

    def _scaled_pixels(self, pixels: Iterable[float]) -> list[int]:
        out: list[int] = []
        for p in pixels:
            value = int(round(float(p) * self.cell_scale_factor))
            if value not in out:
                out.append(value)
        return out

    @classmethod
    def from_name(cls, field: str, label: str, kind: Any = _DEFAULT, **kwargs: Any) -> "ImageConfig":
        """Configuration from a field name and SPW label (``fullcube``,
        ``weighting``, ``chunk``, ``prod_dir`` and the DataSet options
        ``data_dir``, ``oversample``, ``cell_arcsec``, ``imsize`` may be given).
        ``kind`` defaults to ``'joint'``; for a Setup 3 label (12m data only)
        the default switches to ``'12m'`` with a warning, as the original; for
        a run file's window it is ``'all'``. ``setup`` (a FAUST field imaged in
        a run file's window) defaults to the SPW's."""
        spw = catalog.get_spw(label)
        if kind is _DEFAULT:
            kind = "joint"
            if spw.is_window:
                kind = "all"
            elif "7m" not in catalog.get_setup(spw.setup).arrays:
                kind = "12m"
                log_post(f"-- Setup {spw.setup} has no 7m data: imaging {label} with kind='12m'", "WARN")
        dset_kwargs = {k: kwargs.pop(k) for k in ("data_dir", "oversample", "cell_arcsec", "imsize") if k in kwargs}
        setup = kwargs.pop("setup", None)
        if setup is None or not spw.is_window:
            setup = spw.setup
        dset = DataSet(field, setup=setup, kind=kind, **dset_kwargs)
        return cls(dset, spw, **kwargs)

    def __repr__(self) -> str:
        return (f"ImageConfig({self.dset.field!r}, {self.spw.label!r}, kind={self.dset.kind!r}, "
                f"weighting={self.weighting!r}, fullcube={self.fullcube}, chunk={self.chunk})")

    # -- names --------------------------------------------------------------
    @property
    def is_chunked(self) -> bool:
        return self.chunk is not None

    @property
    def weighting_label(self) -> str:
        return format_weighting(self.weighting)

    @property
    def layout(self) -> RunLayout:
        """The directory tree this configuration writes into."""
        return RunLayout(self.prod_dir)

    def _image_base(self, ext: Any = None, chunk: int | None = None) -> str:
        base = self.layout.image_base(self.dset.field, self.spw.label, self.dset.kind, self.weighting_label,
                                      ext=ext, chunk=chunk)
        base.parent.mkdir(parents=True, exist_ok=True)   # tclean writes there
        return str(base)

    def get_imagebase(self, ext: Any = None) -> str:
        """The image base of :meth:`faust_hpc.layout.RunLayout.image_base`: field,
        SPW label, array, weighting, the chunk if any, then ``ext`` (no image
        extension such as ``.image``). ``ext`` may be an iterable, joined by
        underscores."""
        return self._image_base(ext, self.chunk.index if self.is_chunked else None)

    @property
    def dirty_imagebase(self) -> str:
        return self.get_imagebase(ext=user_paths.get("DIRTY_EXT"))

    @property
    def nomask_imagebase(self) -> str:
        return self.get_imagebase(ext=user_paths.get("NOMASK_EXT"))

    @property
    def tinyimg_imagebase(self) -> str:
        """The sum-of-weights stamp belongs to the full SPW, never a chunk."""
        return self._image_base(user_paths.get("TINYIMG_EXT"))

    def chunk_list_path(self, ext: str = "clean") -> str:
        """Frozen chunk list ``<imagebase>_<ext>.chunks.json`` (of the full cube)."""
        self._image_base()
        return str(self.layout.chunk_list(self.dset.field, self.spw.label, self.dset.kind, self.weighting_label,
                                          ext))

    def unchunked_copy(self) -> "ImageConfig":
        new = copy.deepcopy(self)
        new.chunk = None
        new.spw = new.spw.with_chunk(None)
        return new

    # -- working directories -------------------------------------------------
    def get_workdir(self) -> Path:
        if self.workdir is not None:
            return Path(self.workdir)
        return self.layout.workdir_for(os.path.basename(self.get_imagebase()))

    @contextlib.contextmanager
    def stage_workdir(self, stage: str) -> Iterator[Path]:
        """Run a stage inside ``<workdir>/<stage>`` (CASA's temporary files)."""
        with in_workdir(self.get_workdir() / stage) as path:
            yield path

    # -- data selection ------------------------------------------------------
    @property
    def spw_ids(self) -> list[str]:
        """SPW id per MS, by the window name's ``ot_name`` ending (a run file's
        window: by id, name or frequency coverage, :func:`spw_ids_for_window`)."""
        if self._spw_ids is None:
            if self.spw.is_window:
                self._spw_ids = spw_ids_for_window(self.dset.vis, self.spw, self.dset.field, self.dset.target.vsys)
            else:
                self._spw_ids = spw_ids_for_ot_name(self.dset.vis, self.spw.ot_name, label=self.spw.label)
        return list(self._spw_ids)

    def validate_inputs(self) -> None:
        """Fail early with a clear message: MS present, SPW in every MS."""
        _ = self.spw_ids

    # -- RMS -----------------------------------------------------------------
    @property
    def rms(self) -> float:
        """Global RMS (Jy): scaled MAD of the dirty cube, unless set manually."""
        if self._rms is not None:
            return self._rms
        imagename = f"{self.dirty_imagebase}.image"
        if not os.path.exists(imagename):
            raise PrerequisiteError(f"{imagename} not found (needed for the RMS): run make_dirty_cube first "
                                    f"(or set config.rms)")
        key = (imagename, os.stat(imagename).st_mtime_ns)
        if self._rms_cache is None or self._rms_cache[0] != key:
            self._rms_cache = (key, calc_rms_from_image(imagename))
        return self._rms_cache[1]

    @rms.setter
    def rms(self, value: float | None) -> None:
        self._rms = None if value is None else float(value)

    # -- spectral selection --------------------------------------------------
    def coverage_imagebase(self) -> str:
        """The cube whose ``.sumwt`` defines the common coverage: the tiny
        stamp when it exists (it depends only on the data, so chunked and
        unchunked runs agree), else the full dirty cube."""
        full = self if not self.is_chunked else self.unchunked_copy()
        for base in (full.tinyimg_imagebase, full.dirty_imagebase):
            if os.path.exists(f"{base}.sumwt"):
                return base
        raise PrerequisiteError(f"no sum-of-weights cube for {os.path.basename(full.get_imagebase())}: "
                                f"run make_tiny_image_stamp (or make_dirty_cube) first")

    def full_selection(self) -> SpectralSelection:
        """Channels of the full (unchunked) product: common coverage, or the
        ``line_vwin`` cut-out about vsys when ``fullcube`` is False."""
        coverage = common_coverage(self.coverage_imagebase(), include_last=self.image_last_covered_channel)
        if self.fullcube:
            return coverage
        vwin = catalog.parse_velocity_kms(self.line_vwin)
        return window_selection(coverage, self.spw.restfreq_hz, self.dset.target.vsys, vwin)

    @property
    def spectral_selection(self) -> SpectralSelection:
        if self.is_chunked:
            sel = self.chunk.selection
            if sel.width_hz == 0.0:
                sel = SpectralSelection(sel.start_hz, common_coverage(self.coverage_imagebase()).width_hz, sel.nchan)
            return sel
        return self.full_selection()

    @property
    def selected_start_nchan(self) -> tuple[str, int]:
        sel = self.spectral_selection
        return sel.start, sel.nchan

    # -- chunking ------------------------------------------------------------
    def default_nchunks(self) -> int:
        return catalog.default_nchunks(self.spw)

    def duplicate_into_chunks(self, nchunks: int | None = None, ext: str | None = None,
                              use_frozen: bool = True) -> ChunkedConfigSet:
        """Chunked copies of this configuration. A frozen chunk list (written
        by :meth:`prepare_chunks`) is used when present and compatible;
        otherwise the chunks are computed from the ``.sumwt`` (a tiny stamp is
        imaged first if no sum-of-weights cube exists)."""
        if self.is_chunked:
            raise ValueError(f"config is already chunked: {self.chunk}")
        ext = ext or self.frozen_chunks_ext
        path = self.chunk_list_path(ext)
        if use_frozen and os.path.exists(path):
            _, chunks = read_chunk_list(path)
            if nchunks is None or int(nchunks) == len(chunks):
                return self._chunk_set(chunks)
            log_post(f"-- frozen chunk list {path} has {len(chunks)} chunks, {nchunks} requested: recomputing",
                     "WARN")
        try:
            self.coverage_imagebase()
        except PrerequisiteError:
            self.make_tiny_image_stamp()
        sel = self.full_selection()
        chunks = make_chunks(sel, self._resolve_nchunks(nchunks, sel.nchan))
        return self._chunk_set(chunks)

    def _resolve_nchunks(self, nchunks: int | None, nchan: int) -> int:
        n = self.default_nchunks() if nchunks is None else int(nchunks)
        if n < 1:
            raise UserInputError(f"nchunks must be a positive integer, got {nchunks}")
        if n > nchan:
            log_post(f"-- {n} chunks requested for {nchan} channels; using {nchan}", "WARN")
            n = nchan
        return n

    def _chunk_set(self, chunks: list[ChunkConfig]) -> ChunkedConfigSet:
        configs = []
        for chunk in chunks:
            config = copy.deepcopy(self)
            config.chunk = chunk
            config.spw = config.spw.with_chunk(chunk)
            config._rms_cache = None
            config._spw_ids = self._spw_ids
            configs.append(config)
        return ChunkedConfigSet(configs)

    def prepare_chunks(self, nchunks: int | None = None, ext: str = "clean",
                       remake_stamp: bool = True) -> ChunkedConfigSet:
        """The prepare stage: image the sum-of-weights stamp, compute the
        common coverage (or cut-out window), split it into chunks and freeze
        the list in ``<imagebase>_<ext>.chunks.json``."""
        if remake_stamp or not os.path.exists(f"{self.tinyimg_imagebase}.sumwt"):
            stages.make_tiny_image_stamp(self)
        sel = self.full_selection()
        chunks = make_chunks(sel, self._resolve_nchunks(nchunks, sel.nchan))
        write_chunk_list(self.chunk_list_path(ext), sel, chunks,
                         extra={"imagebase": self.get_imagebase(ext=ext), "field": self.dset.field,
                                "label": self.spw.label, "kind": self.dset.kind,
                                "weighting": self.weighting_label, "fullcube": self.fullcube,
                                "line_vwin": None if self.fullcube else self.line_vwin})
        self.frozen_chunks_ext = ext
        return self._chunk_set(chunks)

    def load_frozen_chunks(self, ext: str = "clean") -> ChunkedConfigSet:
        """The chunk set frozen by :meth:`prepare_chunks` (PrerequisiteError if absent)."""
        _, chunks = read_chunk_list(self.chunk_list_path(ext))
        return self._chunk_set(chunks)

    # -- cleanup ---------------------------------------------------------------
    def matching_files(self, remove_chunks: bool = True) -> list[str]:
        stem = self.get_imagebase()
        found = set(glob(glob_escape(stem) + "_*")) | set(glob(glob_escape(stem) + ".*"))
        if remove_chunks and not self.is_chunked:
            key = (self.dset.field, self.spw.label, self.dset.kind, self.weighting_label)
            found |= set(glob(os.path.join(glob_escape(os.path.dirname(stem)), chunk_stem_glob(*key) + "[_.]*")))
        else:
            found = {f for f in found if parse_product(f).is_chunk == self.is_chunked}
        return sorted(found)

    def remove_all_files(self, confirm: bool = True, remove_chunks: bool = True) -> list[str]:
        """Remove every product of this configuration (``get_imagebase()*``).

        Never deletes unasked: with ``confirm`` (the default) the list is shown
        and a ``y`` typed on the terminal is required; without a terminal
        (a batch job) nothing is deleted and UserInputError says to pass
        ``confirm=False``, the explicit opt-out."""
        files = self.matching_files(remove_chunks=remove_chunks)
        name = os.path.basename(self.get_imagebase())
        if confirm and files:
            if sys.stdin is None or not sys.stdin.isatty():
                raise UserInputError(f"remove_all_files: no terminal to confirm deleting {len(files)} products "
                                     f"of {name}; pass confirm=False to delete without asking")
            for filen in files:
                print("  ", filen)
            if input("Delete the above files? [y/N] ").strip().lower() != "y":
                return []
        for filen in files:
            safely_remove_file(filen)
        log_post(f"-- removed {len(files)} products of {name}")
        return files

    def mpicasa_cleanup(self, imagename: str) -> None:
        """Remove ``.workdirectory`` leftovers (no mpicasa here: tclean runs serially)."""
        delete_workdir(imagename)

    # -- stages (bodies in faust_hpc.imaging.stages) -----------------------------
    def make_tiny_image_stamp(self) -> list[str]:
        return stages.make_tiny_image_stamp(self)

    def make_dirty_cube(self) -> list[str]:
        return stages.make_dirty_cube(self)

    def clean_line_nomask(self, sigma: float = 4.5, scale_upper_limit: Any = _DEFAULT) -> list[str]:
        limit = self.nomask_scale_upper_limit if scale_upper_limit is _DEFAULT else scale_upper_limit
        return stages.clean_line_nomask(self, sigma=sigma, scale_upper_limit=limit)

    def make_seed_mask(self, sigma: float | Iterable[float] = 5.0) -> str:
        return stages.make_seed_mask(self, sigma=sigma)

    def clean_line(self, mask_method: str = "seed+multithresh", sigma: float = 3.0, ext: str | None = None,
                   restart: bool = False, interactive: bool = False) -> list[str]:
        return stages.clean_line(self, mask_method=mask_method, sigma=sigma, ext=ext, restart=restart,
                                 interactive=interactive)

    def clean_line_interactive_restart(self, **kwargs: Any) -> list[str]:
        return self.clean_line(restart=True, interactive=True, **kwargs)

    def postprocess(self, ext: str | None = None, make_fits: bool = True, make_hanning: bool = False,
                    beam: dict | None = None) -> dict[str, Any]:
        return stages.postprocess(self, ext=ext, make_fits=make_fits, make_hanning=make_hanning, beam=beam)

    def run_pipeline_tasks(self, ext: str = "clean", nomask_sigma: float = 4.5,
                           seedmask_sigma: float | Iterable[float] = 5.0, clean_sigma: float = 3.0) -> None:
        """dirty -> nomask -> seed mask -> clean (-> postprocess when unchunked)."""
        self.make_dirty_cube()
        self.clean_line_nomask(sigma=nomask_sigma)
        self.make_seed_mask(sigma=seedmask_sigma)
        self.clean_line(mask_method="seed+multithresh", ext=ext, sigma=clean_sigma)
        if not self.is_chunked:
            self.postprocess(ext=ext, make_fits=True)

    def run_pipeline(self, ext: str = "clean", use_chunking: bool = True, nchunks: int | None = None,
                     nomask_sigma: float = 4.5, seedmask_sigma: float | Iterable[float] = 5.0,
                     clean_sigma: float = 3.0) -> None:
        """All pipeline tasks. Chunked (default): prepare (stamp, frozen chunk
        list), each chunk's tasks in turn, then the chunk set's postprocess.
        The final product is :meth:`faust_hpc.layout.RunLayout.final_fits`."""
        sigmas = dict(nomask_sigma=nomask_sigma, seedmask_sigma=seedmask_sigma, clean_sigma=clean_sigma)
        if self.is_chunked or not use_chunking:
            self.run_pipeline_tasks(ext=ext, **sigmas)
            return
        chunked = self.prepare_chunks(nchunks=nchunks, ext=ext)
        for config in chunked:
            config.run_pipeline_tasks(ext=ext, **sigmas)
        chunked.postprocess(ext=ext)
