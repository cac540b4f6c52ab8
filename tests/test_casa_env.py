"""The one door to CASA (``faust_hpc.casa_env``), exercised in fresh processes.

- a TOPO -> LSRK frequency conversion for ALMA at given epochs agrees with an
  independent, astropy-free calculation (Earth's orbital velocity from the
  low-precision solar ephemeris, Earth rotation at ALMA, 20 km/s solar motion
  towards 18h +30 deg B1900) to 0.05 km/s, and with the value pinned when the
  test was written (1 kHz);
- nothing is written into the working directory (no ``casa-*.log``) or into
  ``~/.casa`` (HOME is a temporary directory);
- ``FAUST_CASA_DATA`` chooses the measures directory; a directory without
  measures data is refused with a UserInputError naming it.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from faust_hpc import casa_env
from faust_hpc.errors import UserInputError

C_KMS = 299792.458
ALMA_LON_DEG, ALMA_LAT_DEG = -67.755, -23.029
CB68 = ("16h57m19.64s", "-16d09m24.0s", 254.331833, -16.156667)
L1527 = ("04h39m53.88s", "+26d03m09.4s", 69.9745, 26.052611)
# (UTC, source, TOPO Hz) -> LSRK Hz computed by casatools 6.7.0.31 when this test was written
PINNED = {("2023/05/20/06:00:00", "CB68", 245e9): 244982328141.48578}

CONVERT = r"""
import json, os, sys
from faust_hpc import casa_env
casa_env.configure(log_path=os.environ["TEST_LOG"])
tools = casa_env.casatools()
me, qa = tools.measures(), tools.quanta()
out = {"data_dir": str(casa_env.data_dir()), "measurespath": tools.ctsys.measurespath(), "results": []}
for epoch, ra, dec, f_topo in json.loads(sys.argv[1]):
    me.doframe(me.observatory("ALMA"))
    me.doframe(me.epoch("UTC", epoch))
    me.doframe(me.direction("J2000", ra, dec))
    lsrk = me.measure(me.frequency("TOPO", qa.quantity(f_topo, "Hz")), "LSRK")["m0"]["value"]
    back = me.measure(me.frequency("LSRK", qa.quantity(lsrk, "Hz")), "TOPO")["m0"]["value"]
    out["results"].append([lsrk, back])
