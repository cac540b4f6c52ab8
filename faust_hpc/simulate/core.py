"""``simulate()``: FAUST-like 12m + 7m measurement sets with a known sky.

Order of work (each step in its own module):
1. windows (:mod:`.windows`) and unit-scale sky cubes (:mod:`.skymodel`),
   written as CASA model images (:mod:`.casa_images`);
2. one execution block per array (:mod:`.observe`): antennas, windows,
   scans, prediction of the model;
3. the noise (:mod:`.noise`) follows from the visibilities actually
   observed; the sky is scaled to a stated signal-to-noise ratio, the noise
   added and the metadata fixed (:mod:`.msfix`);
4. truth FITS + ``truth.json`` (:mod:`.truth`) and ``demo.toml``
   (:mod:`.demo_runfile`).
Everything is built under ``DIR/.simulate-work-<pid>`` and renamed into place;
``truth.json`` is written last, so its presence means the data set is complete.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from faust_hpc import casa_env, spectral
from faust_hpc.catalog import get_setup, get_spw, get_target, spws_for_setup
from faust_hpc.errors import UserInputError
from faust_hpc.layout import RunLayout
from faust_hpc.simulate import casa_images, msfix, observe, skymodel
from faust_hpc.simulate.demo_runfile import write_demo_runfile
from faust_hpc.simulate.noise import natural_image_rms, visibility_sigma_jy
from faust_hpc.simulate.positions import field_position
from faust_hpc.simulate.sizes import DEFAULT_SEED, SimSize, get_size
from faust_hpc.simulate.truth import integrated_flux_jy_kms, read_truth_json, write_truth_json
from faust_hpc.simulate.windows import SimWindow, plan_windows

log = logging.getLogger(__name__)

DEFAULT_LINE = {1: "219.560GHz_C18O", 2: "244.936GHz_CS", 3: "93.176GHz_N2Hp"}
OBSERVING_DATES = {"12m": "2023/05/20/00:00:00", "7m": "2023/04/02/00:00:00"}
CONFIG_FILES = {"12m": "alma.cycle7.5.cfg", "7m": "aca.cycle7.cfg"}
DISH_M = {"12m": 12.0, "7m": 7.0}
MS_SUFFIX = "_target_lines_self_calibrated_continuum_subtracted_aligned.ms"


@dataclass
class SimResult:
    """Where a simulated data set lives (absolute paths) and what it holds."""

    outdir: Path
    field: str
    setup: int
    size: str
    spw_labels: tuple[str, ...]
    data_dir: Path                      # the run file's data_dir (DIR/data)
    ms_dir: Path                        # DIR/data/<FIELD>-Setup<N>
    ms_paths: dict[str, Path]           # {"12m": ..., "7m": ...}
    truth_dir: Path
    truth_json: Path
    model_fits: dict[str, Path]         # {label: FITS of the true cube}
    runfile: Path                       # DIR/demo.toml
    truth: dict[str, Any] = dc_field(repr=False, default_factory=dict)

    @property
    def product_dir(self) -> Path:
        return self.outdir / "products"

    @classmethod
    def load(cls, outdir: str | os.PathLike) -> "SimResult":
        outdir = Path(outdir).resolve()
        truth_json = outdir / "truth" / "truth.json"
        if not truth_json.is_file():
            raise UserInputError(f"{outdir} holds no complete simulation (no truth/truth.json); "
                                 f"run `faust-hpc simulate {outdir}`")
        truth = read_truth_json(truth_json)
        return cls(outdir=outdir, field=truth["field"], setup=int(truth["setup"]), size=truth["size"],
                   spw_labels=tuple(truth["spws"]), data_dir=outdir / "data",
                   ms_dir=outdir / truth["ms_dir"],
                   ms_paths={k: outdir / v["ms"] for k, v in truth["arrays"].items()},
                   truth_dir=outdir / "truth", truth_json=truth_json,
                   model_fits={k: outdir / v["model_fits"] for k, v in truth["spws"].items()},
                   runfile=outdir / "demo.toml", truth=truth)


def resolve_spws(setup: int, spws: Sequence[str] | None) -> list[str]:
    """Validated SPW labels in catalog order (default: the Setup's main line + continuum)."""
    in_setup = [s.label for s in spws_for_setup(setup)]
    if not spws:
        cont = [label for label in in_setup if get_spw(label).is_continuum]
        return [DEFAULT_LINE[setup]] + cont
    for label in spws:
        if label not in in_setup:
            other = get_spw(label).setup  # raises CatalogError (with a suggestion) for an unknown label
            raise UserInputError(f'SPW "{label}" belongs to Setup {other}, not Setup {setup}; '
                                 f'use --setup {other} or one of: {", ".join(in_setup)}')
    return [label for label in in_setup if label in set(spws)]


def ms_name(field: str, setup: int, kind: str, seed: int) -> str:
    """A realistic, deterministic ALMA EB uid for one block."""
    digest = hashlib.sha1(f"{field}/{setup}/{kind}/{seed}".encode()).hexdigest()
    return f"uid___A002_X{digest[:6]}_X{digest[6:10]}{MS_SUFFIX}"


def is_complete(outdir: str | os.PathLike, field: str, setup: int, spws: Sequence[str] | None,
                size: str) -> bool:
    """True when ``outdir`` already holds this exact simulation."""
    try:
        result = SimResult.load(outdir)
    except (UserInputError, ValueError, KeyError):
        return False
    return (result.field == field and result.setup == setup and result.size == size
            and list(result.spw_labels) == resolve_spws(setup, spws)
            and all(p.is_dir() for p in result.ms_paths.values())
            and all(p.is_file() for p in result.model_fits.values()) and result.runfile.is_file())


def _array_plans(setup: int, size: SimSize) -> list[observe.ArrayPlan]:
    plans = []
    for kind in get_setup(setup).arrays:
        plans.append(observe.ArrayPlan(
            kind=kind, config_file=CONFIG_FILES[kind], predict_telescope="ALMA" if kind == "12m" else "ACA",
            date=OBSERVING_DATES[kind], n_antennas=size.nant_12m if kind == "12m" else size.nant_7m,
            time_s=size.time_12m_s if kind == "12m" else size.time_7m_s,
            integration_s=size.integration_s, nscans=size.nscans))
    return plans


def _unit_cube(window: SimWindow, grid: skymodel.ModelGrid, res: float) -> tuple[np.ndarray, dict]:
    if window.is_continuum:
        forest = skymodel.ForestModel()
        lines, extended = skymodel.forest_components(grid, window.freqs_lsrk_hz, window.rest_hz, forest, res)
        cube = lines + extended
        share = float(lines.sum() / cube.sum())
        described = forest.as_dict()
        centres = skymodel.forest_line_velocities(window.freqs_lsrk_hz, window.rest_hz, forest)
        for line, v0 in zip(described["lines"], centres):
            line["velocity_kms"] = v0
            line["freq_lsrk_hz"] = spectral.velocity_to_freq_hz(v0, window.rest_hz)
        return cube, {"forest": described, "flux_fraction": {"line_forest": share, "extended": 1.0 - share}}
    band = window.nchan * window.chan_width_kms
    disk = skymodel.disk_for_band(band)
    cube = skymodel.disk_cube(grid, window.velocities_kms, window.vsys_kms, disk)
    return cube, {"rotation": disk.as_dict()}


class _CasaLog:
    """Send CASA's log into the simulation directory for the duration."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.previous: Path | None = None

    def __enter__(self) -> Path:
        self.previous = casa_env.log_path()
        casa_env.configure(casa_env.data_dir(), log_path=self.path)
        return self.path

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None and self.previous != self.path:
            casa_env.set_log_file(self.previous)


def simulate(outdir: str | os.PathLike, field: str = "CB68", setup: int = 2,
             spws: Sequence[str] | None = None, size: str = "small", seed: int = DEFAULT_SEED) -> SimResult:
    """Write ``outdir/data``, ``outdir/truth`` and ``outdir/demo.toml``
    (see the module docstring); returns the :class:`SimResult`."""
    target = get_target(field)
    get_setup(setup)
    labels = resolve_spws(setup, spws)
    preset = get_size(size)
    casa_env.resolve_data_dir(casa_env.data_dir())   # a bad CASA data dir fails before anything is written
    outdir = Path(outdir).resolve()
    if outdir.exists() and not outdir.is_dir():
        raise UserInputError(f"{outdir} exists and is not a directory; give a directory for the simulation")
    outdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with _CasaLog(RunLayout(outdir).logs_dir / f"simulate-{os.getpid()}.casa.log"):
        result = _simulate(outdir, target.name, target.res, target.vsys, setup, labels, preset, seed)
    log.info("simulated %s Setup %d (%s) in %s in %.1f s", field, setup, size, outdir, time.time() - started)
    return result


@dataclass(frozen=True)
class _Job:
    """The fixed inputs of one simulation."""

    outdir: Path
    field: str
    res: float
    vsys: float
    setup: int
    size: SimSize
    seed: int
    ra: str
    dec: str
    windows: tuple[SimWindow, ...]
    grid: skymodel.ModelGrid
    work: Path

    @property
    def ms_dir(self) -> Path:
        return self.outdir / "data" / f"{self.field}-Setup{self.setup}"


@dataclass
class _NoiseBudget:
    """Noise of one window per array, and the scale that puts the sky at the stated SNR."""

    sigma_vis_jy: dict[str, float]
    n_vis: dict[str, int]
    rms: dict[str, float]
    unit_peak: float
    scale: float

    def as_dict(self) -> dict[str, Any]:
        return {"sigma_vis_jy": self.sigma_vis_jy, "n_vis_per_channel": self.n_vis,
                "image_rms_natural_jy_per_beam": self.rms,
                "note": "sigma per real/imag part of one correlation (MS SIGMA); image rms = "
                        "1/sqrt(sum of weights) of one natural-weighted channel at the phase centre. "
                        "tclean's linear interpolation onto its LSRK output grid averages neighbouring "
                        "channels: measured 0.9x (grid aligned with chan_freqs_lsrk_hz) down to ~0.7x "
                        "(grid offset by half a channel); ~1.2x in the first and last channel (partial "
                        "coverage); Briggs 0.5 adds a few per cent"}


def _simulate(outdir: Path, field: str, res: float, vsys: float, setup: int, labels: list[str],
              size: SimSize, seed: int) -> SimResult:
    ra, dec = field_position(field)
    job = _Job(outdir=outdir, field=field, res=res, vsys=vsys, setup=setup, size=size, seed=seed, ra=ra, dec=dec,
               windows=tuple(plan_windows([get_spw(label) for label in labels], vsys, size.nchan_line,
                                          size.nchan_cont)),
               grid=skymodel.ModelGrid(size.model_npix, size.model_cell_arcsec),
               work=outdir / f".simulate-work-{os.getpid()}")   # private to this process
    shutil.rmtree(job.work, ignore_errors=True)
    job.work.mkdir(parents=True)
    truth_dir = outdir / "truth"
    truth_dir.mkdir(exist_ok=True)
    (truth_dir / "truth.json").unlink(missing_ok=True)   # incomplete until rewritten
    t0 = time.time()

    cubes, structure, images = _build_sky(job)
    log.info("sky model: %d windows, %d^2 pixels (%.1f s)", len(job.windows), job.grid.npix, time.time() - t0)
    plans = _array_plans(setup, size)
    blocks = {plan.kind: job.work / f"{plan.kind}.ms" for plan in plans}
    spw_ids = {plan.kind: observe.observe(blocks[plan.kind], plan, list(job.windows), field, ra, dec, images)
               for plan in plans}
    log.info("observed and predicted %s (%.1f s)", ", ".join(blocks), time.time() - t0)
    budgets = _noise_budgets(job, plans, blocks, spw_ids, cubes)
    arrays_truth = {plan.kind: _finish_block(job, plan, index, blocks[plan.kind], spw_ids[plan.kind], budgets)
                    for index, plan in enumerate(plans)}
    log.info("noise added, metadata fixed (%.1f s)", time.time() - t0)
    spws_truth = {w.label: _window_truth(job, w, cubes[w.label], images[w.label], budgets[w.label],
                                         structure[w.label]) for w in job.windows}

    job.ms_dir.mkdir(parents=True, exist_ok=True)
    for kind, block in blocks.items():
        final = outdir / arrays_truth[kind]["ms"]
        shutil.rmtree(final, ignore_errors=True)
        block.rename(final)
    write_demo_runfile(outdir / "demo.toml", field, setup, list(job.windows), size)
    truth = {"field": field, "setup": setup, "size": size.name, "seed": seed,
             "position": {"ra": ra, "dec": dec, "frame": "J2000"}, "vsys_kms": vsys,
             "ms_dir": str(job.ms_dir.relative_to(outdir)), "science_intent": observe.SCIENCE_INTENT,
             "size_preset": size.as_dict(), "arrays": arrays_truth, "spws": spws_truth}
    write_truth_json(truth_dir / "truth.json", truth)
    shutil.rmtree(job.work, ignore_errors=True)
    return SimResult.load(outdir)


def _build_sky(job: _Job) -> tuple[dict[str, np.ndarray], dict[str, dict], dict[str, Path]]:
    """Unit-scale cubes, their description for the truth, and CASA model images."""
    cubes: dict[str, np.ndarray] = {}
    structure: dict[str, dict] = {}
    images: dict[str, Path] = {}
    for w in job.windows:
        cubes[w.label], structure[w.label] = _unit_cube(w, job.grid, job.res)
        images[w.label] = casa_images.write_model_image(job.work / f"model_{w.label}.im", cubes[w.label], job.grid,
                                                        job.ra, job.dec, w.freqs_lsrk_hz, w.rest_hz)
    return cubes, structure, images


def _noise_budgets(job: _Job, plans: list[observe.ArrayPlan], blocks: dict[str, Path],
                   spw_ids: dict[str, dict[str, int]], cubes: dict[str, np.ndarray]) -> dict[str, _NoiseBudget]:
    """The noise follows from what was actually observed (unflagged
    visibilities); the sky is then scaled so its peak at the nominal beam is
    ``peak_snr`` x the joint natural-weighted rms (prediction is linear)."""
    band = get_setup(job.setup).band
    counts = {plan.kind: msfix.unflagged_counts(blocks[plan.kind]) for plan in plans}
    budgets: dict[str, _NoiseBudget] = {}
    for w in job.windows:
        sigma = {plan.kind: visibility_sigma_jy(DISH_M[plan.kind], w.chan_width_hz, plan.integration_s, band)
                 for plan in plans}
        n_vis = {plan.kind: counts[plan.kind].get(spw_ids[plan.kind][w.label], 0) for plan in plans}
        rms = {kind: natural_image_rms([(n_vis[kind], sigma[kind])]) for kind in sigma}
        rms["joint"] = natural_image_rms([(n_vis[kind], sigma[kind]) for kind in sigma])
        unit_peak = skymodel.peak_per_beam(cubes[w.label], job.grid.cell_arcsec, job.res)
        budgets[w.label] = _NoiseBudget(sigma_vis_jy=sigma, n_vis=n_vis, rms=rms, unit_peak=unit_peak,
                                        scale=job.size.peak_snr * rms["joint"] / unit_peak)
    return budgets


def _finish_block(job: _Job, plan: observe.ArrayPlan, index: int, ms: Path, ids: dict[str, int],
                  budgets: dict[str, _NoiseBudget]) -> dict[str, Any]:
    """Noise, weights and metadata fix-ups of one block; returns its truth entry."""
    msfix.add_noise_and_weights(ms, {ids[w.label]: budgets[w.label].scale for w in job.windows},
                                {ids[w.label]: budgets[w.label].sigma_vis_jy[plan.kind] for w in job.windows},
                                seed=job.seed * 10 + index)
    msfix.renumber_scans(ms)
    topo = msfix.relabel_windows_topo(ms, observe.spw_layout(plan.kind, list(job.windows)), job.ra, job.dec)
    msfix.share_polarization(ms)
    msfix.add_processor(ms)
    msfix.set_telescope_alma(ms)
    msfix.fill_source_table(ms, ids, list(job.windows), job.vsys)
    final = job.ms_dir / ms_name(job.field, job.setup, plan.kind, job.seed)
    return {"ms": str(final.relative_to(job.outdir)), "config_file": plan.config_file,
            "dish_diameter_m": DISH_M[plan.kind], "date": plan.date, "time_s": plan.time_s,
            "integration_s": plan.integration_s, "n_antennas": _n_antennas(ms), "spw_ids": ids,
            "topo_chan_freqs_hz": topo}


def _window_truth(job: _Job, w: SimWindow, unit_cube: np.ndarray, image: Path, budget: _NoiseBudget,
                  structure: dict) -> dict[str, Any]:
    """Scale the model image, export it to FITS and describe the window."""
    cube = unit_cube * budget.scale
    casa_images.scale_image(image, budget.scale)
    fits_path = casa_images.export_fits(image, job.outdir / "truth" / f"{job.field}_{w.label}_model.fits")
    return {
        "kind": "continuum" if w.is_continuum else "line",
        "spw_name": w.name, "ot_name": w.spw.ot_name, "rest_freq_hz": w.rest_hz,
        "nchan": w.nchan, "catalog_nchan": w.spw.nchan, "chan_width_hz": w.chan_width_hz,
        "chan_width_kms": w.chan_width_kms, "frame": "LSRK", "velocity_convention": "radio",
        "chan_freqs_lsrk_hz": [float(f) for f in w.freqs_lsrk_hz],
        "velocities_kms": [float(v) for v in w.velocities_kms],
        "vsys_kms": job.vsys, "line_centre_lsrk_hz": w.centre_lsrk_hz,
        "model_fits": str(fits_path.relative_to(job.outdir)),
        "model_cell_arcsec": job.grid.cell_arcsec, "model_npix": job.grid.npix, "brightness_unit": "Jy/pixel",
        "peak_jy_per_pixel": float(cube.max()),
        "peak_jy_per_beam_nominal": float(budget.unit_peak * budget.scale),
        "nominal_beam_arcsec": job.res, "peak_channel": int(np.argmax(cube.max(axis=(0, 1)))),
        "integrated_flux_jy_kms": integrated_flux_jy_kms(cube, w.chan_width_kms),
        "peak_snr_joint_natural": job.size.peak_snr,
        "noise": budget.as_dict(), **structure}


def _n_antennas(ms: Path) -> int:
    tb = casa_env.casatools().table()
    tb.open(str(ms / "ANTENNA"))
    n = tb.nrows()
    tb.close()
    return int(n)
