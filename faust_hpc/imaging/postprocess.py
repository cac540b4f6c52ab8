"""Image-level operations: statistics, masks, smoothing, PB correction, FITS.

These are the original pipeline's small functions on image *names*; the
pipeline stages in :mod:`faust_hpc.imaging.stages` compose them. Each one
that writes a product writes it under a temporary name and renames it into
place (:func:`~faust_hpc.imaging.image_tools.publish`).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from faust_hpc.catalog import imaging_defaults
from faust_hpc.fits_headers import set_archive_keywords
from faust_hpc.layout import FINAL_FITS_EXTS
from faust_hpc.layout import parse as parse_product
from faust_hpc.imaging.image_tools import (ImageManager, if_exists_remove, log_post, publish,
                                           safely_remove_file, tasks, temp_name, tools)

log = logging.getLogger(__name__)

MAD_TO_RMS = float(imaging_defaults()["mad_to_rms"])


def _require(path: str, what: str = "image") -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f'{what} not found: "{path}"')


def export_fits(imagename: str, velocity: bool = False, overwrite: bool = True,
                object_name: str | None = None) -> str:
    """``<imagename>.fits``: 4-D (RA, Dec, FREQ, STOKES) as the original's
    delivered cubes (no ``dropstokes``), with the archive header keywords the
    original set before delivery (``util/fix_header.py``): ``OBJECT`` (the
    field; ``object_name``, or the field named by the file), ``INSTRUME =
    'ALMA'``, ``DATAMIN`` and ``DATAMAX`` (over the unmasked pixels). The
    keywords are set on the temporary file, before it is renamed into place."""
    _require(imagename)
    final = imagename + ".fits"
    if os.path.exists(final) and not overwrite:
        return final
    tmp = temp_name(final)
    if_exists_remove(tmp)
    tasks().exportfits(imagename=imagename, fitsimage=tmp, dropstokes=False, velocity=velocity,
                       overwrite=True)
    # DATAMIN/DATAMAX from the FITS itself (masked pixels are NaN there): one read pass
    set_archive_keywords(tmp, object_name or _field_of(imagename))
    return publish(tmp, final)


def _field_of(imagename: str) -> str:
    return parse_product(imagename).field or ""


def export_final_products(imagebase: str, object_name: str | None = None) -> list[str]:
    """The FITS files the original delivers for one image: the common-beam,
    primary-beam corrected cube, the clean mask and the primary beam
    (``<imagebase>.<ext>`` for each of :data:`faust_hpc.layout.FINAL_FITS_EXTS`)."""
    written = []
    for fits_ext in FINAL_FITS_EXTS:
        written.append(export_fits(f"{imagebase}.{fits_ext.removesuffix('.fits')}", object_name=object_name))
    return written


def get_freq_axis_from_image(imagename: str) -> tuple[np.ndarray, str]:
    """Channel-centre frequencies of an image's spectral axis, and their unit."""
    with ImageManager(imagename) as ia:
        csys = ia.coordsys()
        shape = ia.shape()
        rec = csys.torecord()
        spec_axis = csys.findaxisbyname("spectral")
        csys.done()
    spec = next(v for k, v in rec.items() if k.startswith("spectral"))
    wcs = spec["wcs"]
    nchan = int(shape[spec_axis])
    faxis = wcs["crval"] + (np.arange(nchan) - wcs["crpix"]) * wcs["cdelt"]
    return faxis, spec["unit"]


def primary_beam_correct(imagebase: str) -> str:
    """``<base>.image`` / ``<base>.pb`` -> ``<base>.image.pbcor``."""
    image, pb = imagebase + ".image", imagebase + ".pb"
    _require(image)
    _require(pb, "primary beam image")
    final = image + ".pbcor"
    tmp = temp_name(final)
    if_exists_remove(tmp)
    log_post(f":: Primary beam correcting image: {imagebase}")
    tasks().impbcor(imagename=image, pbimage=pb, outfile=tmp, overwrite=True)
    return publish(tmp, final)


def hanning_smooth_image(imagename: str, overwrite: bool = True) -> str:
    """``<imagename>.hanning`` (same channel count: ``drop=False``)."""
    _require(imagename)
    final = imagename + ".hanning"
    if os.path.exists(final) and not overwrite:
        return final
    tmp = temp_name(final)
    if_exists_remove(tmp)
    log_post(":: Creating Hanning smoothed image")
    with ImageManager(imagename) as ia:
        ia.hanning(outfile=tmp, drop=False, dmethod="mean", overwrite=True).done()
    return publish(tmp, final)


