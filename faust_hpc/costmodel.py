"""Cost and peak-memory estimates of work units, in pure Python.

Costs are *estimated seconds of one worker on the reference machine* (the
2-core box the reference measurements in ``simulating_alma_data.md`` were taken
on); only their ratios matter to the scheduler, but keeping them in seconds
makes ``faust-hpc plan`` output readable. Memory is the estimated peak resident
set of the unit's child process in GB.

The model, and why
------------------
tclean's cost is driven by *channels x image pixels x major cycles*, plus a
visibility-gridding term that is negligible on small simulated data but not on
real FAUST execution blocks. One major cycle of one channel costs::

    cycle = K_PIX * npix + K_VIS[gridder] * rows

(``rows`` = visibility rows per channel summed over the EBs of the array kind;
counted rows when a caller has them, ``build_plan(rows_per_channel=...)``,
else the nominal FAUST counts in :data:`NOMINAL_EBS`.) Calibration on the
reference table (joint, mosaic, 480 px, 62 channels, ~15k rows): dirty 8 s ->
``cycle`` = 0.12-0.13 s per channel, nearly all pixel term; clean with 6 major
cycles 120 s -> 0.32 s per channel per cycle, i.e. auto-multithresh
(``K_AUTOMASK``) ~0.1 s + multiscale minor cycle (``K_MINOR`` at 3 scales,
growing as scales squared since every component updates every scale pair)
~0.09 s. The visibility constants cannot be calibrated on those tiny data
sets (they "hardly matter" there): they are set from mosaic/standard gridding
throughput (~1 / ~2.5 million rows per second per cycle), and with nominal
FAUST EBs (~1.1 million rows per channel) the visibility term is about as
large as the pixel term.

Why some chunks are heavier than others comes from *emission*, not from the
SPW's name:

* Channels that only hold noise stop after the first major cycle; channels
  with emission need several. tclean runs major cycles over the whole chunk
  cube, so a chunk pays for all its channels in every cycle as soon as *one*
  of its channels holds a line (partly: :data:`CHUNK_CYCLE_COUPLING`).
  The chance of that is ``1 - exp(-lambda)``
  with ``lambda`` = lines expected in the chunk's bandwidth (plus one line
  width): a line density :data:`LINE_DENSITY_PER_GHZ` times the bandwidth, plus
  the one target line every window is centred on (negligible for a 1.9 GHz
  window, dominant for a 59 MHz one).
* The number of major cycles grows with the peak signal-to-noise,
  ``1 + log(S/N / threshold) / log(1 / CYCLE_DROP)`` (each major cycle lowers
  the residual peak by about ``CYCLE_DROP``), and the minor-cycle work grows
  with the flux to remove (~ S/N). In a channel narrower than the line the
  peak stays and the noise drops as ``1/sqrt(width)``, so wider channels
  have a higher S/N: ``S/N = SNR_AT_LINE_WIDTH * sqrt(min(dv, w) / max(dv, w))``.

A wide (1.9 GHz, ~1 MHz channel) window therefore carries many lines per
chunk at a high S/N per channel: its chunks need more, and more expensive,
major cycles than the chunks of a narrow window tuned to one line — which is
what the FAUST documentation reports ("the continuum SPW is substantially
more computationally intensive to image").

Other units:

* prepare: a tiny-stamp tclean (``.sumwt``) over all channels (cell = res/3,
  ~45 px: the pixel term is nil, gridding the visibilities of every channel
  once dominates, see :data:`STAMP_VIS_FRACTION`).
* finishing an image, in three kinds of unit (so that it spreads over the
  workers instead of being one serial step per image):

  - beam (:func:`beam_estimate`): opens every chunk's ``.image`` for its
    common beam and per-plane beams, and checks the chosen beam against every
    plane (radio-beam): a term per chunk (``K_BEAM_CHUNK``) and per plane
    (``K_BEAM_CHAN``). Not measured separately (small next to the others).
  - post, one per group of chunks (:func:`post_estimate`): residual check,
    impbcor, two imsmooths to the common beam, PB-mask copies. The reference
    measured imsmooth at ~19 s per 480x480x62 cube, 0.31 s per plane; at
    480 px an FFT takes milliseconds, so that time is per-plane overhead
    (``K_POST_CHAN``) plus :data:`POST_PIXEL_PASSES` passes over the pixels
    (:data:`K_PIXEL_PASS` each), which only matter at FAUST's 1350-3600 px.
  - concat, one per group of final image extensions (:func:`concat_estimate`,
    :func:`concat_ext_work_s` per extension): imageconcat of one extension
    reads and writes every pixel once (:data:`CONCAT_PIXEL_PASSES`) and, for
    an extension with a final FITS, the export (plus a read for
    DATAMIN/DATAMAX) reads and writes it again (:data:`FITS_PIXEL_PASSES`);
    a small per-plane term per concatenation or export, and a term per chunk
    (``K_CONCAT_CHUNK`` over the nine extensions: every input image is opened
    and appended, and its mask copied -- thousands of chunks are not free).
    A 3500 px, 3840-channel continuum cube is ~190 GB per extension: its
    nine concatenations + three FITS are ~28,000 s of work, which as one
    unit bound the whole program; one extension is at most ~4,700 s.
    :func:`concat_groups` merges neighbouring extensions whose share is
    below a unit's start-up.
  - finalize (:func:`final_check_estimate`): start-up and a stat of the
    final products the concat units made.

  :func:`finalize_estimate` is beam, posts and concatenation together as one
  serial step (the documented ``ChunkedConfigSet.postprocess``). Whether a
  chunk gets a post unit of its own or shares one with its neighbours is
  :func:`post_chunks_per_unit`: a unit's start-up must not outweigh its work.
* moments / QA: one read pass over the final cube (``K_PRODUCTS`` per
  channel-pixel).

Every unit also pays :data:`UNIT_OVERHEAD_S`: a child process starting CASA,
opening the MSs and setting up tclean (10-20 s on the reference machine).

Learned from earlier runs
-------------------------
The constants above describe the reference machine and FAUST-sized data. A
run with history can correct them: :mod:`faust_hpc.costfit` fits, per unit
kind, ``seconds = offset + scale x (model cost - UNIT_OVERHEAD_S)`` from the
measured units of earlier runs and hands the result to the model as
:attr:`ImageModel.calibration`. Every estimate function passes its cost
through :meth:`ImageModel.calibrate`, so units made later (chunks expanded
after a prepare) are calibrated too; a kind without a fit keeps the model's
cost.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from faust_hpc import catalog, spectral
from faust_hpc.geometry import Geometry
from faust_hpc.layout import FINAL_PRODUCT_EXTS, final_fits_ext

# --- calibration constants (reference machine: 2 cores) ---------------------
UNIT_OVERHEAD_S = 15.0
"""Fixed cost of any unit: CASA start in a fresh child process, MS open,
tclean/imager setup (10-20 s seen on the reference machine). It is what makes
ever-smaller chunks pay off less and less, and what ``nchunks = "auto"``
trades against load balance."""

K_PIX = 4.3e-7          # s per pixel per channel per major cycle (FFTs, normalisation)
K_VIS = {"mosaic": 1.2e-6, "standard": 0.4e-6}  # s per visibility row per channel per cycle
K_AUTOMASK = 4.3e-7     # s per pixel per channel per major cycle (auto-multithresh)
K_MINOR = 3.9e-7        # s per pixel per channel per cycle, 3 scales, S/N = REFERENCE_SNR
REFERENCE_NSCALES = 3    # the reference runs used scales [0, 5, 15]
STAMP_VIS_FRACTION = 0.5  # the stamp grids (no degridding): half a major cycle's visibility work,
                          # with the standard gridder's cost (a 45-px stamp needs no mosaic
                          # convolution functions: the primary beam is wider than the stamp)
K_SEEDMASK = 1.0e-7     # s per pixel per channel (seed-mask image analysis)
K_PIXEL_PASS = 2.5e-8   # s per pixel per channel for one read or one write pass over a cube: imageconcat
                        # measured 4.8-5.8e-8 for read + write of one 1024-px cube (2-core reference)
K_BEAM_CHUNK = 0.05     # s per chunk: open its .image, ia.commonbeam(), ia.restoringbeam() (estimated)
K_BEAM_CHAN = 1.0e-3    # s per plane: its beam checked against the chosen common beam (radio-beam, estimated)
K_POST_CHAN = 0.18      # s per channel: per-plane overhead of imsmooth x2 / impbcor / residual stats / PB masks
                        # (with the pixel passes: the reference's ~21 s finalize of a 480 px x 62 channel cube)
POST_PIXEL_PASSES = 8   # residual stats 1, impbcor 3 (image, pb -> pbcor), two imsmooths 2 each (counted)
K_CONCAT_OP_CHAN = 0.0025  # s per channel: per-plane overhead of one concatenation or one FITS export
                           # (0.03 s per channel for the 9 concatenations and 3 exports of an image)
CONCAT_PIXEL_PASSES = 2   # one extension's concatenation: read + write
FITS_PIXEL_PASSES = 2     # one FITS export (measured 4.4e-8 s per pixel-channel: exportfits + the
                          # DATAMIN/DATAMAX read)
K_CONCAT_CHUNK = 0.15   # s per chunk: 9 input images opened, appended and their masks copied
                        # (imageconcat measured ~0.015 s per input image at 128 px)
K_STAT_OUTPUT = 0.01    # s per final product the finalize unit checks (a stat; more on a busy parallel filesystem)
K_PRODUCTS = 2.0e-8     # s per pixel per channel: one read pass over the final cube

# --- emission model -----------------------------------------------------------
LINE_DENSITY_PER_GHZ = 60.0
"""Lines above the detection limit per GHz of sky frequency in a FAUST target
(young, line-rich protostars observed deep): the one model constant that says
how much of a window is emission."""
LINE_WIDTH_KMS = 3.0
"""Typical line width (FWHM plus wings) of the envelope/outflow emission."""
SNR_AT_LINE_WIDTH = 120.0
"""Peak S/N of a typical line in a channel as wide as the line (~30 in the
narrow windows' 0.17 km/s channels, as for CS 5-4 in CB68)."""
REFERENCE_SNR = 30.0
"""S/N at which K_MINOR was calibrated (the reference simulation's disk)."""
CHUNK_CYCLE_COUPLING = 1.0
"""How much the noise-only channels of a chunk ride along in the major cycles
its emission channels need: 1 = cube imaging as the FAUST documentation
describes it (the default pipeline's chunking "proceeds quickly for chunks that
are mostly noise and reduces the gridding overhead on chunks with emission");
0 = fully independent per-channel iteration control."""
CYCLE_DROP = 0.5
"""Factor by which one major cycle lowers the residual peak (cyclefactor x PSF sidelobe)."""

# --- memory -------------------------------------------------------------------
BASE_MEM_GB = 0.7       # CASA child process with casatools loaded
PLANE_BYTES = 4         # float32
WORK_PLANES = 10        # per channel in flight: residual, model, psf, pb, mask, weight, ... + FFT buffers
CUBE_PLANES = 1.5       # cube planes tclean keeps cached over the chunk
CHUNK_OUTPUT_CUBES = 8  # cubes a chunk leaves: dirty, nomask, image, residual, model, psf, pb, mask
POST_OUTPUT_CUBES = 3   # per chunk: image.pbcor, image.common, image.pbcor.common

# --- nominal visibilities (when the MSs are not available) --------------------
NOMINAL_EBS = {
    # setup -> array -> (execution blocks, antennas, on-source seconds per EB, integration s)
    1: {"12m": (3, 43, 2400.0, 6.05), "7m": (6, 10, 2400.0, 10.1)},
    2: {"12m": (3, 43, 2400.0, 6.05), "7m": (6, 10, 2400.0, 10.1)},
    3: {"12m": (3, 43, 2400.0, 6.05)},
}
"""Nominal FAUST execution blocks per Setup and array (a model constant: the
real counts differ per field; the MSs, when present, can replace them)."""


NOMINAL_OTHER_EBS = (1, 27, 3600.0, 10.0)
"""A run file's own data before they are read (one hour of a 27-antenna array, 10 s
integrations): only ratios of costs matter to the scheduler."""


def nominal_rows_per_channel(setup: int, array: str) -> float:
    """Visibility rows per channel of all EBs of an array kind (joint/all = 12m + 7m);
    a run file's window (no FAUST Setup) gets :data:`NOMINAL_OTHER_EBS`."""
    if setup not in NOMINAL_EBS:
        nebs, nant, seconds, tint = NOMINAL_OTHER_EBS
        return nebs * nant * (nant - 1) / 2 * seconds / tint
    kinds = ("12m", "7m") if array in ("joint", "all") else (array,)
    rows = 0.0
    for kind in kinds:
        if kind in NOMINAL_EBS[setup]:
            nebs, nant, seconds, tint = NOMINAL_EBS[setup][kind]
            rows += nebs * nant * (nant - 1) / 2 * seconds / tint
    return rows


@dataclass(frozen=True)
class Estimate:
    """Cost (reference seconds, overhead included), peak memory (GB) and the
    disk space its outputs take (GB; the launcher's free-space check)."""

    cost: float
    mem_gb: float
    out_gb: float = 0.0


PRODUCTS_KIND = "products"
ESTIMATE_KIND = {"moments": PRODUCTS_KIND, "qa": PRODUCTS_KIND}
"""Unit kinds that share one estimate function, and so one calibration
(:func:`products_estimate`); every other kind is calibrated under its own name."""


def estimate_kind(unit_kind: str) -> str:
    """The name a unit kind's cost is calibrated (and fitted) under."""
    return ESTIMATE_KIND.get(unit_kind, unit_kind)


Calibration = tuple[tuple[str, float, float], ...]
"""``((kind, offset_s, scale), ...)`` sorted by kind: hashable, so a calibrated
:class:`ImageModel` still keys :func:`chunk_estimate`'s cache."""


@dataclass(frozen=True)
class ImageModel:
    """What the cost model needs to know about one image (an ImageKey), and the
    per-kind correction learned from earlier runs (:mod:`faust_hpc.costfit`)."""

    setup: int
    nchan: int                 # channels imaged (full window or velocity window)
    npix: int                  # imsize^2
    rows: float                # visibility rows per channel
    gridder: str
    chan_spacing_hz: float     # bandwidth / native channels
    chan_width_hz: float       # effective channel width (noise bandwidth)
    bandwidth_hz: float        # full window bandwidth
    restfreq_hz: float
    nscales: int
    clean_sigma: float = 3.0
    nomask_sigma: float = 4.5
    calibration: Calibration = ()
    nominal: "ImageModel | None" = None
    """The run file's model before :mod:`faust_hpc.costfit` put measured sizes
    and a calibration in (None: this is it). What must not move with history --
    the post grouping, :func:`post_chunks_per_unit` -- reads it."""

    @property
    def as_planned(self) -> "ImageModel":
        """The model from the run file alone (see :attr:`nominal`)."""
        return self.nominal or self

    def calibrate(self, kind: str, seconds: float) -> float:
        """The model's cost of a unit of ``kind`` (overhead included) as the
        calibration predicts it: ``offset + scale x (seconds - UNIT_OVERHEAD_S)``;
        ``seconds`` unchanged for a kind without a fit."""
        for name, offset, scale in self.calibration:
            if name == kind:
                return offset + scale * max(seconds - UNIT_OVERHEAD_S, 0.0)
        return seconds

    # --- emission ------------------------------------------------------------
    @property
    def line_width_hz(self) -> float:
        return spectral.velocity_width_hz(LINE_WIDTH_KMS, self.restfreq_hz)

    @property
    def lines_per_hz(self) -> float:
        """Line density, plus the one target line every window is centred on."""
        return LINE_DENSITY_PER_GHZ / 1e9 + 1.0 / self.bandwidth_hz

    def emission_probability(self, nchan: int) -> float:
        """Chance that a run of ``nchan`` channels holds at least one line."""
        lam = self.lines_per_hz * (nchan * self.chan_spacing_hz + self.line_width_hz)
        return 1.0 - math.exp(-lam)

    def chunk_emission_weight(self, nchan: int) -> float:
        """Share of a chunk's channels that pay for extra major cycles: a blend
        (:data:`CHUNK_CYCLE_COUPLING`) of "every channel, once any channel of the
        chunk has a line" and "only the channels with a line"."""
        coupled = self.emission_probability(nchan)
        alone = self.emission_probability(1)
        return CHUNK_CYCLE_COUPLING * coupled + (1.0 - CHUNK_CYCLE_COUPLING) * alone

    @property
    def snr(self) -> float:
        """Peak S/N of a line in one channel (highest when channel ~ line width)."""
        dv, w = self.chan_width_hz, self.line_width_hz
        return SNR_AT_LINE_WIDTH * math.sqrt(min(dv, w) / max(dv, w))

    def major_cycles(self, sigma: float) -> float:
        """Major cycles for a chunk with emission cleaned down to ``sigma``."""
        ratio = max(self.snr / sigma, 1.0)
        return 1.0 + math.log(ratio) / math.log(1.0 / CYCLE_DROP)

    # --- per-channel building blocks --------------------------------------------
    @property
    def cycle_s(self) -> float:
        """One major cycle of one channel: gridding/degridding + FFTs."""
        return K_PIX * self.npix + K_VIS[self.gridder] * self.rows

    def minor_s(self) -> float:
        """Multiscale minor cycle of one channel with emission, per major cycle."""
        scales = (self.nscales / REFERENCE_NSCALES) ** 2   # every component updates all scale pairs
        return K_MINOR * self.npix * scales * (self.snr / REFERENCE_SNR)


def _plane_gb(npix: int) -> float:
    return npix * PLANE_BYTES / 1e9


def channel_memory_gb(npix: int, nscales: int = REFERENCE_NSCALES) -> float:
    """Peak memory (GB) of a tclean child imaging one channel of ``npix`` pixels
    (the visibilities aside): the least any unit of that image needs."""
    return BASE_MEM_GB + _plane_gb(npix) * (WORK_PLANES + 2 * nscales + CUBE_PLANES)


@lru_cache(maxsize=65536)
def chunk_estimate(m: ImageModel, nchan: int) -> Estimate:
    """dirty -> nomask clean (to nomask_sigma, no mask) -> seed mask -> clean
    (auto-multithresh + seed, to clean_sigma) of ``nchan`` channels."""
    p = m.chunk_emission_weight(nchan)
    dirty = m.cycle_s
    nomask_cycles = 1.0 + p * (m.major_cycles(m.nomask_sigma) - 1.0)
    clean_cycles = 1.0 + p * (m.major_cycles(m.clean_sigma) - 1.0)
    # minor-cycle work only where there is emission; automask runs every cycle
    nomask = nomask_cycles * (m.cycle_s + p * m.minor_s())
    seed = K_SEEDMASK * m.npix
    clean = clean_cycles * (m.cycle_s + K_AUTOMASK * m.npix + p * m.minor_s())
    cost = m.calibrate("chunk", UNIT_OVERHEAD_S + nchan * (dirty + nomask + seed + clean))
    mem = BASE_MEM_GB + _plane_gb(m.npix) * (WORK_PLANES + 2 * m.nscales + CUBE_PLANES * nchan) \
        + m.rows * 12 * 2 / 1e9  # one channel of visibilities (data + weights, 2 pols) in flight
    return Estimate(cost, mem, _plane_gb(m.npix) * nchan * CHUNK_OUTPUT_CUBES)


def prepare_estimate(m: ImageModel) -> Estimate:
    """Tiny-stamp tclean over all channels: the visibility term only."""
    cost = m.calibrate("prepare", UNIT_OVERHEAD_S + m.nchan * STAMP_VIS_FRACTION * K_VIS["standard"] * m.rows)
    return Estimate(cost, BASE_MEM_GB + m.rows * 12 * 2 / 1e9)


FINISH_MEM_PLANES = 8   # planes a postprocess/concat child holds (input, output, kernel, FFT buffers)


def _finish_mem_gb(m: ImageModel) -> float:
    return BASE_MEM_GB + _plane_gb(m.npix) * FINISH_MEM_PLANES


def beam_work_s(m: ImageModel, nchunks: int) -> float:
    """Common beam across ``nchunks`` chunks, start-up aside."""
    return nchunks * K_BEAM_CHUNK + m.nchan * K_BEAM_CHAN


def post_work_s(m: ImageModel, nchan: float) -> float:
    """Postprocessing ``nchan`` channels of chunks, start-up aside."""
    return nchan * (K_POST_CHAN + POST_PIXEL_PASSES * K_PIXEL_PASS * m.npix)


def concat_ext_work_s(m: ImageModel, nchunks: int, im_ext: str) -> float:
    """Concatenating ``nchunks`` chunk images of final extension ``im_ext`` and,
    if it has a final FITS, exporting it; start-up aside."""
    exports = 1 if final_fits_ext(im_ext) else 0
    passes = CONCAT_PIXEL_PASSES + exports * FITS_PIXEL_PASSES
    return m.nchan * ((1 + exports) * K_CONCAT_OP_CHAN + passes * K_PIXEL_PASS * m.npix) + \
        nchunks * K_CONCAT_CHUNK / len(FINAL_PRODUCT_EXTS)


def concat_work_s(m: ImageModel, nchunks: int, im_exts: tuple[str, ...] = FINAL_PRODUCT_EXTS) -> float:
    """Concatenating ``nchunks`` chunks of the extensions ``im_exts`` (default:
    all, the full cube) and exporting their FITS, start-up aside."""
    return sum(concat_ext_work_s(m, nchunks, e) for e in im_exts)


def _output_cubes(im_exts: tuple[str, ...]) -> int:
    """Cubes a concatenation of ``im_exts`` writes: each extension and its FITS, if any."""
    return sum(1 + (1 if final_fits_ext(e) else 0) for e in im_exts)


def beam_estimate(m: ImageModel, nchunks: int) -> Estimate:
    """The beam unit: reads the beams of all ``nchunks`` chunk images."""
    return Estimate(m.calibrate("beam", UNIT_OVERHEAD_S + beam_work_s(m, nchunks)), BASE_MEM_GB)


def post_estimate(m: ImageModel, nchan: int) -> Estimate:
    """One post unit postprocessing chunks that hold ``nchan`` channels."""
    return Estimate(m.calibrate("post", UNIT_OVERHEAD_S + post_work_s(m, nchan)), _finish_mem_gb(m),
                    _plane_gb(m.npix) * nchan * POST_OUTPUT_CUBES)


def concat_estimate(m: ImageModel, nchunks: int, im_exts: tuple[str, ...] = FINAL_PRODUCT_EXTS) -> Estimate:
    """A concat unit: concatenation of ``nchunks`` chunks of the extensions
    ``im_exts`` and their FITS export."""
    return Estimate(m.calibrate("concat", UNIT_OVERHEAD_S + concat_work_s(m, nchunks, im_exts)), _finish_mem_gb(m),
                    _plane_gb(m.npix) * m.nchan * _output_cubes(im_exts))


def final_check_estimate(m: ImageModel) -> Estimate:
    """The finalize unit: start-up and a stat of every final product (the concat units made them)."""
    nfinal = _output_cubes(FINAL_PRODUCT_EXTS)
    return Estimate(m.calibrate("finalize", UNIT_OVERHEAD_S + nfinal * K_STAT_OUTPUT), BASE_MEM_GB)


def concat_groups(m: ImageModel, nchunks: int) -> list[tuple[int, int]]:
    """``(first extension, extension count)`` of each concat unit, in
    :data:`~faust_hpc.layout.FINAL_PRODUCT_EXTS` order: neighbouring extensions
    share a unit until its work outweighs a unit's start-up
    (:data:`UNIT_OVERHEAD_S`); a short tail joins the group before it. Like
    :func:`post_chunks_per_unit` it reads only the run file's model and the
    chunk count, so the concat ids of an image are the same on any rank count,
    on resume and after more history."""
    m = m.as_planned
    groups: list[list[int]] = []
    work = 0.0
    for index, im_ext in enumerate(FINAL_PRODUCT_EXTS):
        if not groups or work >= UNIT_OVERHEAD_S:
            groups.append([index, 0])
            work = 0.0
        groups[-1][1] += 1
        work += concat_ext_work_s(m, max(1, int(nchunks)), im_ext)
    if len(groups) > 1 and work < UNIT_OVERHEAD_S:
        groups[-2][1] += groups.pop()[1]
    return [(first, count) for first, count in groups]


def finalize_estimate(m: ImageModel, nchunks: int = 1) -> Estimate:
    """Beam, every chunk's postprocess and the concatenation as one serial step
    (``ChunkedConfigSet.postprocess``): what the three kinds of unit cost together,
    less the start-ups they do not share (the model's, never calibrated: a
    learned correction is per unit kind)."""
    cost = UNIT_OVERHEAD_S + beam_work_s(m, nchunks) + post_work_s(m, m.nchan) + concat_work_s(m, nchunks)
    return Estimate(cost, _finish_mem_gb(m),
                    _plane_gb(m.npix) * m.nchan * (_output_cubes(FINAL_PRODUCT_EXTS) + POST_OUTPUT_CUBES))


def post_chunks_per_unit(m: ImageModel, nchunks: int) -> int:
    """How many neighbouring chunks share one post unit: the fewest whose
    postprocessing outweighs a unit's start-up (:data:`UNIT_OVERHEAD_S`; when
    start-up gets cheaper, fewer chunks are merged). The one merge rule: it
    reads only the run file's model (:attr:`ImageModel.as_planned`) and the
    chunk count, never learned sizes or constants, so the post units of an
    image are the same on any rank count, on resume, and after more history
    (a resume that regrouped would redo posts whose chunks are gone)."""
    m = m.as_planned
    nchunks = max(1, int(nchunks))
    share = post_work_s(m, m.nchan / nchunks)
    if share <= 0:
        return nchunks
    return max(1, min(nchunks, math.ceil(UNIT_OVERHEAD_S / share - 1e-9)))


def products_estimate(m: ImageModel) -> Estimate:
    """moments or QA: one pass over the final cube."""
    cost = m.calibrate(PRODUCTS_KIND, UNIT_OVERHEAD_S + K_PRODUCTS * m.npix * m.nchan)
    return Estimate(cost, BASE_MEM_GB + _plane_gb(m.npix) * 6)


def chunk_sizes(nchan: int, nchunks: int) -> list[int]:
    """Channels per chunk, as the imaging splits them (:func:`spectral.split_channels`:
    the remainder on the last chunks); ``nchunks`` is clamped to 1..``nchan``."""
    return [size for _, size in spectral.split_channels(nchan, max(1, min(nchunks, nchan)))]


def image_model(setup: int, spw: catalog.Spw, geometry: Geometry, array: str, *, nchan: int,
                rows: float | None = None, nscales: int | None = None,
                clean_sigma: float = 3.0, nomask_sigma: float = 4.5) -> ImageModel:
    """The model of one image; ``rows`` defaults to the nominal FAUST count."""
    if nscales is None:
        nscales = len(catalog.imaging_defaults()["scales_pix"])
    return ImageModel(
        setup=setup, nchan=nchan, npix=geometry.npix,
        rows=nominal_rows_per_channel(setup, array) if rows is None else rows,
        gridder=geometry.gridder, chan_spacing_hz=spw.tot_bw_hz / spw.nchan,
        chan_width_hz=spw.chan_width_hz, bandwidth_hz=spw.tot_bw_hz,
        restfreq_hz=spw.restfreq_hz, nscales=nscales,
        clean_sigma=clean_sigma, nomask_sigma=nomask_sigma)
