"""Frequency chunking: common coverage, chunk boundaries, chunk sets.

All spectral grids are explicit: a :class:`SpectralSelection` is (start,
width, nchan) on the LSRK grid of the data (channel centres, ascending
frequency, native channel width), read from the ``.sumwt`` of a tclean cube
made with the data's own grid. Every chunk start is computed as ``start +
start_chan_ix * width`` from the same numbers, so the concatenated chunks have
exactly the unchunked cube's spectral axis -- no channel missing or doubled
at the seams -- and tclean never picks its own default grid (which can give
an edge channel covered by 7m data only).

The chunk list of a configuration is frozen in ``<imagebase>.chunks.json``
by the prepare stage; later stages and resumed runs read it back instead of
recomputing, so chunk boundaries never move between processes.
"""
from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from faust_hpc import spectral
from faust_hpc.catalog import imaging_defaults, parse_frequency_hz
from faust_hpc.errors import PrerequisiteError
from faust_hpc.imaging.image_tools import ImageManager, log_post, publish, temp_name
from faust_hpc.layout import CHUNK_POST_EXTS, COMMON_EXT, FINAL_PRODUCT_EXTS, final_fits_ext
from faust_hpc.spectral import split_channels  # the one chunk-split rule (the cost model uses it too)

if TYPE_CHECKING:  # pragma: no cover
    from faust_hpc.imaging.config import ImageConfig

log = logging.getLogger(__name__)

CHUNKS_JSON_VERSION = 1
COMMON_BEAM_JSON_VERSION = 1


def format_hz(value: float) -> str:
    """A float frequency as a CASA quantity string (never ``np.float64(...)``)."""
    return f"{float(value):.6f}Hz"


@dataclass(frozen=True)
class SpectralSelection:
    """Channels to image: centre of the first channel (LSRK Hz), channel width
    (Hz, positive: ascending frequency) and channel count."""

    start_hz: float
    width_hz: float
    nchan: int

    @property
    def start(self) -> str:
        return format_hz(self.start_hz)

    @property
    def width(self) -> str:
        return format_hz(self.width_hz)

    def freqs(self) -> np.ndarray:
        return self.start_hz + np.arange(self.nchan) * self.width_hz

    def sub(self, start_chan_ix: int, nchan: int) -> "SpectralSelection":
        return SpectralSelection(self.start_hz + start_chan_ix * self.width_hz, self.width_hz, int(nchan))


def read_sumwt(imagebase: str) -> tuple[np.ndarray, np.ndarray]:
    """Sum of weights per channel and the channel-centre frequencies (Hz)."""
    sumwt_filen = f"{imagebase}.sumwt"
    if not os.path.exists(sumwt_filen):
        raise PrerequisiteError(f"{sumwt_filen} not found: run make_tiny_image_stamp (or make_dirty_cube) first")
    with ImageManager(sumwt_filen) as ia:
        sumwt = np.asarray(ia.getchunk(), dtype=float)
        csys = ia.coordsys()
        rec = csys.torecord()
        spec_axis = csys.findaxisbyname("spectral")
        csys.done()
    # collapse every axis but the spectral one (the sumwt of all polarizations)
    other = tuple(i for i in range(sumwt.ndim) if i != spec_axis)
    per_chan = sumwt.max(axis=other) if other else sumwt
    spec = next(v for k, v in rec.items() if k.startswith("spectral"))
    wcs = spec["wcs"]
    unit_scale = parse_frequency_hz(f"1{spec['unit']}")
    faxis = (wcs["crval"] + (np.arange(per_chan.size) - wcs["crpix"]) * wcs["cdelt"]) * unit_scale
    return per_chan, faxis