def beam_to_strings(beam: dict[str, Any]) -> dict[str, str]:
    """A CASA beam record ({'major': {'value', 'unit'}, ...}) -> imsmooth's
    ``beam`` argument ({'major': '0.41arcsec', ...})."""
    out = {}
    for key, name in (("major", "major"), ("minor", "minor"), ("pa", "pa")):
        item = beam.get(key, beam.get("positionangle")) if key == "pa" else beam[key]
        if isinstance(item, str):
            out[name] = item
        else:
            out[name] = f"{float(item['value'])!r}{item['unit']}"
    return out


def smooth_cube_to_common_beam(imagename: str, beam: dict[str, Any] | None = None,
                               pbimage: str | None = None) -> str:
    """``<imagename>.common``: per-plane beams -> one beam (the cube's common
    beam, or ``beam`` when given, e.g. the common beam across chunks). With
    ``pbimage``, its T/F mask (which imsmooth drops) is copied in before the
    cube is renamed into place, so a crash never leaves an unmasked
    finished-looking cube."""
    _require(imagename)
    final = imagename + ".common"
    tmp = temp_name(final)
    if_exists_remove(tmp)
    log_post(f":: Smoothing cube to common beam scale: {imagename}")
    if beam is None:
        tasks().imsmooth(imagename=imagename, kernel="commonbeam", outfile=tmp, overwrite=True)
    else:
        tasks().imsmooth(imagename=imagename, kernel="gaussian", beam=beam_to_strings(beam),
                         targetres=True, outfile=tmp, overwrite=True)
    if pbimage is not None:
        copy_pb_mask(tmp, pbimage)
    return publish(tmp, final)


def image_has_mask(imagename: str, mask: str = "mask0") -> bool:
    with ImageManager(imagename) as ia:
        return mask in list(ia.maskhandler("get"))


def copy_pb_mask(imagename: str, pbimage: str) -> bool:
    """Copy the primary beam's T/F mask into ``imagename`` (imsmooth drops it).
    Returns False when the PB has no mask (single-array runs with negative
    pblimit write none)."""
    _require(imagename)
    _require(pbimage, "primary beam image")
    if not image_has_mask(pbimage):
        log_post(f"-- no mask0 in {pbimage}; nothing to copy", "WARN")
        return False
    log_post(f":: Copying primary beam mask into: {imagename}")
    tasks().makemask(mode="copy", inpimage=pbimage, inpmask=pbimage + ":mask0",
                     output=imagename + ":mask0", overwrite=True)
    with ImageManager(imagename, cache=False) as ia:
        ia.maskhandler("set", "mask0")
    return True


def calc_rms_from_image(imagename: str, chan_expr: str | None = None) -> float:
    """Global RMS: ``MAD_TO_RMS`` x the median over channels of each channel's
    median absolute deviation (robust against channels with emission)."""
    _require(imagename)
    kwargs = {"chans": chan_expr} if chan_expr else {}
    stats = tasks().imstat(imagename=imagename, axes=[0, 1], **kwargs)
    mad = np.asarray(stats["medabsdevmed"], dtype=float)
    rms = MAD_TO_RMS * float(np.nanmedian(mad))
    log_post(f"-- RMS of {os.path.basename(imagename)}: {rms!r}")
    return rms


def create_mask_from_threshold(infile: str, outfile: str, thresh: float, overwrite: bool = True) -> str:
    """1/0 mask of ``infile > thresh`` (Jy)."""
    _require(infile)
    if os.path.exists(outfile) and not overwrite:
        return outfile
    tmp = temp_name(outfile)
    if_exists_remove(tmp)
    tasks().immath(imagename=infile, mode="evalexpr", outfile=tmp,
                   expr=f"iif(IM0>{float(thresh)!r},1,0)")
    return publish(tmp, outfile)


def effective_beamwidth_from_image(imagename: str) -> float:
    """Median geometric-mean beam width (arcsec) over planes, or of the single beam."""
    with ImageManager(imagename) as ia:
        info = ia.restoringbeam()
    if "beams" in info:
        widths = []
        for chan in info["beams"].values():
            b = chan["*0"]
            widths.append(np.sqrt(_arcsec(b["major"]) * _arcsec(b["minor"])))
        return float(np.median(widths))
    if "major" in info:
        return float(np.sqrt(_arcsec(info["major"]) * _arcsec(info["minor"])))
    raise ValueError(f"no beam information in {imagename}")


