"""Make a simulator MS look like FAUST's calibrated, split ALMA data.

What ``casatools.simulator`` leaves behind and what is done about it:
- DATA holds the noise-free prediction, WEIGHT/SIGMA = 1: the known thermal
  noise is added here (numpy, seeded) and WEIGHT = 1/SIGMA^2 written from it,
  so 7m visibilities weigh (7/12)^4 as much as 12m ones, as in real data;
- MODEL_DATA and a duplicate CORRECTED_DATA: removed (FAUST data have DATA only);
- windows declared in LSRK (see :mod:`.observe`): relabelled to the
  equivalent TOPO grid at the block's mid-time (MEAS_FREQ_REF = TOPO);
- no BBC_NO column (``msmd.baseband`` fails): added;
- a new scan per ``observe`` call: one scan number per time block;
- one POLARIZATION row per window: one shared row;
- empty PROCESSOR table: one correlator row;
- SOURCE with SYSVEL 0 and no rest frequencies: one row per window with the
  catalog's rest frequency, transition name and the target's vsys (LSRK);
- telescope 'ACA' (used to pick the 7m primary beam): renamed to 'ALMA'.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from faust_hpc import casa_env
from faust_hpc.catalog import parse_frequency_hz
from faust_hpc.simulate.windows import SimWindow

log = logging.getLogger(__name__)

ROW_BLOCK = 20000
MEAS_FREQ_REF = {"LSRK": 1, "TOPO": 5}


def _ddid_to_spw(ms: Path) -> dict[int, int]:
    tb = casa_env.casatools().table()
    tb.open(str(ms / "DATA_DESCRIPTION"))
    spw_ids = tb.getcol("SPECTRAL_WINDOW_ID")
    tb.close()
    return {dd: int(s) for dd, s in enumerate(spw_ids)}


def unflagged_counts(ms: Path) -> dict[int, int]:
    """Unflagged (row, polarisation) visibilities per SPW id, for one channel."""
    tb = casa_env.casatools().table()
    dd_spw = _ddid_to_spw(ms)
    tb.open(str(ms))
    ddid = tb.getcol("DATA_DESC_ID")
    flag_row = tb.getcol("FLAG_ROW")
    flags = tb.getcol("FLAG")                    # [pol, chan, row]
    tb.close()
    good = (~flags[:, 0, :]) & (~flag_row)[None, :]
    counts: dict[int, int] = {}
    for dd in np.unique(ddid):
        counts[dd_spw[int(dd)]] = int(good[:, ddid == dd].sum())
    return counts


def add_noise_and_weights(ms: Path, scale_by_spw: dict[int, float], sigma_by_spw: dict[int, float],
                          seed: int) -> None:
    """DATA = scale x prediction + complex Gaussian noise (sigma per part);
    SIGMA = sigma, WEIGHT = 1/sigma^2. Rows are processed in blocks in row
    order with one seeded generator, so the result is reproducible."""
    tb = casa_env.casatools().table()
    dd_spw = _ddid_to_spw(ms)
    rng = np.random.default_rng(seed)
    tb.open(str(ms), nomodify=False)
    try:
        nrows = tb.nrows()
        for start in range(0, nrows, ROW_BLOCK):
            n = min(ROW_BLOCK, nrows - start)
            ddid = tb.getcol("DATA_DESC_ID", startrow=start, nrow=n)
            data = tb.getcol("DATA", startrow=start, nrow=n)      # [pol, chan, row]
            sigma = np.empty((data.shape[0], n), dtype=np.float64)
            for dd in np.unique(ddid):
                spw = dd_spw[int(dd)]
                rows = ddid == dd
                s = sigma_by_spw[spw]
                shape = data[:, :, rows].shape
                noise = rng.normal(0.0, s, shape) + 1j * rng.normal(0.0, s, shape)
                data[:, :, rows] = scale_by_spw[spw] * data[:, :, rows] + noise
                sigma[:, rows] = s
            tb.putcol("DATA", data, startrow=start, nrow=n)
            tb.putcol("SIGMA", sigma.astype(np.float32), startrow=start, nrow=n)
            tb.putcol("WEIGHT", (1.0 / sigma ** 2).astype(np.float32), startrow=start, nrow=n)
        drop = [c for c in ("MODEL_DATA", "CORRECTED_DATA") if c in tb.colnames()]
        if drop:
            tb.removecols(drop)
    finally:
        tb.close()


def renumber_scans(ms: Path) -> None:
    """One scan per contiguous block of integrations, shared by all windows."""
    tb = casa_env.casatools().table()
    tb.open(str(ms), nomodify=False)
    times = tb.getcol("TIME")
    unique = np.unique(times)
    if len(unique) > 1:
        steps = np.diff(unique)
        new_scan = np.concatenate([[False], steps > 1.5 * np.median(steps)])
        scan_of_time = 1 + np.cumsum(new_scan)
    else:
        scan_of_time = np.ones(1, dtype=int)
    tb.putcol("SCAN_NUMBER", scan_of_time[np.searchsorted(unique, times)].astype(np.int32))
    tb.close()


def mid_time_s(ms: Path) -> tuple[float, float]:
    tb = casa_env.casatools().table()
    tb.open(str(ms))
    times = tb.getcol("TIME")
    tb.close()
    return float(0.5 * (times.min() + times.max())), float(times.max() - times.min())


def lsrk_to_topo(freqs_hz: np.ndarray, epoch_s: float, ra: str, dec: str) -> np.ndarray:
    """LSRK -> TOPO frequencies at ALMA for one epoch (MJD seconds, UTC).
    The map is linear to < 1e-9 across a window, so the end points suffice."""
    tools = casa_env.casatools()
    me, qa = tools.measures(), tools.quanta()
    me.doframe(me.observatory("ALMA"))
    me.doframe(me.epoch("UTC", qa.quantity(epoch_s, "s")))
    me.doframe(me.direction("J2000", ra, dec))

    def one(f: float) -> float:
        return float(me.measure(me.frequency("LSRK", qa.quantity(float(f), "Hz")), "TOPO")["m0"]["value"])

    if len(freqs_hz) == 1:
        return np.array([one(freqs_hz[0])])
    return np.linspace(one(freqs_hz[0]), one(freqs_hz[-1]), len(freqs_hz))


def relabel_windows_topo(ms: Path, layout: list[tuple[SimWindow, bool]], ra: str, dec: str) -> dict[str, list[float]]:
    """Write each window's TOPO grid (the LSRK grid seen at mid-time) and
    BBC_NO; returns {label: TOPO channel frequencies} of the FULL_RES rows."""
    tb = casa_env.casatools().table()
    epoch, _ = mid_time_s(ms)
    topo: dict[str, list[float]] = {}
    tb.open(str(ms / "SPECTRAL_WINDOW"), nomodify=False)
    try:
        if "BBC_NO" not in tb.colnames():
            tb.addcols({"BBC_NO": {"valueType": "int", "dataManagerType": "StandardStMan",
                                   "dataManagerGroup": "StandardStMan", "option": 0, "maxlen": 0,
                                   "comment": "Baseband converter number"}})
        for row, (window, full) in enumerate(layout):
            lsrk = tb.getcell("CHAN_FREQ", row)
            freqs = lsrk_to_topo(np.asarray(lsrk, dtype=float), epoch, ra, dec)
            width = (freqs[1] - freqs[0]) if len(freqs) > 1 else float(tb.getcell("CHAN_WIDTH", row)[0])
            widths = np.full(len(freqs), width)
            tb.putcell("CHAN_FREQ", row, freqs)
            tb.putcell("CHAN_WIDTH", row, widths)
            tb.putcell("EFFECTIVE_BW", row, np.abs(widths))
            tb.putcell("RESOLUTION", row, np.abs(widths))
            tb.putcell("REF_FREQUENCY", row, float(freqs[len(freqs) // 2]))
            tb.putcell("TOTAL_BANDWIDTH", row, float(abs(width) * len(freqs)))
            tb.putcell("MEAS_FREQ_REF", row, MEAS_FREQ_REF["TOPO"])
            tb.putcell("NET_SIDEBAND", row, 1)
            tb.putcell("BBC_NO", row, window.baseband)
            if full:
                topo[window.label] = [float(f) for f in freqs]
    finally:
        tb.close()
    return topo


def share_polarization(ms: Path) -> None:
    tb = casa_env.casatools().table()
    tb.open(str(ms / "DATA_DESCRIPTION"), nomodify=False)
    tb.putcol("POLARIZATION_ID", np.zeros(tb.nrows(), dtype=np.int32))
    tb.close()
    tb.open(str(ms / "POLARIZATION"), nomodify=False)
    if tb.nrows() > 1:
        tb.removerows(list(range(1, tb.nrows())))
    tb.close()


def add_processor(ms: Path) -> None:
    tb = casa_env.casatools().table()
    tb.open(str(ms / "PROCESSOR"), nomodify=False)
    if tb.nrows() == 0:
        tb.addrows(1)
        tb.putcell("TYPE", 0, "CORRELATOR")
        tb.putcell("SUB_TYPE", 0, "ALMA_CORRELATOR_MODE")
        tb.putcell("TYPE_ID", 0, -1)
        tb.putcell("MODE_ID", 0, 0)
        tb.putcell("FLAG_ROW", 0, False)
    tb.close()


def set_telescope_alma(ms: Path) -> None:
    tb = casa_env.casatools().table()
    tb.open(str(ms / "OBSERVATION"), nomodify=False)
    tb.putcol("TELESCOPE_NAME", np.array(["ALMA"] * tb.nrows()))
    tb.close()


def fill_source_table(ms: Path, ids: dict[str, int], windows: list[SimWindow], vsys_kms: float) -> None:
    """One SOURCE row per FULL_RES window: rest frequency as the MS lists it,
    transition name, SYSVEL = vsys (m/s, LSRK)."""
    tb = casa_env.casatools().table()
    mid, span = mid_time_s(ms)
    tb.open(str(ms / "SOURCE"), nomodify=False)
    try:
        template = {c: tb.getcell(c, 0) for c in ("CALIBRATION_GROUP", "CODE", "DIRECTION", "NAME",
                                                  "PROPER_MOTION", "SOURCE_ID")}
        if tb.nrows() < len(windows):
            tb.addrows(len(windows) - tb.nrows())
        for row, window in enumerate(windows):
            for column, value in template.items():
                tb.putcell(column, row, value)
            tb.putcell("SPECTRAL_WINDOW_ID", row, ids[window.label])
            tb.putcell("TIME", row, mid)
            tb.putcell("INTERVAL", row, span)
            tb.putcell("NUM_LINES", row, 1)
            tb.putcell("REST_FREQUENCY", row, np.array([parse_frequency_hz(window.spw.ms_restfreq)]))
            tb.putcell("SYSVEL", row, np.array([vsys_kms * 1e3]))
            tb.putcell("TRANSITION", row, np.array([window.spw.name]))
        for column in ("REST_FREQUENCY", "SYSVEL"):
            keywords = tb.getcolkeywords(column)
            if "MEASINFO" in keywords:
                keywords["MEASINFO"]["Ref"] = "LSRK"
                tb.putcolkeywords(column, keywords)
    finally:
        tb.close()