def common_coverage(imagebase: str, fraction: float | None = None,
                    include_last: bool = False) -> SpectralSelection:
    """Channels where every execution block contributes: sum-of-weights above
    ``fraction`` (0.95) x the median. Returned on an ascending grid.

    As the original (``nchan = abs(ix_hi - ix_lo)``), the range starts at the
    first fully covered channel and holds ``hi - lo`` channels: the last fully
    covered one is not imaged, so chunk boundaries and the final channel grid
    match the archive's products. ``include_last`` (run file
    ``[imaging] image_last_covered_channel = true``) images it too."""
    fraction = float(imaging_defaults()["common_coverage_fraction"] if fraction is None else fraction)
    sumwt, faxis = read_sumwt(imagebase)
    med = np.nanmedian(sumwt)
    good = np.flatnonzero(sumwt > fraction * med)
    if good.size == 0:
        raise RuntimeError(f"{imagebase}.sumwt has no channel with weight above {fraction} x median ({med})")
    lo, hi = int(good.min()), int(good.max())
    freqs = faxis[lo: hi + 1]
    width = abs(float(faxis[1] - faxis[0])) if faxis.size > 1 else 0.0
    nchan = hi - lo + 1 if include_last else max(hi - lo, 1)
    sel = SpectralSelection(float(freqs.min()), width, nchan)
    log_post(f"-- common coverage of {os.path.basename(imagebase)}: start {sel.start}, "
             f"width {sel.width}, nchan {sel.nchan} (of {sumwt.size})")
    return sel


def calc_common_coverage_range(imagebase: str) -> tuple[str, int]:
    """Documented API: (LSRK start frequency quantity, nchan) of the common coverage."""
    sel = common_coverage(imagebase)
    return sel.start, sel.nchan


def window_selection(coverage: SpectralSelection, restfreq_hz: float, vsys_kms: float,
                     vwin_kms: float) -> SpectralSelection:
    """A velocity cut-out of full width ``vwin_kms`` centred on ``vsys`` (radio
    convention), aligned to the native grid and clipped to the coverage."""
    dv = spectral.chan_width_kms(coverage.width_hz, restfreq_hz)
    nchan = max(1, int(round(vwin_kms / dv)))
    f_sys = spectral.velocity_to_freq_hz(vsys_kms, restfreq_hz)
    centre_ix = (f_sys - coverage.start_hz) / coverage.width_hz
    start_ix = int(round(centre_ix - (nchan - 1) / 2.0))
    lo, hi = max(0, start_ix), min(coverage.nchan, start_ix + nchan)
    if hi <= lo:
        raise RuntimeError(f"velocity window {vsys_kms}+-{vwin_kms / 2} km/s lies outside the covered band")
    if (lo, hi) != (start_ix, start_ix + nchan):
        log_post(f"-- velocity window clipped to the common coverage: {hi - lo} of {nchan} channels", "WARN")
    return coverage.sub(lo, hi - lo)


def calc_chunk_freqs(imagebase: str, nchunks: int = 1) -> list[list[Any]]:
    """Documented API: ``[[start quantity (LSRK channel centre), nchan], ...]``
    over the common coverage of ``<imagebase>.sumwt``."""
    sel = common_coverage(imagebase)
    return [[sel.sub(s, n).start, n] for s, n in split_channels(sel.nchan, nchunks)]


class ChunkConfig:
    """One frequency chunk.

    Parameters
    ----------
    start : LSRK frequency (quantity string) of the chunk's first channel centre.
    start_chan_ix : index of that channel in the full cube.
    nchan : channels in the chunk.
    index : chunk number, used in file names (``_chunk0``).
    width : channel width (quantity string); the native width when None.
    """

    def __init__(self, start: str, start_chan_ix: int, nchan: int, index: int, width: str | None = None):
        self.start = start
        self.start_chan_ix = int(start_chan_ix)
        self.nchan = int(nchan)
        self.index = int(index)
        self.width = width

    def __repr__(self) -> str:
        return (f"ChunkConfig(start={self.start!r}, start_chan_ix={self.start_chan_ix}, nchan={self.nchan}, "
                f"index={self.index}, width={self.width!r})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChunkConfig) and self.to_dict() == other.to_dict()

    @property
    def fullcube_chan_indices(self) -> list[int]:
        """Indices of this chunk's channels in the full cube."""
        return list(range(self.start_chan_ix, self.start_chan_ix + self.nchan))

    def convert_chunk_chan_to_full(self, ix: int) -> int:
        if not 0 <= ix < self.nchan:
            raise IndexError(f"channel {ix} is not in chunk {self.index} (0..{self.nchan - 1})")
        return self.start_chan_ix + ix

    def convert_full_chan_to_chunk(self, ix: int) -> int:
        if not self.start_chan_ix <= ix < self.start_chan_ix + self.nchan:
            raise IndexError(f"full-cube channel {ix} is not in chunk {self.index} "
                             f"({self.start_chan_ix}..{self.start_chan_ix + self.nchan - 1})")
        return ix - self.start_chan_ix

    @property
    def selection(self) -> SpectralSelection:
        width = parse_frequency_hz(self.width) if self.width else 0.0
        return SpectralSelection(parse_frequency_hz(self.start), width, self.nchan)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "start": self.start, "start_chan_ix": self.start_chan_ix,
                "nchan": self.nchan, "width": self.width}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ChunkConfig":
        return cls(d["start"], d["start_chan_ix"], d["nchan"], d["index"], d.get("width"))