print(json.dumps(out))
"""


def _jd(epoch: str) -> float:
    y, mo, d, clock = epoch.split("/")
    h, m, s = (float(x) for x in clock.split(":"))
    y, mo, d = int(y), int(mo), int(d)
    a = (14 - mo) // 12
    yy, mm = y + 4800 - a, mo + 12 * a - 3
    jdn = d + (153 * mm + 2) // 5 + 365 * yy + yy // 4 - yy // 100 + yy // 400 - 32045
    return jdn + (h + m / 60 + s / 3600 - 12) / 24.0


def _unit(ra_deg: float, dec_deg: float) -> tuple[float, float, float]:
    ra, dec = math.radians(ra_deg), math.radians(dec_deg)
    return math.cos(dec) * math.cos(ra), math.cos(dec) * math.sin(ra), math.sin(dec)


def expected_lsrk(epoch: str, ra_deg: float, dec_deg: float, f_topo: float) -> float:
    """Independent TOPO -> LSRK (J2000 equatorial velocity of the observer
    with respect to the LSR, projected on the source direction)."""
    n = _jd(epoch) - 2451545.0
    mean_lon = 280.460 + 0.9856474 * n
    anomaly = math.radians(357.528 + 0.9856003 * n)
    sun_lon = mean_lon + 1.915 * math.sin(anomaly) + 0.020 * math.sin(2 * anomaly) - 0.013970 * n / 365.25
    earth_lon = math.radians(sun_lon + 180.0)
    ecc, perihelion = 0.016709, math.radians(102.937)
    v0 = 29.7847 / math.sqrt(1 - ecc ** 2)
    vx = -v0 * (math.sin(earth_lon) + ecc * math.sin(perihelion))
    vy = v0 * (math.cos(earth_lon) + ecc * math.cos(perihelion))
    obliquity = math.radians(23.43929)
    orbital = (vx, vy * math.cos(obliquity), vy * math.sin(obliquity))
    last = math.radians(280.46061837 + 360.98564736629 * n + ALMA_LON_DEG)
    spin = 0.46510 * math.cos(math.radians(ALMA_LAT_DEG))
    rotation = (-spin * math.sin(last), spin * math.cos(last), 0.0)
    solar = tuple(20.0 * c for c in _unit(270.9602, 29.9998))
    velocity = [o + r + s for o, r, s in zip(orbital, rotation, solar)]
    towards = sum(v * u for v, u in zip(velocity, _unit(ra_deg, dec_deg)))
    return f_topo / (1.0 + towards / C_KMS)


def _run(tmp_path: Path, cases: list, env_extra: dict | None = None) -> tuple[dict, Path, Path]:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    log_file = tmp_path / "logs" / "convert.casa.log"
    env = {**os.environ, "HOME": str(home), "TEST_LOG": str(log_file), **(env_extra or {})}
    env.pop("CASASITECONFIG", None)
    proc = subprocess.run([sys.executable, "-c", CONVERT, json.dumps(cases)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), home, cwd


@pytest.mark.casa
def test_topo_to_lsrk_for_alma_matches_an_independent_calculation(tmp_path):
    cases = [("2023/05/20/06:00:00", CB68, 245e9), ("2023/11/15/18:30:00", CB68, 245e9),
             ("2023/04/02/09:00:00", CB68, 244.95e9), ("2024/01/10/03:00:00", L1527, 93.17e9)]
    out, home, cwd = _run(tmp_path, [(e, s[0], s[1], f) for e, s, f in cases])
    seen_kms = []
    for (epoch, source, f_topo), (lsrk, back) in zip(cases, out["results"]):
        expected = expected_lsrk(epoch, source[2], source[3], f_topo)
        assert abs(lsrk - expected) / f_topo * C_KMS < 0.05, (epoch, lsrk, expected)
        assert back == pytest.approx(f_topo, abs=1.0)                 # round trip to 1 Hz
        seen_kms.append((f_topo / lsrk - 1.0) * C_KMS)
    assert max(seen_kms) - min(seen_kms) > 10.0                       # the annual term is really there
    lsrk0 = out["results"][0][0]
    assert lsrk0 == pytest.approx(PINNED[("2023/05/20/06:00:00", "CB68", 245e9)], abs=1e3)
    assert not list(cwd.iterdir()), "CASA wrote into the working directory"
    assert not (home / ".casa").exists(), "CASA wrote into ~/.casa"
    assert (tmp_path / "logs" / "convert.casa.log").is_file()


@pytest.mark.casa
def test_faust_casa_data_chooses_the_measures_directory(tmp_path):
    """A directory of links to the packaged data is a different data dir: it
    must be the one CASA uses."""
    mirror = tmp_path / "site-casa-data"
    mirror.mkdir()
    for item in casa_env.default_data_dir().iterdir():
        (mirror / item.name).symlink_to(item)
    out, home, cwd = _run(tmp_path, [("2023/05/20/06:00:00", CB68[0], CB68[1], 245e9)],
                          {casa_env.ENV_DATA_DIR: str(mirror)})
    assert Path(out["data_dir"]) == mirror.resolve()
    assert Path(out["measurespath"]).resolve() == mirror.resolve()
    assert out["results"][0][0] == pytest.approx(PINNED[("2023/05/20/06:00:00", "CB68", 245e9)], abs=1e3)
    assert not list(cwd.iterdir()) and not (home / ".casa").exists()


def test_bad_casa_data_dir_is_a_user_input_error(tmp_path, monkeypatch):
    empty = tmp_path / "not-casa-data"
    empty.mkdir()
    with pytest.raises(UserInputError, match="not-casa-data.*geodetic"):
        casa_env.resolve_data_dir(empty)
    with pytest.raises(UserInputError, match="does-not-exist"):
        casa_env.resolve_data_dir(tmp_path / "does-not-exist")
    monkeypatch.setenv(casa_env.ENV_DATA_DIR, str(empty))
    with pytest.raises(UserInputError, match=casa_env.ENV_DATA_DIR):
        casa_env.resolve_data_dir(None)


def test_bad_faust_casa_data_stops_the_cli_with_one_line(tmp_path):
    env = {**os.environ, casa_env.ENV_DATA_DIR: str(tmp_path / "nowhere"), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "faust_hpc", "simulate", str(tmp_path / "sim"), "--size", "tiny"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("faust-hpc: error:") and "nowhere" in lines[-1]
    assert not (tmp_path / "sim").exists()
