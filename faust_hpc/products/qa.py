"""Quality-assurance channel maps with bounded memory.

As documented for the original pipeline (``CubeSet``, ``make_qa_plot``,
``make_qa_plots_from_image``, ``make_all_qa_plots``): for every channel whose
peak (inside the primary-beam limit) exceeds ``sigma`` x the full-cube noise
(6 by default), one panel of the restored image and one of the residual, with

- the colour scale from -3 to 10 x rms (image, ``afmhot``) or -5 to 5 x rms
  (residual, ``RdBu_r``), pixels below the 20 % PB level grey;
- filled contours at 10, 20, 40, 80 x rms on the image, and beyond +-5 x rms on
  the residual;
- the clean mask as a solid contour (cyan on the image, black on the residual),
  the PB half-power level as a dashed grey contour;
- ticks every 5 arcsec from the image centre (FAUST fields; any other field:
  a 1-2-5 spacing giving about :data:`TICKS_ACROSS` ticks across the image),
  and the channel index.

Files: ``<PLOT_DIR>/<base>_qa_plot_image.{png,pdf}`` and
``..._qa_plot_residual.{png,pdf}``. The original read the four cubes whole
(> 50 GB for Setup 3). Here a first pass streams the image (and PB) strip by
strip of rows to measure each plane's peak and noise and pick the channels;
the plotting pass reads the page's channels strip by strip and keeps only a
display-resolution copy per panel (a panel is ~1.3 inch wide, so ~400 pixels
are all a PNG at 300 dpi can show). Contours are drawn as plain path
collections (matplotlib's contour sets keep copies of their grids alive).
Large channel counts go onto several pages (one PDF, numbered PNGs), so
neither the figure nor the raster grows without bound.
"""
from __future__ import annotations

import gc
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from faust_hpc.catalog import imaging_defaults, is_faust_field
from faust_hpc.errors import UserInputError
from faust_hpc.layout import parse as parse_product
from faust_hpc.layout import qa_plot_name, qa_plot_prefix, qa_plot_stem
from faust_hpc.products import paths
from faust_hpc.products.cube import (PB_LIMIT, PlaneReader, check_same_grid, combine_plane_rms, plane_or_single,
                                     require, robust_rms, temp_sibling)
from faust_hpc.products.moments import find_images

log = logging.getLogger(__name__)

DEFAULT_PLOT_SIGMA = float(imaging_defaults().get("qa_plot_sigma", 6.0))
NCOLS = 5
SUBPLOT_INCH = 1.3            # five across on a letter page, as the original
MAX_ROWS_PER_PAGE = 10        # 50 channels per page
MAX_PANEL_PIX = 400           # display resolution of one panel
IMAGE_LEVELS = (10, 20, 40, 80)
RESIDUAL_LEVEL = 5
CROP = 0.12                   # crop this fraction of the width on each side (PB-blanked corners)
STRIP_BYTES = 16 * 2 ** 20    # one block of rows x channels read at a time
SCAN_SAMPLE_BUDGET = 8_000_000  # noise-sample values kept over all channels in the selection pass