def _arcsec(q: dict[str, Any]) -> float:
    return float(tools().quanta().convert(q, "arcsec")["value"])


def smooth_image_name(imagename: str, scale: float) -> str:
    return f"{imagename}_smooth{scale:.3f}"


def make_multiscale_joint_mask(imagename: str, rms: float, sigma: float | Iterable[float] = 5.0,
                               mask_ang_scales: Iterable[float] = (0, 1, 3)) -> str:
    """``<imagename>.summask``: union of ``sigma x rms`` thresholds of the
    restored image smoothed to each angular scale (arcsec FWHM; 0 = unsmoothed).
    On smoothed images the threshold grows with the beam, ``max(1, scale /
    beamwidth)``, because their noise in Jy/beam is larger.
    """
    scales = [float(s) for s in mask_ang_scales]
    if isinstance(sigma, Iterable) and not isinstance(sigma, (str, bytes)):
        sigmas = [float(s) for s in sigma]
        if len(sigmas) != len(scales):
            raise ValueError(f"sigma has {len(sigmas)} values but mask_ang_scales has {len(scales)}")
    else:
        sigmas = [float(sigma)] * len(scales)
    thresholds = [s * rms for s in sigmas]
    log_post(":: Creating threshold based mask")
    original = f"{imagename}.image"
    pb_image = f"{imagename}.pb"
    _require(original)
    beamwidth = effective_beamwidth_from_image(original)
    mask_files = []
    for thresh, scale in zip(thresholds, scales):
        if scale < 0:
            raise ValueError(f"negative smoothing scale {scale}")
        base = smooth_image_name(imagename, scale)
        mask_image = base + ".mask"
        if scale == 0:
            create_mask_from_threshold(original, mask_image, thresh)
        else:
            smooth_image = base + ".image"
            tmp = temp_name(smooth_image)
            if_exists_remove(tmp)
            tasks().imsmooth(imagename=original, kernel="gauss", major=f"{scale!r}arcsec",
                             minor=f"{scale!r}arcsec", pa="0deg", targetres=True, outfile=tmp)
            if os.path.exists(pb_image):
                copy_pb_mask(tmp, pb_image)
            publish(tmp, smooth_image)
            beam_factor = max(1.0, scale / beamwidth)
            create_mask_from_threshold(smooth_image, mask_image, beam_factor * thresh)
        mask_files.append(mask_image)
    outfile = f"{imagename}.summask"
    tmp = temp_name(outfile)
    if_exists_remove(tmp)
    sum_expr = "+".join(f"IM{i}" for i in range(len(mask_files)))
    tasks().immath(imagename=mask_files, mode="evalexpr", outfile=tmp, expr=f"iif({sum_expr}>0,1,0)")
    publish(tmp, outfile)
    log_post(f"-- joint mask file written to: {outfile}")
    return outfile


def remove_multiscale_intermediates(imagename: str, mask_ang_scales: Iterable[float]) -> None:
    for scale in mask_ang_scales:
        base = smooth_image_name(imagename, float(scale))
        if_exists_remove(base + ".image")
        if_exists_remove(base + ".mask")


def check_max_residual(imagebase: str, sigma: float = 5.5) -> dict[str, Any]:
    """Compare the residual's extreme value with ``sigma`` x its MAD-based RMS.
    Logs a warning when exceeded (as the original) and returns the numbers."""
    imagename = f"{imagebase}.residual"
    _require(imagename, "residual image")
    stats = tasks().imstat(imagename=imagename)
    rms = MAD_TO_RMS * float(stats["medabsdevmed"][0])
    v_max, v_min = float(stats["max"][0]), float(stats["min"][0])
    max_resid = max(v_max, abs(v_min)) / rms if rms > 0 else float("inf")
    result = {"rms": rms, "max": v_max, "min": v_min, "max_sigma": max_resid, "threshold_sigma": sigma,
              "exceeded": bool(max_resid > sigma), "maxpos": [int(v) for v in stats["maxpos"]],
              "minpos": [int(v) for v in stats["minpos"]]}
    if result["exceeded"]:
        log_post(f"!! WARNING: maximum residual threshold exceeded in {imagename}: "
                 f"{max_resid:.2f} sigma > {sigma} (max {v_max} at {result['maxpos']}, "
                 f"min {v_min} at {result['minpos']})", "WARN")
    else:
        log_post(f"-- maximum residual {max_resid:.2f} sigma (threshold {sigma})")
    return result