def make_chunks(selection: SpectralSelection, nchunks: int) -> list[ChunkConfig]:
    return [ChunkConfig(selection.sub(s, n).start, s, n, i, selection.width)
            for i, (s, n) in enumerate(split_channels(selection.nchan, nchunks))]


# -- frozen chunk list -------------------------------------------------------
def write_chunk_list(path: str, selection: SpectralSelection, chunks: list[ChunkConfig],
                     extra: dict[str, Any] | None = None) -> str:
    """Freeze the chunk boundaries (temporary name, then rename)."""
    doc = {"version": CHUNKS_JSON_VERSION, "frame": "LSRK", "selection": asdict(selection),
           "nchunks": len(chunks), "nchan_total": sum(c.nchan for c in chunks),
           "chunks": [c.to_dict() for c in chunks]}
    if extra:
        doc.update(extra)
    return _write_json(path, doc)


def _write_json(path: str, doc: dict[str, Any]) -> str:
    """Write a small JSON record under a temporary name, fsync, rename into place.
    Floats are written as ``repr`` (Python's json): they read back bit-identical."""
    tmp = temp_name(path)
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    return publish(tmp, path)


def read_chunk_list(path: str) -> tuple[SpectralSelection, list[ChunkConfig]]:
    if not os.path.exists(path):
        raise PrerequisiteError(f"chunk list {path} not found: run the prepare stage "
                                f"(ImageConfig.prepare_chunks / unit '.../prepare') first")
    with open(path) as fh:
        doc = json.load(fh)
    if doc.get("version") != CHUNKS_JSON_VERSION:
        raise RuntimeError(f"{path}: unsupported chunk list version {doc.get('version')}")
    sel = SpectralSelection(**doc["selection"])
    return sel, [ChunkConfig.from_dict(d) for d in doc["chunks"]]


