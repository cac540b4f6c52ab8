"""Plausible J2000 positions of the FAUST targets.

The simulated field sits where the real protostar is (to ~1", from the
literature), so hour angles, elevations, shadowing and the TOPO<->LSRK
Doppler correction of the simulated observations are those of the real
observations.
"""
from __future__ import annotations

from faust_hpc.catalog import ALL_FIELD_NAMES

FIELD_POSITIONS: dict[str, tuple[str, str]] = {
    "BHB07-11": ("17h11m23.10s", "-27d24m32.9s"),
    "CB68": ("16h57m19.64s", "-16d09m24.0s"),
    "Elias29": ("16h27m09.42s", "-24d37m18.9s"),
    "GSS30": ("16h26m21.36s", "-24d23m04.3s"),
    "IRAS_15398-3359": ("15h43m02.24s", "-34d09m06.9s"),
    "IRS63": ("16h31m35.65s", "-24d01m29.9s"),
    "L1527": ("04h39m53.88s", "+26d03m09.4s"),
    "L1551_IRS5": ("04h31m34.16s", "+18d08m04.9s"),
    "L483": ("18h17m29.95s", "-04d39m39.6s"),
    "NGC1333_IRAS4A1A2": ("03h29m10.50s", "+31d13m31.0s"),
    "NGC1333_IRAS4C": ("03h29m13.55s", "+31d13m58.2s"),
    "R_CrA_IRS7B": ("19h01m56.42s", "-36d57m28.4s"),
    "VLA1623A": ("16h26m26.39s", "-24d24m30.7s"),
}

assert set(FIELD_POSITIONS) == set(ALL_FIELD_NAMES), "a FAUST field lacks a simulated position"


def field_position(field: str) -> tuple[str, str]:
    """(RA, Dec) as CASA sexagesimal strings."""
    return FIELD_POSITIONS[field]