def common_beam_of_image(imagename: str) -> dict[str, Any]:
    """``ia.commonbeam()`` (smallest beam enclosing all per-plane beams)."""
    with ImageManager(imagename) as ia:
        return ia.commonbeam()


def plane_beams_of_image(imagename: str) -> list[dict[str, Any]]:
    """Every plane's restoring beam (one entry for a single-beam image)."""
    with ImageManager(imagename) as ia:
        info = ia.restoringbeam()
    if "beams" in info:
        return [chan["*0"] for chan in info["beams"].values()]
    return [info] if "major" in info else []


def _radio_beam(beam: dict[str, Any]):
    import astropy.units as u
    from radio_beam import Beam

    pa = beam.get("pa", beam.get("positionangle"))
    return Beam(major=u.Quantity(beam["major"]["value"], beam["major"]["unit"]),
                minor=u.Quantity(beam["minor"]["value"], beam["minor"]["unit"]),
                pa=u.Quantity(pa["value"], pa["unit"]))


def _casa_beam(beam: Any) -> dict[str, Any]:
    import astropy.units as u

    return {"major": {"value": float(beam.major.to_value(u.arcsec)), "unit": "arcsec"},
            "minor": {"value": float(beam.minor.to_value(u.arcsec)), "unit": "arcsec"},
            "pa": {"value": float(beam.pa.to_value(u.deg)), "unit": "deg"}}


def _contains(big: Any, small: Any) -> bool:
    """Can ``small`` be convolved up to ``big``? (radio-beam's deconvolution
    of ``small`` from ``big`` exists)."""
    from radio_beam.utils import BeamError

    try:
        big.deconvolve(small)
    except (BeamError, ValueError):
        return False
    return True


def choose_common_beam(cube_beams: list[dict[str, Any]], plane_beams: Iterable[Iterable[dict[str, Any]]],
                       factor: float) -> tuple[dict[str, Any], str | None]:
    """The common beam across chunks, by the original's rule, proven.

    The original takes the largest-area beam among the chunks' own common
    beams (``cube_beams``) and multiplies its major and minor axes by
    ``factor`` (1.01). That beam must contain every plane's beam of every
    chunk (``plane_beams``) for imsmooth to reach it; with radio-beam this is
    checked plane by plane. If one plane's beam does not fit (position angles
    can differ between chunks), radio-beam's smallest common beam of all
    planes is used instead, and the reason is logged and returned.

    Returns ``(beam record, None)`` or ``(beam record, reason)``.
    """
    import astropy.units as u
    from radio_beam import Beams

    if not cube_beams:
        raise ValueError("no chunk beam to choose a common beam from")
    areas = [float(b["major"]["value"]) * float(b["minor"]["value"]) for b in cube_beams]
    if any(np.isnan(a) for a in areas):
        raise RuntimeError("a chunk's common beam is NaN")
    largest = _radio_beam(cube_beams[int(np.argmax(areas))])
    chosen = type(largest)(major=largest.major * factor, minor=largest.minor * factor, pa=largest.pa)
    unique: dict[tuple[float, float, float], Any] = {}
    for planes in plane_beams:
        for plane in planes:
            b = _radio_beam(plane)
            key = (b.major.to_value(u.arcsec), b.minor.to_value(u.arcsec), b.pa.to_value(u.deg))
            unique.setdefault(key, b)
    misfits = [b for b in unique.values() if not _contains(chosen, b)]
    if not misfits:
        return _casa_beam(chosen), None
    worst = misfits[0]
    reason = (f"the largest chunk beam x {factor} ({chosen.major.to_value(u.arcsec):.4f}\" x "
              f"{chosen.minor.to_value(u.arcsec):.4f}\" at {chosen.pa.to_value(u.deg):.1f} deg) does not contain "
              f"{len(misfits)} plane beam(s), e.g. {worst.major.to_value(u.arcsec):.4f}\" x "
              f"{worst.minor.to_value(u.arcsec):.4f}\" at {worst.pa.to_value(u.deg):.1f} deg: using radio-beam's "
              f"smallest common beam instead")
    keys = list(unique)
    beams = Beams(major=[k[0] for k in keys] * u.arcsec, minor=[k[1] for k in keys] * u.arcsec,
                  pa=[k[2] for k in keys] * u.deg)
    common = beams.common_beam()
    log_post(f"!! {reason}: {common.major.to_value(u.arcsec):.4f}\" x {common.minor.to_value(u.arcsec):.4f}\" "
             f"at {common.pa.to_value(u.deg):.1f} deg", "WARN")
    return _casa_beam(common), reason


