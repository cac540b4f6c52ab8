"""No runaway cleans: a bound on tclean's major cycles, a diagnosis when a
clean diverges, and a warning for channels far noisier than the rest.

Why: on the VLA NGC 5921 data (full band, one edge channel with ~16x the
median noise) the unmasked multiscale clean with the documented defaults ran
43 major cycles in 7 minutes while the model flux fell to -1.78 Jy: CASA's
multiscale minor cycle stops "at large scale negative or diverging", a major
cycle follows, and the loop never reaches the threshold. In a batch run one
such chunk would hold a rank for ever.

The guard (:func:`arm` before tclean, :func:`check` after it):

- gives every deconvolving tclean (``niter > 0``) a major-cycle cap
  (tclean's ``nmajor``) derived from the stage's own numbers: the minor
  cycle of a converging clean always takes the peak residual down to at
  most ``maxpsffraction`` (tclean's 0.8) of its value at the start of the
  cycle, so reaching ``threshold`` from the dirty peak takes at most
  ``log(peak / threshold) / log(1 / 0.8)`` cycles; the cap adds
  :data:`MAJOR_CYCLE_MARGIN` and is never below :data:`MIN_MAJOR_CYCLES`
  (:data:`UNKNOWN_PEAK_MAJOR_CYCLES` without a dirty cube to read the peak from).
  A masked clean that grows its mask (auto-multithresh: the ``clean``
  stage) restarts the descent in every region added, so its bound is
  multiplied by :data:`AUTOMASK_CYCLE_FACTOR`. On the simulated CB68 data
  the unmasked clean needs 8 cycles (cap 15), the masked one 12 (cap 27);
  on NGC 5921 the unmasked clean over the noisy channel is stopped at 17.
  A clean that converges stops before it, so its result is unchanged
  (``nmajor`` only matters when reached); ``fullsummary=True`` only adds the
  per-channel history to tclean's return value;
- reads that history after the run and raises
  :class:`~faust_hpc.errors.DivergenceError` when the cap was reached
  (stopcode 9), when tclean stopped itself for a growing peak residual
  (stopcodes 5 and 6: it then returns normally with a ruined channel) and a
  channel's residual did grow, or when one channel shows both signs of divergence: its
  peak residual ended at more than :data:`RESIDUAL_GROWTH` times its start,
  and its model flux ended below ``-NEGATIVE_FLUX_RATIO`` x the largest
  positive model flux of any channel and below
  ``-NEGATIVE_FLUX_THRESHOLDS`` x the threshold. One sign alone is logged
  as a warning (absorption against continuum cleans to negative flux). The
  reason names the rule, the numbers and the worst channels (indices of
  the clean's own grid).

:func:`warn_noisy_channels` is the prepare stage's look at the noise: the
per-channel robust RMS (scaled MAD, the RMS rule of
:func:`~faust_hpc.imaging.postprocess.calc_rms_from_image`) of the
sum-of-weights stamp's dirty image, which tclean makes anyway. The stamp is
coarse (res/3, 15 beams wide) but covers every channel of the SPW, so the
check costs one ``imstat``. The visibility weights would be cheaper still but
do not see it: NGC 5921's noisy edge channel has the same weights as the rest.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
from astropy import units as u

from faust_hpc.errors import DivergenceError

log = logging.getLogger(__name__)

TCLEAN_MAXPSFFRACTION = 0.8      # tclean's default; the stages do not change it
MAJOR_CYCLE_MARGIN = 5
AUTOMASK_CYCLE_FACTOR = 2.0      # auto-multithresh grows the mask between cycles: new regions start high
MIN_MAJOR_CYCLES = 10
UNKNOWN_PEAK_MAJOR_CYCLES = 50   # no dirty cube to derive the cap from (RMS set by hand): a loose bound
STOPCODE_NMAJOR = 9              # tclean: "reached nmajor"
# tclean's own divergence stops: "peak residual increased by more than 3 times
# from the previous major cycle" (5) / "... from the minimum reached" (6).
# tclean then returns normally with the damage done (a channel's model ruined).
STOPCODES_DIVERGED = {5: "tclean stopped itself: peak residual increased by more than 3 times from the "
                         "previous major cycle",
                      6: "tclean stopped itself: peak residual increased by more than 3 times from the "
                         "minimum reached"}
RESIDUAL_GROWTH = 2.0
NEGATIVE_FLUX_RATIO = 1.0
NEGATIVE_FLUX_THRESHOLDS = 10.0
NOISY_CHANNEL_FACTOR = 5.0
WORST_CHANNELS_SHOWN = 5


@dataclass(frozen=True)
class Armed:
    """What :func:`arm` decided for one tclean call."""

    stage: str
    cap: int | None                  # None: no deconvolution, nothing to guard
    threshold_jy: float
    peak_jy: float


def major_cycle_cap(peak_jy: float, threshold_jy: float, automask: bool = False,
                    maxpsffraction: float = TCLEAN_MAXPSFFRACTION) -> int:
    """Major cycles a converging clean may need from ``peak_jy`` to
    ``threshold_jy`` (times :data:`AUTOMASK_CYCLE_FACTOR` with an
    auto-multithresh mask), plus the margin."""
    if not (threshold_jy > 0 and np.isfinite(peak_jy)):
        return UNKNOWN_PEAK_MAJOR_CYCLES
    ratio = max(float(peak_jy) / float(threshold_jy), 1.0)
    needed = math.log(ratio) / math.log(1.0 / maxpsffraction) * (AUTOMASK_CYCLE_FACTOR if automask else 1.0)
    return max(MIN_MAJOR_CYCLES, math.ceil(needed) + MAJOR_CYCLE_MARGIN)


def threshold_jy(threshold: Any) -> float:
    """tclean's ``threshold`` ("0.01Jy", "3mJy", a number in Jy) in Jy."""
    if isinstance(threshold, (int, float)):
        return float(threshold)
    try:
        quantity = u.Quantity(str(threshold))
        return float(quantity.value if quantity.unit == u.dimensionless_unscaled else quantity.to_value(u.Jy))
    except (TypeError, ValueError, u.UnitsError):
        return 0.0


