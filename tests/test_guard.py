"""The runaway-clean guard's rules (:mod:`faust_hpc.imaging.guard`) on
tclean return values of the documented ``fullsummary=True`` shape; the
real-data runs are in ``test_guard_realdata.py``."""
from __future__ import annotations

import logging
import math

import pytest

from faust_hpc.errors import DivergenceError
from faust_hpc.imaging import guard


def _result(channels: dict[int, tuple[list[float], list[float]]], nmajordone: int, stopcode: int) -> dict:
    """tclean's return value: per channel (peakRes per minor cycle set, modelFlux per set)."""
    planes = {chan: {0: {"startPeakRes": [peak[0]] + peak[:-1], "peakRes": peak, "modelFlux": flux,
                         "iterDone": [10.0] * len(peak)}}
              for chan, (peak, flux) in channels.items()}
    return {"nmajordone": nmajordone, "stopcode": stopcode, "iterdone": 10 * nmajordone,
            "summaryminor": {0: planes}}


def test_cap_follows_the_dynamic_range_and_never_drops_below_the_minimum():
    assert guard.major_cycle_cap(0.1, 0.1) == guard.MIN_MAJOR_CYCLES
    deep = guard.major_cycle_cap(100.0, 0.01)            # 1e4: log(1e4)/log(1.25) = 41.3
    assert deep == 42 + guard.MAJOR_CYCLE_MARGIN
    assert guard.major_cycle_cap(100.0, 0.01, automask=True) == 83 + guard.MAJOR_CYCLE_MARGIN
    assert guard.major_cycle_cap(math.nan, 0.01) == guard.UNKNOWN_PEAK_MAJOR_CYCLES
    assert guard.threshold_jy("0.0123Jy") == pytest.approx(0.0123)
    assert guard.threshold_jy("3mJy") == pytest.approx(0.003)
    assert guard.threshold_jy(0.5) == 0.5


def test_arm_caps_only_deconvolving_calls():
    kwargs = {"niter": 0, "threshold": "0.01Jy"}
    same, armed = guard.arm("dirty", kwargs, None)
    assert same is kwargs and armed.cap is None
    armed_kwargs, armed = guard.arm("nomask", {"niter": 100, "threshold": "0.01Jy"}, None)
    assert armed_kwargs["nmajor"] == armed.cap == guard.UNKNOWN_PEAK_MAJOR_CYCLES
    assert armed_kwargs["fullsummary"] is True
    user_cap, armed = guard.arm("clean", {"niter": 100, "threshold": "0.01Jy", "nmajor": 3}, None)
    assert user_cap["nmajor"] == 3 and armed.cap is None     # an explicit nmajor is the caller's


def test_reaching_the_cap_raises_with_the_reason_and_the_worst_channel():
    armed = guard.Armed("nomask", 13, 0.0103, 0.1335)
    result = _result({0: ([0.133, 0.059, 0.036], [-0.39, -0.42, -0.50]),
                      1: ([0.019, 0.012], [0.005, 0.006])}, nmajordone=14, stopcode=guard.STOPCODE_NMAJOR)
    with pytest.raises(DivergenceError) as info:
        guard.check(armed, result)
    err = info.value
    assert err.stage == "nomask" and err.cap == 13 and err.nmajordone == 14
    assert err.reason.startswith("major-cycle cap reached (14 major cycles done, cap 13")
    assert "channel 0 -0.5 Jy" in err.reason and err.channels[0] == 0
    assert str(err).startswith("tclean nomask diverged: ")


def test_grown_residual_with_negative_flux_raises_one_sign_alone_warns(caplog):
    armed = guard.Armed("clean", 20, 0.01, 0.2)
    both = _result({3: ([0.05, 0.08, 0.12], [-0.2, -0.5, -0.9]), 4: ([0.05, 0.02], [0.1, 0.12])}, 4, 2)
    with pytest.raises(DivergenceError) as info:
        guard.check(armed, both)
    assert info.value.channels == (3,) and "peak residual grew: channel 3 0.05 -> 0.12 Jy" in info.value.reason
    absorption = _result({3: ([0.05, 0.03, 0.02], [-0.2, -0.5, -0.9]), 4: ([0.05, 0.02], [0.1, 0.12])}, 4, 2)
    with caplog.at_level(logging.WARNING, logger="faust_hpc.imaging.guard"):
        guard.check(armed, absorption)
    assert any("model flux strongly negative" in r.getMessage() for r in caplog.records)


def test_a_converged_clean_passes_silently(caplog):
    armed = guard.Armed("nomask", 15, 0.099, 0.77)
    result = _result({c: ([0.7, 0.3, 0.098], [0.5, 0.9, 1.0]) for c in range(4)}, 8, 2)
    with caplog.at_level(logging.WARNING, logger="faust_hpc.imaging.guard"):
        guard.check(armed, result)
    assert not caplog.records


def test_tclean_stopping_itself_for_a_growing_residual_is_divergence(caplog):
    """NGC 5921 at its natural cell: tclean's own rule (stopcode 6, "peak residual
    increased by more than 3 times from the minimum reached") ends the masked
    clean of the noisy channel after 4 cycles, returning normally with that
    channel ruined; that is a diverged chunk, not a done one."""
    armed = guard.Armed("clean", 27, 0.0103, 0.13)
    ruined = _result({0: ([0.1027, 0.4, 1.331], [0.2, 0.1, 0.3]), 1: ([0.05, 0.02], [0.1, 0.12])},
                     nmajordone=4, stopcode=6)
    with pytest.raises(DivergenceError) as info:
        guard.check(armed, ruined)
    assert "tclean stopped itself" in info.value.reason and info.value.channels == (0,)
    assert "channel 0 0.1027 -> 1.331 Jy" in info.value.reason
    # the same stop code without a channel whose residual grew stays tclean's business
    calm = _result({c: ([0.7, 0.3, 0.098], [0.5, 0.9, 1.0]) for c in range(2)}, 3, 6)
    with caplog.at_level(logging.WARNING, logger="faust_hpc.imaging.guard"):
        guard.check(armed, calm)