def common_beam_across_images(imagenames: list[str], factor: float | None = None) -> dict[str, Any]:
    """:func:`choose_common_beam` over CASA images (the chunks' ``.image``)."""
    factor = float(imaging_defaults()["chunk_common_beam_fudge"] if factor is None else factor)
    for name in imagenames:
        _require(name)
    beam, _ = choose_common_beam([common_beam_of_image(n) for n in imagenames],
                                 [plane_beams_of_image(n) for n in imagenames], factor)
    return beam


def concat_images(infiles: list[str], outfile: str) -> str:
    """Concatenate images along the spectral axis into a contiguous (paged)
    cube; ``reorder`` keeps the frequency axis monotonic, ``relax=False``
    refuses gaps."""
    for f in infiles:
        _require(f)
    tmp = temp_name(outfile)
    if_exists_remove(tmp)
    if len(infiles) == 1:   # one chunk: imageconcat refuses a single input; the copy is the cube
        from faust_hpc.imaging.image_tools import copy_image

        copy_image(infiles[0], tmp)
        return publish(tmp, outfile)
    log_post(f':: Concatenating file "{outfile}"')
    ia = tools().image()
    try:
        ia.imageconcat(outfile=tmp, infiles=list(infiles), axis=-1, relax=False, reorder=True,
                       overwrite=True).done()
    finally:
        ia.done()
    _restore_concatenated_mask(infiles, tmp)
    return publish(tmp, outfile)


def _restore_concatenated_mask(infiles: list[str], outfile: str) -> None:
    """imageconcat of tclean/imsmooth chunks can leave the output without a
    default pixel mask (seen: a non-default mask ``T``), which would drop the
    primary-beam blanking from the final cube and FITS. Rebuild ``mask0``
    from the inputs' own masks, one plane at a time (bounded memory)."""
    masked = [f for f in infiles if image_has_mask(f)]
    if not masked:
        return
    with ImageManager(outfile, cache=False) as out:
        if "mask0" in list(out.maskhandler("default")):
            return
        out.calcmask("T", name="mask0")  # all good; the inputs' masks are copied below
        spec_axis = len(out.shape()) - 1
        out_csys = out.coordsys()
        regions = tools().regionmanager()
        for name in infiles:
            with ImageManager(name) as im:
                shape = list(im.shape())
                # where this input's first plane landed (reorder=True may sort the inputs)
                first_world = im.coordsys().toworld([0] * len(shape), "n")["numeric"]
                offset = int(round(out_csys.topixel(first_world)["numeric"][spec_axis]))
                for chan in range(shape[spec_axis]):
                    blc = [0] * len(shape)
                    blc[spec_axis] = chan
                    trc = [n - 1 for n in shape]
                    trc[spec_axis] = chan
                    plane_mask = im.getchunk(blc=blc, trc=trc, getmask=True)
                    out_blc = list(blc)
                    out_blc[spec_axis] = offset + chan
                    out.putregion(pixelmask=plane_mask, region=regions.box(
                        blc=out_blc, trc=[*trc[:spec_axis], offset + chan]))
        out_csys.done()
        regions.done()
        out.maskhandler("set", "mask0")


__all__ = [
    "MAD_TO_RMS", "export_fits", "export_final_products", "choose_common_beam",
    "common_beam_across_images", "plane_beams_of_image", "get_freq_axis_from_image", "primary_beam_correct",
    "hanning_smooth_image", "smooth_cube_to_common_beam", "copy_pb_mask", "calc_rms_from_image",
    "create_mask_from_threshold", "effective_beamwidth_from_image", "make_multiscale_joint_mask",
    "check_max_residual", "common_beam_of_image", "concat_images", "beam_to_strings",
    "remove_multiscale_intermediates", "safely_remove_file",
]