def image_peak_jy(imagename: str) -> float:
    """Largest |pixel| of an image (the dirty cube the threshold was derived from)."""
    import os

    from faust_hpc.imaging.image_tools import tasks

    if not os.path.isdir(imagename):
        return float("nan")
    stats = tasks().imstat(imagename=imagename)
    return float(max(abs(float(stats["max"][0])), abs(float(stats["min"][0]))))


def arm(stage: str, kwargs: dict[str, Any], dirty_image: str | None) -> tuple[dict[str, Any], Armed]:
    """tclean arguments with the guard's cap (``nmajor``) and ``fullsummary``
    for a deconvolving call; unchanged for ``niter == 0``. The cap is derived
    from the peak of ``dirty_image`` (when given) and the call's threshold."""
    thresh = threshold_jy(kwargs.get("threshold", 0.0))
    if int(kwargs.get("niter", 0)) <= 0 or int(kwargs.get("nmajor", -1)) >= 0:
        return kwargs, Armed(stage, None, thresh, float("nan"))
    peak = image_peak_jy(dirty_image) if dirty_image else float("nan")   # NaN: no dirty cube
    cap = major_cycle_cap(peak, thresh, automask=kwargs.get("usemask") == "auto-multithresh")
    log.debug("guard %s: peak %.4g Jy, threshold %.4g Jy -> at most %d major cycles", stage, peak, thresh, cap)
    return dict(kwargs, nmajor=cap, fullsummary=True), Armed(stage, cap, thresh, peak)


@dataclass(frozen=True)
class ChannelHistory:
    """One image plane's convergence history from tclean's ``summaryminor``."""

    channel: int
    start_peak_res: float
    end_peak_res: float
    end_model_flux: float


def channel_histories(result: dict[str, Any]) -> list[ChannelHistory]:
    """Per channel (first Stokes plane): the peak residual at the start of the
    first minor cycle set and at the end of the last, and the final model flux.
    ``summaryminor`` is ``{field: {channel: {stokes: {key: [per minor cycle set]}}}}``."""
    out: list[ChannelHistory] = []
    minor = result.get("summaryminor") if isinstance(result, dict) else None
    if not isinstance(minor, dict):
        return out
    for field in minor.values():
        if not isinstance(field, dict):
            continue
        for chan, planes in sorted(field.items()):
            plane = next(iter(planes.values()), None) if isinstance(planes, dict) else None
            if not plane or not len(plane.get("peakRes", [])):
                continue
            start = plane.get("startPeakRes", plane["peakRes"])
            out.append(ChannelHistory(int(chan), float(start[0]), float(plane["peakRes"][-1]),
                                      float(plane.get("modelFlux", [0.0])[-1])))
        break   # one field per call in this pipeline
    return out


