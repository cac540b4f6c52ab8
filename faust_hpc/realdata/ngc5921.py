"""Calibrate the VLA NGC 5921 HI data shipped in ``casadata`` into a
continuum-subtracted target measurement set, ready for imaging.

The raw data (``casadata/__data__/demo/NGC5921.fits``: VLA D array, 13 Apr
1995, one SPW of 63 channels of 24.4 kHz around 1413 MHz, RR+LL; fields
``1331+30500002_0`` = 3C286 flux and bandpass calibrator,
``1445+09900002_0`` gain calibrator, ``N5921_2`` the galaxy) go through the
steps of the classic CASA NGC 5921 tutorial, with CASA 6.7's task APIs:

1. ``importuvfits``;
2. ``flagdata``: autocorrelations, shadowed antennas, the first integration
   (30 s) of every scan (quack);
3. ``setjy`` on 3C286 (Perley-Butler 2017, a point source at 1.4 GHz in D array);
4. ``bandpass`` on 3C286 (one solution, scans combined);
5. ``gaincal`` on both calibrators, amplitude and phase per scan, over the
   channels clear of the bandpass edges (6~56);
6. ``fluxscale``: 3C286's scale transferred to 1445+099;
7. ``applycal`` (flux-scaled gains of 1445+099 and the bandpass onto the target);
8. ``split`` of the target's corrected data;
9. ``uvcontsub`` (CASA >= 6.5 API: ``outputvis``, ``fitspec``): a constant
   (order 0) fitted to the line-free channels 4~6 and 50~59, as in the tutorial.

Everything is built in ``OUTDIR/.ngc5921-work-<pid>``; the finished MS is
renamed to ``OUTDIR/data/N5921_2_hi_contsub.ms`` and the record
``OUTDIR/ngc5921.json`` (what was done, the calibrators' fluxes, the channel
grid, the rest frequency, wall times) is written last, so its presence means
the output is complete; a later call that finds both reuses them.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from astropy import units as u
from filelock import FileLock

from faust_hpc import casa_env
from faust_hpc.errors import UserInputError
from faust_hpc.layout import RunLayout

log = logging.getLogger(__name__)

RECORD_NAME = "ngc5921.json"
RECORD_VERSION = 1
DATA_SUBDIR = "data"
MS_NAME = "N5921_2_hi_contsub.ms"
FITS_RELPATH = Path("demo") / "NGC5921.fits"

TARGET_FIELD = "N5921_2"
FLUX_CALIBRATOR = "1331+305*"       # 3C286
GAIN_CALIBRATOR = "1445+099*"
REFANT = "15"                       # VLA:N2, as in the tutorial
FLUX_STANDARD = "Perley-Butler 2017"
QUACK_SECONDS = 30.0                # one integration
GAINCAL_CHANNELS = "6~56"           # clear of the bandpass roll-off
LINE_FREE_CHANNELS = "4~6;50~59"    # the tutorial's continuum channels
CONTINUUM_FIT_ORDER = 0
HI_REST_FREQUENCY = 1420.405752 * u.MHz


def record_path(outdir: str | os.PathLike) -> Path:
    return Path(outdir).resolve() / RECORD_NAME


def ms_path(outdir: str | os.PathLike) -> Path:
    return Path(outdir).resolve() / DATA_SUBDIR / MS_NAME


def source_fits() -> Path:
    """The raw UVFITS: in the configured CASA data directory, else in the
    ``casadata`` package (a site data directory may not carry the demo data)."""
    for root in (casa_env.data_dir(), casa_env.default_data_dir()):
        if root is not None and (Path(root) / FITS_RELPATH).is_file():
            return Path(root) / FITS_RELPATH
    raise UserInputError(f"{FITS_RELPATH} not found in the CASA data directory nor in the casadata package; "
                         f"install casadata (pip install casadata) to prepare the NGC 5921 data")


def load_ngc5921_record(outdir: str | os.PathLike) -> dict[str, Any] | None:
    """The record of a finished preparation in ``outdir``, else None."""
    path = record_path(outdir)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("version") != RECORD_VERSION or not ms_path(outdir).is_dir():
        return None
    return record


def prepare_ngc5921(outdir: str | os.PathLike) -> Path:
    """Calibrate and continuum-subtract NGC 5921 into ``outdir`` (see the
    module docstring); returns the target MS. Reuses a finished output."""
    outdir = Path(outdir).resolve()
    if outdir.exists() and not outdir.is_dir():
        raise UserInputError(f"{outdir} exists and is not a directory; give a directory for the prepared data")
    fits = source_fits()
    outdir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(outdir / f".{RECORD_NAME}.lock")):
        if load_ngc5921_record(outdir) is not None:
            log.info("NGC 5921 already prepared in %s: reusing %s", outdir, ms_path(outdir))
            return ms_path(outdir)
        for stale in outdir.glob(".ngc5921-work-*"):   # left by a killed run (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        work = outdir / f".ngc5921-work-{os.getpid()}"
        work.mkdir()
        started = time.time()
        casa_log = RunLayout(outdir).logs_dir / f"prepare-ngc5921-{os.getpid()}.casa.log"
        try:
            with _casa_log_to(casa_log):
                record = _calibrate(fits, work)
            record["wall_seconds"] = round(time.time() - started, 2)
            record["casa_log"] = str(casa_log)
            final = ms_path(outdir)
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(final, ignore_errors=True)     # an MS without a record is unfinished
            os.replace(work / MS_NAME, final)
            _write_json_atomic(record_path(outdir), record)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    log.info("NGC 5921 prepared in %.1f s: %s", record["wall_seconds"], final)
    return final


def _casa_log_to(path: Path) -> Any:
    from faust_hpc.simulate.core import _CasaLog   # the one "CASA log into this directory for the duration"

    return _CasaLog(path)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


class _Steps:
    """Runs CASA tasks one after the other and records each with its wall time."""

    def __init__(self) -> None:
        self.done: list[dict[str, Any]] = []

    def run(self, name: str, task: Callable[..., Any], **params: Any) -> Any:
        t0 = time.time()
        result = task(**params)
        seconds = time.time() - t0
        shown = {k: v for k, v in params.items() if k not in ("vis", "caltable", "fluxtable", "outputvis")}
        self.done.append({"task": task.__name__ if hasattr(task, "__name__") else name, "step": name,
                          "params": shown, "seconds": round(seconds, 3)})
        log.info("ngc5921: %s done in %.1f s", name, seconds)
        return result


def _calibrate(fits: Path, work: Path) -> dict[str, Any]:
    tasks = casa_env.casatasks()
    raw = str(work / "ngc5921_raw.ms")
    bcal, gcal, fcal = (str(work / f"ngc5921.{ext}") for ext in ("bcal", "gcal", "fluxscale"))
    target = str(work / "ngc5921_target.ms")
    steps = _Steps()
    steps.run("import", tasks.importuvfits, fitsfile=str(fits), vis=raw)
    steps.run("flag autocorrelations", tasks.flagdata, vis=raw, mode="manual", autocorr=True, flagbackup=False)
    steps.run("flag shadowed antennas", tasks.flagdata, vis=raw, mode="shadow", flagbackup=False)
    steps.run("quack", tasks.flagdata, vis=raw, mode="quack", quackinterval=QUACK_SECONDS, quackmode="beg",
              flagbackup=False)
    flag_summary = tasks.flagdata(vis=raw, mode="summary")
    setjy = steps.run("setjy", tasks.setjy, vis=raw, field=FLUX_CALIBRATOR, standard=FLUX_STANDARD)
    steps.run("bandpass", tasks.bandpass, vis=raw, caltable=bcal, field=FLUX_CALIBRATOR, solint="inf",
              combine="scan", refant=REFANT, bandtype="B", solnorm=False)
    steps.run("gaincal", tasks.gaincal, vis=raw, caltable=gcal, field=f"{FLUX_CALIBRATOR},{GAIN_CALIBRATOR}",
              spw=f"0:{GAINCAL_CHANNELS}", gaintype="G", solint="inf", combine="", refant=REFANT, calmode="ap",
              minsnr=1.0, gaintable=[bcal], interp=["nearest"])
    fluxscale = steps.run("fluxscale", tasks.fluxscale, vis=raw, caltable=gcal, fluxtable=fcal,
                          reference=FLUX_CALIBRATOR, transfer=GAIN_CALIBRATOR)
    steps.run("applycal (gain calibrator, target)", tasks.applycal, vis=raw,
              field=f"{GAIN_CALIBRATOR},{TARGET_FIELD}", gaintable=[fcal, bcal], gainfield=[GAIN_CALIBRATOR, ""],
              interp=["linear", "nearest"], calwt=True, flagbackup=False)
    steps.run("applycal (flux calibrator)", tasks.applycal, vis=raw, field=FLUX_CALIBRATOR, gaintable=[fcal, bcal],
              gainfield=[FLUX_CALIBRATOR, ""], interp=["linear", "nearest"], calwt=True, flagbackup=False)
    steps.run("split target", tasks.split, vis=raw, outputvis=target, field=TARGET_FIELD, datacolumn="corrected")
    steps.run("uvcontsub", tasks.uvcontsub, vis=target, outputvis=str(work / MS_NAME), datacolumn="data",
              fitspec=f"0:{LINE_FREE_CHANNELS}", fitorder=CONTINUUM_FIT_ORDER)
    freqs = _channel_frequencies(str(work / MS_NAME))
    return {
        "version": RECORD_VERSION,
        "source_fits": str(fits),
        "ms": f"{DATA_SUBDIR}/{MS_NAME}",
        "field": TARGET_FIELD,
        "spw": 0,
        "nchan": int(freqs.size),
        "channel_frequencies_hz": freqs,
        "frequency_frame": "LSRK",
        "rest_frequency_hz": float(HI_REST_FREQUENCY.to_value(u.Hz)),
        "rest_frequency": f"{HI_REST_FREQUENCY.to_value(u.MHz):.6f}MHz",
        "line_free_channels": LINE_FREE_CHANNELS,
        "continuum_fit_order": CONTINUUM_FIT_ORDER,
        "calibrators": _calibrator_fluxes(setjy, fluxscale),
        "flagged_fraction": float(flag_summary["flagged"]) / float(flag_summary["total"]),
        "steps": steps.done,
        "casa_version": casa_env.casatools().version_string(),
    }


def _channel_frequencies(vis: str) -> np.ndarray:
    tb = casa_env.casatools().table()
    tb.open(f"{vis}/SPECTRAL_WINDOW")
    try:
        return np.asarray(tb.getcell("CHAN_FREQ", 0), dtype=float)
    finally:
        tb.close()


def _calibrator_fluxes(setjy: dict[str, Any], fluxscale: dict[str, Any]) -> dict[str, Any]:
    """Stokes I of each calibrator (Jy): set by ``setjy`` for the flux
    calibrator, derived by ``fluxscale`` (with its error) for the gain calibrator."""
    out: dict[str, Any] = {}
    for field_id, entry in setjy.items():
        if isinstance(entry, dict) and "fieldName" in entry:
            flux = entry.get("0", {}).get("fluxd")
            out[entry["fieldName"]] = {"role": "flux and bandpass", "stokes_i_jy": float(np.asarray(flux)[0]),
                                       "standard": FLUX_STANDARD}
    for field_id, entry in fluxscale.items():
        if isinstance(entry, dict) and "fieldName" in entry:
            spw0 = entry.get("0", {})
            out[entry["fieldName"]] = {"role": "gain (flux transferred)",
                                       "stokes_i_jy": float(np.asarray(spw0.get("fluxd"))[0]),
                                       "error_jy": float(np.asarray(spw0.get("fluxdErr"))[0])}
    return out