def _pyplot():
    """pyplot on the Agg backend (units run on nodes without a display)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    return plt


@dataclass
class ChannelStats:
    """What the selection pass learns about one channel."""

    index: int
    peak: float
    rms: float


FAUST_TICK_ARCSEC = 5.0
TICKS_ACROSS = 8


def nice_spacing(approx: float) -> float:
    """The smallest 1, 2 or 5 x 10^n at or above ``approx`` (> 0)."""
    exp = np.floor(np.log10(approx))
    for mult in (1.0, 2.0, 5.0, 10.0):
        if mult * 10 ** exp >= approx * (1 - 1e-9):
            return float(mult * 10 ** exp)
    return float(10 ** (exp + 1))  # pragma: no cover


class CubeSet:
    """The four cubes of one image (``.image``, ``.residual``, ``.mask``,
    ``.pb``) and the channels worth plotting.

    Parameters
    ----------
    path : the restored image (``<stem>.image``); the others are found beside it.
    sigma : channels whose peak inside the PB limit exceeds ``sigma`` x rms are plotted.
    rms : full-cube noise in image units (None: estimated, the median over
        channels of each plane's MAD noise inside the PB limit).
    pb_limit : PB level below which pixels are ignored and shown grey.
    """

    def __init__(self, path: str | os.PathLike, sigma: float = DEFAULT_PLOT_SIGMA, rms: float | None = None,
                 pb_limit: float = PB_LIMIT) -> None:
        self.path = str(path).rstrip("/")
        self.sigma = float(sigma)
        self.pb_limit = pb_limit
        name = parse_product(self.path, require_image_ext=True)
        self.field = name.field
        self.stem = name.stem
        self.basename = name.base
        self.image_path = self.path
        self.residual_path = self.stem + ".residual"
        self.mask_path = self.stem + ".mask"
        self.pb_path = self.stem + ".pb"
        require([self.image_path, self.residual_path, self.mask_path, self.pb_path],
                f"QA plots of {self.basename}")
        with PlaneReader(self.image_path) as image:
            self.shape = tuple(image.shape)
            self.nx, self.ny, self.nchan = image.nx, image.ny, image.nchan
            self.pix_width = image.nx
            self.pix_scale = image.cell_arcsec
            for other in (self.residual_path, self.mask_path):
                with PlaneReader(other) as reader:
                    check_same_grid(image, reader)
            with PlaneReader(self.pb_path) as pb:
                check_same_grid(image, pb, single_plane_ok=True)
                self.stats = self._scan(image, pb)
        self.rms = float(rms) if rms is not None else combine_plane_rms([s.rms for s in self.stats])
        self.good_chan = self.get_good_channels()
        self.ngood = int(self.good_chan.size)
        log.info("%s: rms=%.4g, %d of %d channels above %.1f sigma", self.basename, self.rms,
                 self.ngood, self.nchan, self.sigma)

    def _scan(self, image: PlaneReader, pb: PlaneReader) -> list[ChannelStats]:
        """One streaming pass over the image, strip by strip of rows and a
        few storage tiles of channels at a time: the peak and a strided noise
        sample of every plane inside the PB limit."""
        nchan = image.nchan
        per_plane = int(np.clip(SCAN_SAMPLE_BUDGET // max(nchan, 1), 4096, 262_144))
        stride = max(1, int(np.ceil(image.nx * image.ny / per_plane)))
        cstep = max(image.tile_chan, 1) * max(1, 8 // max(image.tile_chan, 1))
        peaks = np.full(nchan, -np.inf)
        samples: list[list[np.ndarray]] = [[] for _ in range(nchan)]
        for y0, y1 in image.strips(STRIP_BYTES, cstep):
            single_pb = pb.block(0, 0, y0, y1)[0] if pb.nchan == 1 else None
            for c0 in range(0, nchan, cstep):
                c1 = min(c0 + cstep, nchan) - 1
                blk = image.block(c0, c1, y0, y1)
                pbb = pb.block(c0, c1, y0, y1) if single_pb is None else single_pb[None]
                with np.errstate(invalid="ignore"):
                    blk[~(pbb >= self.pb_limit) | ~np.isfinite(blk)] = np.nan
                for j in range(c1 - c0 + 1):
                    plane = blk[j]
                    if np.isfinite(plane).any():
                        peaks[c0 + j] = max(peaks[c0 + j], float(np.nanmax(plane)))
                    samples[c0 + j].append(plane.ravel()[::stride].copy())
                del blk, pbb
        stats = []
        for k in range(nchan):
            peak = float(peaks[k]) if np.isfinite(peaks[k]) else float("nan")
            stats.append(ChannelStats(k, peak, robust_rms(np.concatenate(samples[k]))))
            samples[k] = []
        return stats

    # -- documented API
    @staticmethod
    def get_chunk(imagename: str | os.PathLike) -> np.ndarray:
        """A whole image as ``(chan, y, x)`` float32 — for custom plots of
        *small* cubes only; the QA plots never call it (it is what made the
        original need > 50 GB)."""
        with PlaneReader(imagename) as reader:
            return np.stack([reader.plane(k) for k in range(reader.nchan)])

    def get_good_channels(self) -> np.ndarray:
        """Channel indices whose peak exceeds ``sigma`` x rms."""
        threshold = self.sigma * self.rms
        return np.asarray([s.index for s in self.stats if np.isfinite(s.peak) and s.peak > threshold], dtype=int)

    def get_plane_from_image(self, filen: str | os.PathLike, ix: int) -> np.ndarray:
        """One channel plane ``(y, x)`` of any of the cubes (float32)."""
        with PlaneReader(filen) as reader:
            return plane_or_single(reader, ix)

    def get_image_planes(self, ix: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Image, residual, mask and PB planes of channel ``ix``; image and
        residual are NaN outside the PB limit."""
        im = self.get_plane_from_image(self.image_path, ix)
        rs = self.get_plane_from_image(self.residual_path, ix)
        ma = np.nan_to_num(self.get_plane_from_image(self.mask_path, ix))
        pb = self.get_plane_from_image(self.pb_path, ix)
        outside = ~(pb >= self.pb_limit)
        im[outside] = np.nan
        rs[outside] = np.nan
        return im, rs, ma, pb

    def iter_planes(self) -> Iterator[tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], int]]:
        """``(planes, ix)`` for every good channel, one channel in memory at a time."""
        readers = [PlaneReader(p) for p in (self.image_path, self.residual_path, self.mask_path, self.pb_path)]
        try:
            image, residual, mask, pb = readers
            for ix in self.good_chan:
                pbp = plane_or_single(pb, int(ix))
                outside = ~(pbp >= self.pb_limit)
                im = image.plane(int(ix))
                rs = residual.plane(int(ix))
                im[outside] = np.nan
                rs[outside] = np.nan
                yield (im, rs, np.nan_to_num(mask.plane(int(ix))), pbp), int(ix)
        finally:
            for reader in readers:
                reader.close()

    @property
    def tick_arcsec(self) -> float:
        """FAUST's 5 arcsec; for any other field a 1-2-5 x 10^n spacing that puts about
        :data:`TICKS_ACROSS` ticks across the image (5 arcsec on 6-arcsec pixels is a comb)."""
        if self.field is None or is_faust_field(self.field):
            return FAUST_TICK_ARCSEC
        return nice_spacing(self.pix_scale * self.pix_width / TICKS_ACROSS)

    def calc_tick_loc(self, ang_tick: float = 5) -> np.ndarray:
        """Pixel positions of ticks every ``ang_tick`` arcsec about the centre."""
        ang_width = self.pix_scale * self.pix_width
        n_ticks = int(ang_width // ang_tick)
        n_ticks += 1 if n_ticks % 2 != 0 else 0
        pix_tick = ang_tick / self.pix_scale
        return np.arange(-n_ticks / 2.0, n_ticks / 2.0 + 1) * pix_tick + self.pix_width / 2


# ----------------------------------------------------------------------------- drawing
def savefig(filen: str, dpi: int = 300, plot_exts: tuple[str, ...] = ("png", "pdf"), close: bool = True) -> list[Path]:
    """Documented API: save the current matplotlib figure as ``<filen>.<ext>``
    for each extension (each under a temporary name renamed into place)."""
    plt = _pyplot()
    written = []
    for ext in plot_exts:
        final = Path(f"{filen}.{ext}")
        tmp = temp_sibling(final)
        plt.savefig(tmp, dpi=dpi, format=ext)
        os.replace(tmp, final)
        written.append(final)
    if close:
        plt.close("all")
    return written


def _crop_bounds(n: int) -> tuple[int, int]:
    lo = int(np.floor(CROP * n))
    hi = int(np.ceil((1.0 - CROP) * n))
    return lo, max(hi, lo + 1)


def display_copy(plane: np.ndarray, factor: int, lo_x: int, hi_x: int, lo_y: int, hi_y: int) -> np.ndarray:
    """Crop and block-average (NaN-aware) a plane down to display resolution."""
    sub = plane[lo_y:hi_y, lo_x:hi_x]
    if factor == 1:
        return np.array(sub, dtype=np.float32)
    ny, nx = sub.shape[0] // factor, sub.shape[1] // factor
    blocks = sub[: ny * factor, : nx * factor].reshape(ny, factor, nx, factor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(blocks, axis=(1, 3)).astype(np.float32)


def _panel_grid(cset: CubeSet) -> tuple[int, tuple[int, int, int, int], tuple[np.ndarray, np.ndarray]]:
    lo_x, hi_x = _crop_bounds(cset.nx)
    lo_y, hi_y = _crop_bounds(cset.ny)
    factor = max(1, int(np.ceil(max(hi_x - lo_x, hi_y - lo_y) / MAX_PANEL_PIX)))
    nx_d, ny_d = (hi_x - lo_x) // factor, (hi_y - lo_y) // factor
    # Display-pixel centres in original pixel coordinates, so that ticks,
    # contours and the image share one coordinate system.
    xc = lo_x + (np.arange(nx_d) + 0.5) * factor - 0.5
    yc = lo_y + (np.arange(ny_d) + 0.5) * factor - 0.5
    return factor, (lo_x, hi_x, lo_y, hi_y), (xc, yc)


def _style(kind: str, rms: float):
    plt = _pyplot()
    if kind == "image":
        cmap = plt.get_cmap("afmhot").with_extremes(bad=(0.5, 0.5, 0.5, 1.0))
        return cmap, "cyan", -3 * rms, 10 * rms
    if kind == "residual":
        cmap = plt.get_cmap("RdBu_r").with_extremes(bad=(0.5, 0.5, 0.5, 1.0))
        return cmap, "black", -RESIDUAL_LEVEL * rms, RESIDUAL_LEVEL * rms
    raise UserInputError(f'invalid QA plot kind "{kind}"; use "image" or "residual"')


class _Contours:
    """Contour lines and filled bands of one display plane, drawn as plain
    collections.

    ``ax.contour``/``contourf`` keep their contour generator, i.e. copies of
    the x, y and z grids, alive as long as the figure: ~9 MB for each
    400 x 400 panel, 450 MB for a 50-panel page. Computing the paths with
    ``contourpy`` (matplotlib's own contouring library) and adding only the
    paths keeps a page's memory at the size of its images."""

    def __init__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> None:
        import contourpy

        self.gen = contourpy.contour_generator(x, y, np.ma.masked_invalid(z),
                                               line_type=contourpy.LineType.SeparateCode,
                                               fill_type=contourpy.FillType.OuterCode)

    def lines(self, ax, level: float, **style) -> None:
        from matplotlib.collections import PathCollection
        from matplotlib.path import Path as MplPath

        points, codes = self.gen.lines(level)
        paths = [MplPath(p, c) for p, c in zip(points, codes) if len(p) > 1]
        if paths:
            ax.add_collection(PathCollection(paths, facecolors="none", **style), autolim=False)

    def band(self, ax, lower: float, upper: float, color) -> None:
        from matplotlib.collections import PathCollection
        from matplotlib.path import Path as MplPath

        points, codes = self.gen.filled(lower, upper)
        paths = [MplPath(p, c) for p, c in zip(points, codes)]
        if paths:
            ax.add_collection(PathCollection(paths, facecolors=[color], edgecolors="none", linewidths=0),
                              autolim=False)


def _draw_panel(ax, kind: str, data: np.ndarray, mask: np.ndarray, pbeam: np.ndarray, xc: np.ndarray,
                yc: np.ndarray, chan_ix: int, rms: float, tick_pos: np.ndarray, limits: tuple[float, ...]) -> None:
    from matplotlib import patheffects

    plt = _pyplot()
    cmap, mask_color, vmin, vmax = _style(kind, rms)
    dx = (xc[1] - xc[0]) if xc.size > 1 else 1.0
    dy = (yc[1] - yc[0]) if yc.size > 1 else 1.0
    extent = (xc[0] - dx / 2, xc[-1] + dx / 2, yc[0] - dy / 2, yc[-1] + dy / 2)
    ax.imshow(data, vmin=vmin, vmax=vmax, cmap=cmap, origin="lower", extent=extent, interpolation="nearest")
    finite = np.isfinite(data)
    if finite.any():
        dmax, dmin = float(np.nanmax(data)), float(np.nanmin(data))
        contours = _Contours(xc, yc, data)
        if kind == "image":
            levels = [lv * rms for lv in IMAGE_LEVELS] + [np.inf]
            colors = plt.get_cmap("rainbow")(np.linspace(0.0, 1.0, len(levels) - 1))
            for lo, hi, color in zip(levels[:-1], levels[1:], colors):
                if dmax > lo:
                    contours.band(ax, lo, hi, color)
        else:
            hi = RESIDUAL_LEVEL * rms
            if dmax > hi:
                contours.band(ax, hi, np.inf, "gold")
            if dmin < -hi:
                contours.band(ax, -np.inf, -hi, "navy")
        del contours
    if np.isfinite(pbeam).any() and np.nanmin(pbeam) < 0.5 < np.nanmax(pbeam):
        _Contours(xc, yc, pbeam).lines(ax, 0.5, edgecolors="0.5", linestyles="dashed", linewidths=0.4)
    if (mask > 0.5).any() and (mask < 0.5).any():
        _Contours(xc, yc, mask).lines(ax, 0.5, edgecolors=mask_color, linewidths=0.3)
    text = ax.annotate(str(chan_ix), (0.80, 0.90), xycoords="axes fraction", fontsize="xx-small")
    text.set_path_effects([patheffects.withStroke(linewidth=2, foreground="white")])
    ax.set_xticks(tick_pos)
    ax.set_yticks(tick_pos)
    ax.set_xticklabels([])
    ax.set_yticklabels([])
    ax.tick_params(direction="in", length=2, width=0.4, colors="white" if kind == "image" else "black")
    ax.set_xlim(limits[0], limits[1])
    ax.set_ylim(limits[2], limits[3])


def _page_display(cset: CubeSet, chans: list[int], kind: str, factor: int,
                  bounds: tuple[int, int, int, int]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Display-resolution (data, mask, PB) of the given channels, read strip
    by strip of rows: only one strip of each cube is ever in memory, and the
    storage-tile cache stays the size of a strip."""
    lo_x, hi_x, lo_y, hi_y = bounds
    ny_d, nx_d = (hi_y - lo_y) // factor, (hi_x - lo_x) // factor
    out = [(np.full((ny_d, nx_d), np.nan, np.float32), np.zeros((ny_d, nx_d), np.float32),
            np.full((ny_d, nx_d), np.nan, np.float32)) for _ in chans]
    data_path = cset.image_path if kind == "image" else cset.residual_path
    with PlaneReader(data_path) as data, PlaneReader(cset.mask_path) as mask, PlaneReader(cset.pb_path) as pb:
        height = factor * max(1, int(np.ceil(max(data.tile_y, 64) / factor)))
        for r0 in range(0, ny_d * factor, height):
            y0 = lo_y + r0
            y1 = min(y0 + height, lo_y + ny_d * factor) - 1
            d0, d1 = r0 // factor, (y1 - lo_y + 1) // factor
            rows = y1 - y0 + 1
            for i, ch in enumerate(chans):
                pbs = pb.block(0 if pb.nchan == 1 else ch, 0 if pb.nchan == 1 else ch, y0, y1)[0]
                plane = data.block(ch, ch, y0, y1)[0]
                with np.errstate(invalid="ignore"):
                    plane[~(pbs >= cset.pb_limit)] = np.nan
                ma = np.nan_to_num(mask.block(ch, ch, y0, y1)[0])
                out[i][0][d0:d1] = display_copy(plane, factor, lo_x, hi_x, 0, rows)
                out[i][1][d0:d1] = display_copy(ma, factor, lo_x, hi_x, 0, rows)
                out[i][2][d0:d1] = display_copy(pbs, factor, lo_x, hi_x, 0, rows)
    return out


def qa_plot_paths(imagename: str | os.PathLike, plot_dir: str | os.PathLike | None = None,
                  kinds: tuple[str, ...] = ("image", "residual")) -> dict[str, list[Path]]:
    """The first-page PNG and the PDF of each kind (what overwrite=False checks)."""
    text = str(imagename).rstrip("/")
    base = parse_product(text, require_image_ext=True).base
    root = _plot_root(text, plot_dir)
    return {kind: [root / qa_plot_name(base, kind, "png"), root / qa_plot_name(base, kind, "pdf")] for kind in kinds}


def _plot_root(path: str, plot_dir: str | os.PathLike | None) -> Path:
    if plot_dir is not None:
        return Path(plot_dir)
    prod = paths.product_dir_of_image(path)
    return paths.plot_dir(prod=prod) if prod is not None else paths.plot_dir()


def make_qa_plot(cset: CubeSet, kind: str = "image", outfilen: str = "qa_plot",
                 plot_dir: str | os.PathLike | None = None, dpi: int = 300) -> list[Path]:
    """Channel maps of one kind (``"image"`` or ``"residual"``) for the good
    channels of ``cset``; writes ``<outfilen>_<kind>.png`` (+ ``_p2``... for
    further pages) and one ``<outfilen>_<kind>.pdf`` with every page."""
    plt = _pyplot()
    from matplotlib.backends.backend_pdf import PdfPages

    _style(kind, 1.0)  # validate kind before any work
    root = _plot_root(cset.path, plot_dir)
    root.mkdir(parents=True, exist_ok=True)
    stem = f"{outfilen}_{kind}"
    pdf_final = root / f"{stem}.pdf"
    pdf_tmp = temp_sibling(pdf_final)
    factor, (lo_x, hi_x, lo_y, hi_y), (xc, yc) = _panel_grid(cset)
    limits = (lo_x - 0.5, hi_x - 0.5, lo_y - 0.5, hi_y - 0.5)
    tick_pos = cset.calc_tick_loc(ang_tick=cset.tick_arcsec)
    per_page = NCOLS * MAX_ROWS_PER_PAGE
    written: list[Path] = []
    renames: list[tuple[Path, Path]] = []
    npages = max(1, int(np.ceil(cset.ngood / per_page)))
    try:
        with PdfPages(pdf_tmp) as pdf:
            for page in range(npages):
                count = min(per_page, cset.ngood - page * per_page) if cset.ngood else 0
                nrows = max(1, int(np.ceil(count / NCOLS)))
                fig_h = nrows * SUBPLOT_INCH + 0.2
                fig, axes = plt.subplots(nrows=nrows, ncols=NCOLS, squeeze=False,
                                         figsize=(NCOLS * SUBPLOT_INCH, fig_h))
                fig.suptitle(f"{cset.basename} {kind}  rms={cset.rms:.3g}  (>{cset.sigma:g}$\\sigma$: "
                             f"{cset.ngood} chan){'' if npages == 1 else f'  page {page + 1}/{npages}'}",
                             fontsize=5, y=1 - 0.02 / fig_h)
                for ax in axes.flat[count:]:
                    ax.set_visible(False)
                if count == 0:
                    axes.flat[0].set_visible(True)
                    axes.flat[0].text(0.5, 0.5, f"no channel above {cset.sigma:g} sigma", ha="center",
                                      va="center", fontsize=4, transform=axes.flat[0].transAxes)
                    axes.flat[0].set_axis_off()
                chans = [int(c) for c in cset.good_chan[page * per_page: page * per_page + count]]
                shown = _page_display(cset, chans, kind, factor, (lo_x, hi_x, lo_y, hi_y))
                for ax, ix, (data, ma, pb) in zip(axes.flat[:count], chans, shown):
                    _draw_panel(ax, kind, data, ma, pb, xc, yc, ix, cset.rms, tick_pos, limits)
                del shown
                fig.tight_layout(pad=0.4, rect=(0, 0, 1, 1 - 0.16 / fig_h))
                png_final = root / (f"{stem}.png" if page == 0 else f"{stem}_p{page + 1}.png")
                png_tmp = temp_sibling(png_final)
                fig.savefig(png_tmp, dpi=dpi, format="png")
                pdf.savefig(fig)
                plt.close(fig)
                renames.append((png_tmp, png_final))
                gc.collect()
    except BaseException:
        for tmp, _ in renames:
            tmp.unlink(missing_ok=True)
        pdf_tmp.unlink(missing_ok=True)
        raise
    # Pages beyond this run's count from an earlier run would mislead: remove them.
    for stale in root.glob(f"{stem}_p*.png"):
        if stale not in {final for _, final in renames}:
            stale.unlink(missing_ok=True)
    for tmp, final in renames:
        os.replace(tmp, final)
        written.append(final)
    os.replace(pdf_tmp, pdf_final)
    written.append(pdf_final)
    log.info("QA %s plots of %s: %s", kind, cset.basename, ", ".join(p.name for p in written))
    return written


def make_qa_plots_from_image(path: str | os.PathLike, plot_sigma: float | None = None, overwrite: bool = True,
                             plot_dir: str | os.PathLike | None = None, rms: float | None = None) -> list[Path]:
    """Image and residual QA plots of one restored image (``<stem>.image``).

    ``overwrite=False`` skips an image whose plots all exist, without reading
    any cube. Returns the files written (or found)."""
    expected = qa_plot_paths(str(path), plot_dir)
    if not overwrite and all(p.exists() for files in expected.values() for p in files):
        log.info("QA plots exist, skipping: %s", os.path.basename(str(path)))
        return [p for files in expected.values() for p in files]
    cset = CubeSet(path, sigma=DEFAULT_PLOT_SIGMA if plot_sigma is None else plot_sigma, rms=rms)
    outfilen = qa_plot_stem(cset.basename)
    written = make_qa_plot(cset, kind="image", outfilen=outfilen, plot_dir=plot_dir)
    written += make_qa_plot(cset, kind="residual", outfilen=outfilen, plot_dir=plot_dir)
    del cset
    gc.collect()
    return written


def make_all_qa_plots(field: str, ext: str = "clean", ignore_chunks: bool = True, overwrite: bool = True,
                      image_dir: str | os.PathLike | None = None, plot_dir: str | os.PathLike | None = None,
                      plot_sigma: float | None = None) -> list[Path]:
    """QA plots for every ``<IMAG_DIR>/<field>/<field>_*_<ext>.image``."""
    images = find_images(field, ext, ignore_chunks, image_dir, ".image")
    if not images:
        raise UserInputError(f"no images {field}_*_{ext}.image under {paths.image_dir(image_dir) / field}; "
                             f"check the field name and ext")
    written: list[Path] = []
    for image in images:
        if ignore_chunks and parse_product(image).is_chunk:
            continue
        written += make_qa_plots_from_image(image, plot_sigma=plot_sigma, overwrite=overwrite, plot_dir=plot_dir)
    return written


def partial_outputs(imagename: str | os.PathLike, plot_dir: str | os.PathLike | None = None) -> list[str]:
    """Temporary plot files a crashed QA unit may have left (``.tmp-<pid>-<random>-<name>``)."""
    import glob as _glob

    root = _plot_root(str(imagename).rstrip("/"), plot_dir)
    if not root.is_dir():
        return []
    base = parse_product(imagename, require_image_ext=True).base
    return sorted(str(p) for p in root.glob(f".tmp-*-{_glob.escape(qa_plot_prefix(base))}*"))
