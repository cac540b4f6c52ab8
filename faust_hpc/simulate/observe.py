"""One execution block: antenna layout, spectral windows, scans, prediction.

Traps handled here (see the project's notes on simulating ALMA data):
- ``sm.predict`` from an LSRK model into TOPO windows writes zeros, so the
  windows are declared in LSRK on the model's grid and :mod:`.msfix`
  relabels them to TOPO afterwards;
- ``setspwindow(freq=)`` is the centre of the first channel, and quantities
  are formatted from Python floats;
- the 'mosaic' ftmachine crashes at ``sm.done()``: the default 'ft' with a
  primary beam (``setvp``) is used, with telescope 'ACA' for the 7m array
  while predicting (7m beam) and renamed to 'ALMA' later.

SPW ids are laid out as in real ALMA data, where each FULL_RES window has a
channel-averaged (CH_AVG) twin: the 12m block lists the windows in catalog
order with the CH_AVG row first, the 7m block in reverse order with the
CH_AVG row second. The ids of one window therefore always differ between the
two blocks, and selecting by name ending in ``ot_name`` (never by number,
never matching CH_AVG) is the only thing that works. CH_AVG rows hold no data.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faust_hpc import casa_env
from faust_hpc.simulate.windows import SimWindow

log = logging.getLogger(__name__)

SCIENCE_INTENT = "OBSERVE_TARGET#ON_SOURCE"


@dataclass(frozen=True)
class ArrayPlan:
    """How one execution block is observed."""

    kind: str                # "12m" or "7m"
    config_file: str         # in casadata's alma/simmos
    predict_telescope: str   # 'ALMA' or 'ACA' (selects the primary beam while predicting)
    date: str                # UTC day; the block is centred on transit
    n_antennas: int          # 0 = all
    time_s: float
    integration_s: float
    nscans: int

    def antenna_names(self, n: int) -> list[str]:
        if self.kind == "7m":
            return [f"CM{i:02d}" for i in range(1, n + 1)]
        pool = ([f"DA{i}" for i in range(41, 66)] + [f"DV{i:02d}" for i in range(1, 26)]
                + [f"PM{i:02d}" for i in range(1, 5)])
        return pool[:n]


def spw_layout(kind: str, windows: list[SimWindow]) -> list[tuple[SimWindow, bool]]:
    """Rows of SPECTRAL_WINDOW in id order: (window, is_full_res)."""
    rows: list[tuple[SimWindow, bool]] = []
    if kind == "12m":
        for w in windows:
            rows += [(w, False), (w, True)]
    else:
        for w in reversed(windows):
            rows += [(w, True), (w, False)]
    return rows


def simmos_dir() -> Path:
    data = casa_env.data_dir() or casa_env.default_data_dir()
    candidate = Path(data) / "alma" / "simmos"
    return candidate if candidate.is_dir() else casa_env.default_data_dir() / "alma" / "simmos"


def read_configuration(plan: ArrayPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str], object]:
    """Antenna positions (global XYZ), diameters and pads of the .cfg file,
    thinned to ``n_antennas`` spread evenly in distance from the array centre
    (keeps the longest and shortest baselines, hence resolution and the
    largest recoverable scale)."""
    casa_env.casatasks()
    from casatasks.private import simutil  # noqa: PLC0415 (CASA only after casa_env)

    x, y, z, d, pads, _, _, pos = simutil.simutil().readantenna(str(simmos_dir() / plan.config_file))
    x, y, z, d = (np.asarray(v, dtype=float) for v in (x, y, z, d))
    pads = list(pads)
    if plan.n_antennas and plan.n_antennas < len(x):
        dist = np.hypot(x - x.mean(), y - y.mean()) + np.abs(z - z.mean())
        order = np.argsort(dist)
        keep = np.sort(order[np.round(np.linspace(0, len(x) - 1, plan.n_antennas)).astype(int)])
        x, y, z, d = x[keep], y[keep], z[keep], d[keep]
        pads = [pads[i] for i in keep]
    return x, y, z, d, pads, pos


def _q(value: float, unit: str) -> str:
    return f"{float(value):.6f}{unit}"


def observe(ms_path: Path, plan: ArrayPlan, windows: list[SimWindow], field: str, ra: str, dec: str,
            model_images: dict[str, Path]) -> dict[str, int]:
    """Create the MS and predict the model into it; returns {label: FULL_RES spw id}."""
    tools = casa_env.casatools()
    me = tools.measures()
    shutil.rmtree(ms_path, ignore_errors=True)
    x, y, z, d, pads, pos = read_configuration(plan)
    layout = spw_layout(plan.kind, windows)
    sm = tools.simulator()
    try:
        sm.open(str(ms_path))
        sm.setconfig(telescopename=plan.predict_telescope, x=list(x), y=list(y), z=list(z),
                     dishdiameter=list(d), mount=["ALT-AZ"], antname=plan.antenna_names(len(x)),
                     padname=pads, coordsystem="global", referencelocation=pos)
        for window, full in layout:
            f = window.freqs_lsrk_hz
            if full:
                sm.setspwindow(spwname=window.name, freq=_q(f[0], "Hz"), deltafreq=_q(f[1] - f[0], "Hz"),
                               freqresolution=_q(f[1] - f[0], "Hz"), refcode="LSRK",
                               nchannels=window.nchan, stokes="XX YY")
            else:
                width = window.nchan * window.chan_width_hz
                sm.setspwindow(spwname=window.ch_avg_name, freq=_q(f.mean(), "Hz"), deltafreq=_q(width, "Hz"),
                               freqresolution=_q(width, "Hz"), refcode="LSRK", nchannels=1, stokes="XX YY")
        sm.setfeed(mode="perfect X Y", pol=[""])
        sm.setfield(sourcename=field, sourcedirection=me.direction("J2000", ra, dec), calcode="OBJ",
                    distance="0m")
        sm.setlimits(shadowlimit=0.01, elevationlimit="10deg")
        sm.setauto(0.0)
        sm.settimes(integrationtime=_q(plan.integration_s, "s"), usehourangle=True,
                    referencetime=me.epoch("UTC", plan.date))
        # scans separated by gaps of two integrations (where phase calibrator scans would be)
        scan_time = plan.time_s / plan.nscans
        gap = 2 * plan.integration_s
        total = plan.time_s + gap * (plan.nscans - 1)
        for k in range(plan.nscans):
            start = -total / 2 + k * (scan_time + gap)
            for window in windows:
                sm.observe(sourcename=field, spwname=window.name, starttime=_q(start, "s"),
                           stoptime=_q(start + scan_time, "s"), state_obs_mode=SCIENCE_INTENT,
                           observer="faust-hpc simulate", project="uid://A001/X0000/X0000")
        ids = {w.label: i for i, (w, full) in enumerate(layout) if full}
        sm.setvp(dovp=True, usedefaultvp=False)
        for window in windows:
            sm.setdata(spwid=[ids[window.label]], fieldid=[0])
            sm.predict(imagename=str(model_images[window.label]), incremental=False)
    finally:
        sm.done()
    log.info("%s: observed %d antennas, spw ids %s", ms_path.name, len(x), ids)
    return ids
