"""Real data: the VLA NGC 5921 HI observation from casadata, calibrated by
:func:`faust_hpc.realdata.prepare_ngc5921` (the ``ngc5921`` session fixture).

The checks read the prepared measurement set itself: the target field, the
channel grid, and the continuum subtraction seen in the visibilities (the
vector average over the short baselines: HI emission near the phase centre
adds up, noise averages away).
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.casa

SHORT_BASELINE_M = 300.0


def _channel_ranges(text: str) -> list[int]:
    chans: list[int] = []
    for part in text.split(";"):
        lo, _, hi = part.partition("~")
        chans.extend(range(int(lo), int(hi or lo) + 1))
    return chans


def _short_baseline_spectrum(casa, ms):
    """Vector-averaged visibility per channel over both polarizations and
    the unflagged short baselines (Jy), and its standard error (the scatter
    of the real parts over sqrt of their number)."""
    tb = casa.casatools().table()
    tb.open(str(ms))
    try:
        data, flag, uvw = tb.getcol("DATA"), tb.getcol("FLAG"), tb.getcol("UVW")
    finally:
        tb.close()
    short = np.hypot(uvw[0], uvw[1]) < SHORT_BASELINE_M
    masked = np.ma.array(data[:, :, short], mask=flag[:, :, short])
    count = masked.real.count(axis=(0, 2))
    return masked.mean(axis=(0, 2)).filled(np.nan), (masked.real.std(axis=(0, 2)) / np.sqrt(count)).filled(np.nan)


def test_prepared_ms_has_the_target_and_the_channel_grid(ngc5921, casa, record_property):
    from faust_hpc.realdata.ngc5921 import HI_REST_FREQUENCY, TARGET_FIELD

    record = ngc5921.record
    assert record["field"] == TARGET_FIELD
    assert record["rest_frequency_hz"] == pytest.approx(HI_REST_FREQUENCY.to_value("Hz"))
    assert record["rest_frequency_hz"] == pytest.approx(1420.405752e6)
    msmd = casa.casatools().msmetadata()
    msmd.open(str(ngc5921.ms))
    try:
        fields = list(msmd.fieldnames())
        nchan = msmd.nchan(0)
        freqs = np.asarray(msmd.chanfreqs(0))
    finally:
        msmd.close()
    assert fields == [TARGET_FIELD]
    assert nchan == record["nchan"] == 63
    np.testing.assert_allclose(freqs, record["channel_frequencies_hz"])
    # 24.4 kHz channels around 1413 MHz: HI redshifted by NGC 5921's ~1500 km/s
    assert np.diff(freqs) == pytest.approx(24414.0625, rel=1e-6)
    assert 1412e6 < freqs[0] < freqs[-1] < 1415e6
    cals = record["calibrators"]
    flux_cal = next(c for name, c in cals.items() if name.startswith("1331+305"))
    gain_cal = next(c for name, c in cals.items() if name.startswith("1445+099"))
    record_property("flux_calibrator_jy", flux_cal["stokes_i_jy"])
    record_property("gain_calibrator_jy", gain_cal["stokes_i_jy"])
    record_property("prepare_wall_seconds", record["wall_seconds"])
    print(f"\n3C286 {flux_cal['stokes_i_jy']:.3f} Jy, 1445+099 {gain_cal['stokes_i_jy']:.3f} "
          f"+- {gain_cal['error_jy']:.4f} Jy, prepared in {record['wall_seconds']} s")
    assert 14.0 < flux_cal["stokes_i_jy"] < 16.0          # 3C286 at 1.41 GHz
    assert 2.3 < gain_cal["stokes_i_jy"] < 2.7            # the tutorial's 2.49 Jy, scaled to the standard
    assert gain_cal["error_jy"] < 0.05 * gain_cal["stokes_i_jy"]


def test_continuum_is_subtracted_and_the_hi_line_remains(ngc5921, casa, record_property):
    vavg, err = _short_baseline_spectrum(casa, ngc5921.ms)
    line_free = _channel_ranges(ngc5921.record["line_free_channels"])
    snr = vavg.real / err
    emission = np.flatnonzero(snr > 5)
    print(f"\nshort-baseline spectrum (mJy): {np.round(vavg.real * 1e3, 1).tolist()}")
    print(f"signal-to-noise: {np.round(snr, 1).tolist()}")
    print(f"HI channels (> 5 sigma): {emission.tolist()}")
    record_property("hi_channels", f"{emission.min()}..{emission.max()}")
    # line-free channels: continuum gone (a constant was fitted to exactly these)
    assert np.all(np.abs(snr[line_free]) < 4), snr[line_free]
    # the galaxy: ~0.1 Jy on the short baselines over a contiguous band in the middle of the SPW
    assert vavg.real.max() > 0.05
    assert 8 <= emission.min() and emission.max() <= 48
    assert emission.max() - emission.min() >= 25
    assert not set(emission) & set(line_free)


def test_a_second_prepare_reuses_the_finished_output(ngc5921):
    before = (ngc5921.ms.stat().st_mtime_ns, (ngc5921.outdir / "ngc5921.json").read_text())
    proc = subprocess.run([sys.executable, "-m", "faust_hpc", "prepare-real", str(ngc5921.outdir)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "reusing" in proc.stderr
    assert (ngc5921.ms.stat().st_mtime_ns, (ngc5921.outdir / "ngc5921.json").read_text()) == before
    assert not list(ngc5921.outdir.glob(".ngc5921-work-*"))
    assert json.loads(before[1])["steps"][-1]["task"] == "uvcontsub"


def test_prepare_real_refuses_a_file_for_its_directory(tmp_path):
    target = tmp_path / "not-a-dir"
    target.write_text("x")
    proc = subprocess.run([sys.executable, "-m", "faust_hpc", "prepare-real", str(target)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "not a directory" in proc.stderr
    assert target.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["not-a-dir"]