def check(armed: Armed, result: Any) -> None:
    """Raise :class:`DivergenceError` when the tclean behind ``result``
    diverged: it reached its major-cycle cap, or one channel both ended with
    a grown peak residual and a strongly negative model flux. Either sign
    alone (an absorption line against continuum cleans to negative flux) is
    only logged."""
    if armed.cap is None or not isinstance(result, dict):
        return
    nmajor = int(result.get("nmajordone", 0))
    stopcode = int(result.get("stopcode", 0))
    capped = stopcode == STOPCODE_NMAJOR
    hist = channel_histories(result)
    grown = sorted((h for h in hist if h.start_peak_res > 0
                    and h.end_peak_res > RESIDUAL_GROWTH * h.start_peak_res),
                   key=lambda h: -h.end_peak_res / h.start_peak_res)
    best_positive = max((h.end_model_flux for h in hist), default=0.0)
    floor = -max(NEGATIVE_FLUX_RATIO * max(best_positive, 0.0), NEGATIVE_FLUX_THRESHOLDS * armed.threshold_jy)
    negative = sorted((h for h in hist if h.end_model_flux < floor), key=lambda h: h.end_model_flux)
    both = {h.channel for h in grown} & {h.channel for h in negative}
    # tclean's own divergence stop, confirmed by a channel whose residual grew
    self_stopped = stopcode in STOPCODES_DIVERGED and bool(grown)
    signs: list[str] = []
    if negative:
        signs.append(f"model flux strongly negative (below {floor:.4g} Jy): " + ", ".join(
            f"channel {h.channel} {h.end_model_flux:.4g} Jy" for h in negative[:WORST_CHANNELS_SHOWN])
            + f"; largest positive channel model flux {best_positive:.4g} Jy")
    if grown:
        signs.append("peak residual grew: " + ", ".join(
            f"channel {h.channel} {h.start_peak_res:.4g} -> {h.end_peak_res:.4g} Jy"
            for h in grown[:WORST_CHANNELS_SHOWN]))
    if not (capped or both or self_stopped):
        if signs:
            log.warning("tclean %s: %s (not stopped: converged within %d major cycles)", armed.stage,
                        "; ".join(signs), nmajor)
        return
    rules = [f"major-cycle cap reached ({nmajor} major cycles done, cap {armed.cap} from dirty peak "
             f"{armed.peak_jy:.4g} Jy / threshold {armed.threshold_jy:.4g} Jy)"] if capped else []
    if self_stopped:
        rules.append(f"{STOPCODES_DIVERGED[stopcode]} after {nmajor} major cycles")
    worst = _worst_channels(grown, negative, hist)
    raise DivergenceError(armed.stage, "; ".join(rules + signs) + f"; diverging channels: "
                          f"{', '.join(map(str, worst))}", nmajordone=nmajor, cap=armed.cap, channels=tuple(worst))


def _worst_channels(grown: list[ChannelHistory], negative: list[ChannelHistory],
                    hist: list[ChannelHistory]) -> list[int]:
    chosen: list[int] = []
    for h in [*negative, *grown]:
        if h.channel not in chosen:
            chosen.append(h.channel)
    if not chosen and hist:   # cap reached without another sign: the channels with most residual left
        chosen = [h.channel for h in sorted(hist, key=lambda h: -h.end_peak_res)]
    return chosen[:WORST_CHANNELS_SHOWN]


# ---------------------------------------------------------------------------
def noisy_channels(imagename: str, factor: float = NOISY_CHANNEL_FACTOR,
                   covered: np.ndarray | None = None) -> tuple[list[int], np.ndarray]:
    """Channels whose robust RMS exceeds ``factor`` x the median over
    channels, and the per-channel RMS / median. With ``covered`` (a boolean
    per channel) only those channels count: the others fall outside the
    common coverage, are never imaged, and are noisy by construction."""
    from faust_hpc.imaging.image_tools import tasks

    stats = tasks().imstat(imagename=imagename, axes=[0, 1])
    mad = np.asarray(stats["medabsdevmed"], dtype=float).ravel()
    usable = np.isfinite(mad) & (mad > 0)
    if covered is not None and len(covered) == len(mad):
        usable &= np.asarray(covered, dtype=bool)
    if not usable.any():
        return [], np.full(mad.shape, np.nan)
    ratio = mad / float(np.median(mad[usable]))
    return [int(c) for c in np.flatnonzero(usable & (ratio > factor))], ratio


def warn_noisy_channels(imagename: str, what: str, freqs_hz: Iterable[float] | None = None,
                        covered: np.ndarray | None = None) -> list[int]:
    """Log a warning naming the channels of ``imagename`` far noisier than the
    rest (they are where a clean diverges); returns them."""
    chans, ratio = noisy_channels(imagename, covered=covered)
    if chans:
        freqs = list(freqs_hz) if freqs_hz is not None else []
        named = ", ".join(f"{c} ({ratio[c]:.1f}x" + (f", {freqs[c] / 1e9:.6f} GHz)" if c < len(freqs) else ")")
                          for c in chans)
        log.warning("%s: channel(s) %s have more than %.0fx the median noise; a clean over them may diverge "
                    "(the guard stops it and flags the chunk)", what, named, NOISY_CHANNEL_FACTOR)
    return chans


def screen_stamp_noise(published: list[str], stamp_base: str, what: str, keep_image: bool = False) -> list[str]:
    """The prepare stage's noise check on the sum-of-weights stamp
    (``<stamp_base>.image`` and ``.sumwt``; :func:`warn_noisy_channels`) over
    the channels of the common coverage. The image is removed afterwards
    unless ``keep_image`` (intermediates preserved). Returns ``published``
    without what was removed."""
    import os

    from faust_hpc.catalog import imaging_defaults
    from faust_hpc.imaging.chunking import read_sumwt
    from faust_hpc.imaging.image_tools import safely_remove_file

    image = stamp_base + ".image"
    if not os.path.exists(image):
        return published
    try:
        sumwt, freqs = read_sumwt(stamp_base)
        covered = sumwt > float(imaging_defaults()["common_coverage_fraction"]) * np.nanmedian(sumwt)
        warn_noisy_channels(image, what, freqs, covered)
    finally:
        if not keep_image:
            safely_remove_file(image)
    return [p for p in published if keep_image or p != image]