class ChunkedConfigSet:
    """The chunked copies of one ImageConfig, with the operations that need
    all of them (common beam, postprocess, concatenation)."""

    def __init__(self, configs: Iterable["ImageConfig"]):
        self.configs = list(configs)
        if not self.configs:
            raise ValueError("a ChunkedConfigSet needs at least one chunk")

    @property
    def nchunks(self) -> int:
        return len(self.configs)

    @property
    def nchan_total(self) -> int:
        return sum(c.chunk.nchan for c in self.configs)

    @property
    def chunks(self) -> list[ChunkConfig]:
        return [c.chunk for c in self.configs]

    def __iter__(self) -> Iterator["ImageConfig"]:
        return iter(self.configs)

    def __len__(self) -> int:
        return len(self.configs)

    def __getitem__(self, key: int | slice):
        if isinstance(key, slice):
            return self.configs[key]
        return self.configs[key]

    @property
    def full_config(self) -> "ImageConfig":
        """An unchunked copy (for names of the concatenated products)."""
        full = copy.deepcopy(self.configs[0])
        full.chunk = None
        full.spw = full.spw.with_chunk(None)
        return full

    def get_imagebase(self, ext: str | None = None) -> str:
        return self.full_config.get_imagebase(ext=ext)

    def remove_all_files(self, confirm: bool = True) -> list[str]:
        return self.full_config.remove_all_files(confirm=confirm, remove_chunks=True)

    def get_chunk_from_channel(self, ix: int) -> "ImageConfig":
        """The chunk configuration holding full-cube channel ``ix``."""
        ix = int(ix)
        if not 0 <= ix < self.nchan_total:
            raise IndexError(f"channel {ix} is outside the full cube (0..{self.nchan_total - 1})")
        for config in self.configs:
            if config.chunk.start_chan_ix <= ix < config.chunk.start_chan_ix + config.chunk.nchan:
                return config
        raise RuntimeError(f"no chunk holds channel {ix}")

    def get_common_beam(self, ext: str = "clean") -> dict[str, Any]:
        """The original's common beam across chunks: the largest-area chunk
        beam with major and minor x ``chunk_common_beam_fudge`` (1.01), checked
        with radio-beam to contain every plane of every chunk (else radio-beam's
        smallest common beam; see :func:`~faust_hpc.imaging.postprocess.choose_common_beam`)."""
        from faust_hpc.imaging.postprocess import common_beam_across_images

        names = []
        for config in self.configs:
            imagename = f"{config.get_imagebase(ext=ext)}.image"
            if not os.path.exists(imagename):
                raise PrerequisiteError(f"{imagename} not found: run clean_line (unit "
                                        f"chunk{config.chunk.index:02d}) for chunk {config.chunk.index} first")
            names.append(imagename)
        return common_beam_across_images(names)

    DEFAULT_CONCAT_EXTS = FINAL_PRODUCT_EXTS   # the original's name for layout's one tuple

    def concat_cubes(self, ext: str = "clean", im_exts: Iterable[str] | None = None) -> list[str]:
        """Concatenate the chunks' images (default: image, image.common,
        image.pbcor, image.pbcor.common, mask, model, pb, psf, residual)."""
        from faust_hpc.imaging.postprocess import concat_images

        exts = self.DEFAULT_CONCAT_EXTS if im_exts is None else im_exts
        exts = [exts] if isinstance(exts, str) else list(exts)
        bases = [c.get_imagebase(ext=ext) for c in self.configs]
        imagebase = self.get_imagebase(ext=ext)
        written = []
        for im_ext in (e.lstrip(".") for e in exts):
            infiles = [f"{b}.{im_ext}" for b in bases]
            missing = [f for f in infiles if not os.path.exists(f)]
            if missing:
                # never leave an older concatenation that no longer matches its chunks
                from faust_hpc.imaging.image_tools import if_exists_remove

                if_exists_remove(f"{imagebase}.{im_ext}")
                log_post(f"-- skipping concatenation of .{im_ext}: {missing[0]} not found", "WARN")
                continue
            written.append(concat_images(infiles, f"{imagebase}.{im_ext}"))
        return written

    # -- finalize, in three steps: common beam -> per-chunk postprocess -> concatenation + FITS.
    # The serial postprocess() below and the run's beam / postNN / concatNN units call the
    # same methods (concat_and_export is concat_extension per extension), so both give the same bytes.
    def common_beam_path(self, ext: str = "clean") -> str:
        """Where the beam unit records the common beam (:meth:`RunLayout.common_beam`)."""
        full = self.configs[0]
        return str(full.layout.common_beam(full.dset.field, full.spw.label, full.dset.kind,
                                           full.weighting_label, ext))

    def record_common_beam(self, ext: str = "clean") -> dict[str, Any]:
        """Step 1 as a unit: :meth:`get_common_beam`, written to
        :meth:`common_beam_path` (JSON floats: exact) for the postprocess units."""
        beam = self.get_common_beam(ext=ext)
        _write_json(self.common_beam_path(ext), {"version": COMMON_BEAM_JSON_VERSION, "nchunks": self.nchunks,
                                                  "beam": beam})
        return beam

    def recorded_common_beam(self, ext: str = "clean") -> dict[str, Any]:
        """The beam :meth:`record_common_beam` wrote for this chunk set."""
        path = self.common_beam_path(ext)
        if not os.path.exists(path):
            raise PrerequisiteError(f"{path} not found: run the image's beam unit "
                                    f"(ChunkedConfigSet.record_common_beam) first")
        with open(path) as fh:
            doc = json.load(fh)
        if doc.get("version") != COMMON_BEAM_JSON_VERSION or doc.get("nchunks") != self.nchunks:
            raise PrerequisiteError(f"{path} is for {doc.get('nchunks')} chunks (version {doc.get('version')}), "
                                    f"not these {self.nchunks}: run the image's beam unit again")
        return doc["beam"]

    def postprocess_chunks(self, indices: Iterable[int], beam: dict[str, Any],
                           ext: str = "clean") -> dict[int, dict[str, Any]]:
        """Step 2: postprocess the chunks ``indices`` to ``beam`` (residual
        check, pbcor, smoothing to the common beam, PB mask); no FITS."""
        return {int(ix): self.configs[int(ix)].postprocess(ext=ext, make_fits=False, make_hanning=False, beam=beam)
                for ix in indices}

    def unpostprocessed(self, ext: str = "clean") -> list[int]:
        """Chunks without every postprocessed image (:data:`~faust_hpc.layout.CHUNK_POST_EXTS`)."""
        missing = []
        for config in self.configs:
            base = config.get_imagebase(ext=ext)
            if not all(os.path.exists(f"{base}.{e}") for e in CHUNK_POST_EXTS):
                missing.append(config.chunk.index)
        return missing

    def concat_extension(self, im_ext: str, ext: str = "clean", make_hanning: bool = False,
                         make_fits: bool = True) -> list[str]:
        """Step 3 for one final image extension (what a concat unit runs per
        extension): concatenate the chunks' ``.<im_ext>`` images, Hanning smooth
        ``.image.common`` if asked, and export the extension's final FITS if it
        has one (:func:`~faust_hpc.layout.final_fits_ext`: ``.image.pbcor.common``,
        ``.mask``, ``.pb``) with the archive header keywords. Extensions do not
        read each other, so they may run in any order or at the same time."""
        from faust_hpc.imaging.postprocess import export_fits, hanning_smooth_image

        imagebase = self.get_imagebase(ext=ext)
        with self.configs[0].stage_workdir("concat"):
            written = self.concat_cubes(ext=ext, im_exts=[im_ext])
            if make_hanning and im_ext == COMMON_EXT:
                written.append(hanning_smooth_image(f"{imagebase}.{COMMON_EXT}"))
            if make_fits and final_fits_ext(im_ext):
                written.append(export_fits(f"{imagebase}.{im_ext}", object_name=self.configs[0].dset.field))
        return written

    def concat_and_export(self, ext: str = "clean", make_hanning: bool = False,
                          make_fits: bool = True) -> list[str]:
        """Step 3: concatenate the chunks' images, optionally Hanning smooth,
        and export the final FITS (``.image.pbcor.common``, ``.mask``, ``.pb``):
        :meth:`concat_extension` for every extension of :attr:`DEFAULT_CONCAT_EXTS`."""
        written = []
        for im_ext in self.DEFAULT_CONCAT_EXTS:
            written += self.concat_extension(im_ext, ext=ext, make_hanning=make_hanning, make_fits=make_fits)
        return written

    def postprocess(self, ext: str = "clean", use_existing_except: Iterable[int] | None = None,
                    make_hanning: bool = False, make_fits: bool = True) -> dict[str, Any]:
        """Postprocess every chunk (or only ``use_existing_except``) to the
        common beam across chunks, concatenate, optionally Hanning smooth,
        and export the final FITS (``.image.pbcor.common``, ``.mask``, ``.pb``):
        :meth:`get_common_beam`, :meth:`postprocess_chunks`, :meth:`concat_and_export`."""
        beam = self.get_common_beam(ext=ext)
        if use_existing_except is None:
            indices = list(range(self.nchunks))
        else:
            indices = sorted({int(i) % self.nchunks for i in use_existing_except})
            # chunks never postprocessed cannot be "existing": do them too
            for index in self.unpostprocessed(ext=ext):
                if index not in indices:
                    log_post(f"-- chunk {index} has no postprocessed products: postprocessing it too")
                    indices.append(index)
            indices.sort()
        reports = self.postprocess_chunks(indices, beam, ext=ext)
        written = self.concat_and_export(ext=ext, make_hanning=make_hanning, make_fits=make_fits)
        return {"beam": beam, "chunks": reports, "outputs": written}
