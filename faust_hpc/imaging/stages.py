"""The pipeline stages, each callable by itself on an :class:`ImageConfig`.

Every stage
- checks its prerequisites first and raises :class:`PrerequisiteError`
  naming the stage to run (nothing is written in that case);
- runs CASA inside its own working directory (``config.stage_workdir``);
- lets tclean write under a temporary image name and renames the products
  into place afterwards, replacing the previous generation cleanly;
- removes the intermediate products the later stages do not need, unless
  ``config.preserve_all_intermediate_products``.

tclean is always given an explicit spectral grid (start, width, nchan on the
LSRK grid of the data), except for the sum-of-weights stamp and the full
dirty cube, which image the data's own grid on purpose (the former to find
the common coverage, the latter for the global RMS, as in the original).
"""
from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from faust_hpc import casa_env
from faust_hpc.catalog import imaging_defaults
from faust_hpc.errors import PrerequisiteError, UserInputError
from faust_hpc.geometry import optimum_size
from faust_hpc.imaging.chunking import SpectralSelection
from faust_hpc.imaging.image_tools import (ImageManager, copy_image, delete_all_extensions,
                                           log_post, publish_tclean_products, remove_stale_temporaries, tasks,
                                           temp_name)
from faust_hpc.imaging import guard, postprocess as pp

if TYPE_CHECKING:  # pragma: no cover
    from faust_hpc.imaging.config import ImageConfig

log = logging.getLogger(__name__)

MASK_METHODS = ("seed+multithresh", "auto-multithresh", "fixed")
NITERMAX = int(imaging_defaults()["niter_max"])


def _tclean_kwargs(config: "ImageConfig", imagename: str, sel: SpectralSelection | None,
                   **overrides: Any) -> dict[str, Any]:
    """tclean arguments common to every stage (the original's set)."""
    dset, spw = config.dset, config.spw
    defaults = imaging_defaults()
    kwargs: dict[str, Any] = dict(
        vis=dset.vis, imagename=imagename, field=dset.field, spw=config.spw_ids,
        specmode=str(defaults["specmode"]), outframe=str(defaults["outframe"]), veltype=str(defaults["veltype"]),
        restfreq=spw.restfreq, imsize=dset.imsize, cell=dset.cell, gridder=dset.gridder,
        weighting=config.weighting_kind, perchanweightdensity=bool(defaults["perchanweightdensity"]),
        pblimit=dset.pblimit, niter=0, interactive=False, parallel=False,
        uvtaper=list(config.uvtaper) if config.uvtaper else [],
    )
    if config.robust is not None:
        kwargs["robust"] = config.robust
    phasecenter = getattr(dset, "phasecenter", "")   # a run file's target with a position
    if phasecenter:
        kwargs["phasecenter"] = phasecenter
    if sel is None:
        kwargs.update(nchan=-1, start="", width="")
    else:
        kwargs.update(nchan=int(sel.nchan), start=sel.start, width=sel.width)
    kwargs.update(overrides)
    return kwargs


def _run_tclean(config: "ImageConfig", final_base: str, stage: str, kwargs: dict[str, Any],
                keep: Iterable[str] | None, seed_files: dict[str, str] | None = None) -> list[str]:
    """Run tclean into a temporary base (seeded with copies of ``seed_files``
    ext -> source), then publish the products under ``final_base``."""
    tmp_base = temp_name(final_base, stage)
    remove_stale_temporaries(os.path.dirname(final_base), os.path.basename(final_base))
    delete_all_extensions(tmp_base)
    for ext, src in (seed_files or {}).items():
        copy_image(src, tmp_base + ext)
    kwargs, armed = guard.arm(stage, dict(kwargs, imagename=tmp_base), config.dirty_imagebase + ".image")
    t0 = time.time()
    with config.stage_workdir(stage):
        log_post(f":: tclean {stage}: {os.path.basename(final_base)} "
                 f"(nchan={kwargs['nchan']}, start={kwargs['start'] or 'data'}, niter={kwargs['niter']})")
        try:
            result = tasks().tclean(**kwargs)
        except Exception:
            delete_all_extensions(tmp_base)
            raise
    if not os.path.exists(tmp_base + ".image"):
        delete_all_extensions(tmp_base)
        raise RuntimeError(f"tclean ({stage}) wrote no image for {final_base}; see the CASA log "
                           f"{_casa_log_hint()}")
    if isinstance(result, dict):
        log.debug("tclean %s: %s", stage, {k: result.get(k) for k in ("iterdone", "nmajordone", "stopcode")})
    try:
        guard.check(armed, result)   # DivergenceError: a runaway clean, stopped at its major-cycle cap
    except Exception:
        delete_all_extensions(tmp_base)
        raise
    published = publish_tclean_products(tmp_base, final_base, keep=keep)
    log_post(f"-- {stage} done in {time.time() - t0:.1f}s: {os.path.basename(final_base)}")
    return published


def _casa_log_hint() -> str:
    return str(casa_env.log_path() or "")


def _keep(config: "ImageConfig", exts: Iterable[str]) -> list[str] | None:
    """Extensions to keep; None (= all) when intermediates are preserved."""
    return None if config.preserve_all_intermediate_products else list(exts)


# ---------------------------------------------------------------------------
def make_tiny_image_stamp(config: "ImageConfig") -> list[str]:
    """A small, coarse cube over the whole SPW, only for its ``.sumwt``
    (common coverage): cell = res/3, imsize = optimum(15 x 3)."""
    config.validate_inputs()
    tiny = imaging_defaults()["tinyimg"]
    oversample = float(tiny["oversample"])
    cell = f"{config.dset.res_arcsec / oversample:.6g}arcsec"
    width = optimum_size(int(float(tiny["width_in_res"]) * oversample))
    kwargs = _tclean_kwargs(config, config.tinyimg_imagebase, None, imsize=[width, width], cell=cell, niter=0)
    out = _run_tclean(config, config.tinyimg_imagebase, "tinyimg", kwargs, keep=_keep(config, [".sumwt", ".image"]))
    out = guard.screen_stamp_noise(out, config.tinyimg_imagebase, f"{config.dset.field} "
                                   f"{config.spw.label}", keep_image=config.preserve_all_intermediate_products)
    sumwt = config.tinyimg_imagebase + ".sumwt"
    with ImageManager(sumwt) as ia:
        data = ia.getchunk()
    if np.all(data == 0):
        raise RuntimeError(f"sum of weights is all zero in {sumwt}: tclean could not make the PSF "
                           f"(check the SPW selection and the CASA log)")
    return out


def make_dirty_cube(config: "ImageConfig") -> list[str]:
    """tclean with niter=0: the RMS source. Unchunked: the data's full grid
    (nchan=-1, as the original); a chunk: the chunk's grid."""
    config.validate_inputs()
    sel = config.spectral_selection if config.is_chunked else None
    kwargs = _tclean_kwargs(config, config.dirty_imagebase, sel, niter=0)
    out = _run_tclean(config, config.dirty_imagebase, "dirty", kwargs,
                      keep=_keep(config, [".image", ".sumwt"]))
    config._rms_cache = None
    return out


def clean_line_nomask(config: "ImageConfig", sigma: float = 4.5,
                      scale_upper_limit: float | None = 60) -> list[str]:
    """Shallow unmasked multiscale clean to ``sigma`` x RMS, without the
    scales at or above ``scale_upper_limit`` pixels (avoid divergence)."""
    scales = list(config.scales) if scale_upper_limit is None else [s for s in config.scales if s < scale_upper_limit]
    if not scales:
        raise UserInputError(f"no multiscale scale below scale_upper_limit={scale_upper_limit} in {config.scales}")
    rms = config.rms  # PrerequisiteError if the dirty cube is missing
    sel = config.spectral_selection
    threshold = f"{float(sigma) * rms!r}Jy"
    kwargs = _tclean_kwargs(config, config.nomask_imagebase, sel, deconvolver="multiscale", scales=scales,
                            smallscalebias=config.smallscalebias, gain=config.gain,
                            cyclefactor=config.cyclefactor, niter=NITERMAX, threshold=threshold, usemask="user",
                            mask="")
    return _run_tclean(config, config.nomask_imagebase, "nomask", kwargs,
                       keep=_keep(config, [".image", ".pb"]))


def make_seed_mask(config: "ImageConfig", sigma: float | Iterable[float] = 5.0) -> str:
    """``<nomask>.summask``: multi-scale threshold mask of the unmasked clean."""
    imagename = config.nomask_imagebase
    if not os.path.exists(imagename + ".image"):
        raise PrerequisiteError(f"{imagename}.image not found: run clean_line_nomask first")
    rms = config.rms
    with config.stage_workdir("seedmask"):
        # FAUST's arcsec scales, or (a run file's target) scales in beams of this image
        scales = config.mask_scales_arcsec(pp.effective_beamwidth_from_image(imagename + ".image")
                                           if config.mask_ang_scales is None else 0.0)
        out = pp.make_multiscale_joint_mask(imagename, rms, sigma=sigma, mask_ang_scales=scales)
        if not config.preserve_all_intermediate_products:
            pp.remove_multiscale_intermediates(imagename, scales)
    return out


def clean_line(config: "ImageConfig", mask_method: str = "seed+multithresh", sigma: float = 3.0,
               ext: str | None = None, restart: bool = False, interactive: bool = False) -> list[str]:
    """The final masked multiscale clean to ``sigma`` x RMS.

    mask_method: ``seed+multithresh`` (auto-multithresh grown from the seed
    mask of :func:`make_seed_mask`), ``auto-multithresh``, or ``fixed`` (the
    existing ``.mask`` kept as is). ``restart`` continues from the existing
    model and mask of ``ext``.
    """
    if mask_method not in MASK_METHODS:
        raise UserInputError(f'invalid mask_method "{mask_method}"; valid values: {", ".join(MASK_METHODS)}')
    imagename = config.get_imagebase(ext=ext)
    seed: dict[str, str] = {}
    if restart:
        if not os.path.exists(imagename + ".model"):
            raise PrerequisiteError(f"{imagename}.model not found: nothing to restart; run clean_line "
                                    f"(ext={ext!r}) without restart first")
        for e in (".model", ".mask", ".psf", ".pb", ".residual", ".sumwt", ".weight"):
            if os.path.exists(imagename + e):
                seed[e] = imagename + e
    if mask_method == "seed+multithresh" and not restart:
        summask = config.nomask_imagebase + ".summask"
        if not os.path.exists(summask):
            raise PrerequisiteError(f"{summask} not found: run make_seed_mask first")
        seed[".mask"] = summask
    if mask_method in ("seed+multithresh", "auto-multithresh"):
        mask_kwargs = dict(config.autom_kwargs)
    else:  # fixed
        if ".mask" not in seed:
            if not os.path.exists(imagename + ".mask"):
                raise PrerequisiteError(f'{imagename}.mask not found: mask_method="fixed" needs an existing '
                                        f"mask; run clean_line first")
            seed[".mask"] = imagename + ".mask"
        mask_kwargs = {"usemask": "user", "mask": ""}
    rms = config.rms
    sel = config.spectral_selection
    threshold = f"{float(sigma) * rms!r}Jy"
    kwargs = _tclean_kwargs(config, imagename, sel, deconvolver="multiscale", scales=list(config.scales),
                            smallscalebias=config.smallscalebias, gain=config.gain, cyclefactor=config.cyclefactor,
                            niter=NITERMAX, threshold=threshold, interactive=bool(interactive),
                            restart=True, **mask_kwargs)
    return _run_tclean(config, imagename, "clean" if ext is None else f"clean_{ext}", kwargs, keep=None,
                       seed_files=seed)


def postprocess(config: "ImageConfig", ext: str | None = None, make_fits: bool = True,
                make_hanning: bool = False, beam: dict | None = None) -> dict[str, Any]:
    """Max-residual check (5.5 sigma), PB correction, common beam (the cube's
    own or ``beam``), PB mask copy, optional Hanning, optional FITS export."""
    imagebase = config.get_imagebase(ext=ext)
    for e in (".image", ".residual", ".pb"):
        if not os.path.exists(imagebase + e):
            raise PrerequisiteError(f"{imagebase}{e} not found: run clean_line"
                                    f"{'' if ext is None else f' (ext={ext!r})'} first")
    outputs: list[str] = []
    with config.stage_workdir("postprocess" if ext is None else f"postprocess_{ext}"):
        resid = pp.check_max_residual(imagebase, sigma=float(imaging_defaults()["max_residual_sigma"]))
        outputs.append(pp.primary_beam_correct(imagebase))
        pb_name = imagebase + ".pb"
        for im_ext in (".image", ".image.pbcor"):
            outputs.append(pp.smooth_cube_to_common_beam(imagebase + im_ext, beam=beam, pbimage=pb_name))
        if make_hanning:
            outputs.append(pp.hanning_smooth_image(imagebase + ".image.common"))
        if make_fits:
            outputs += pp.export_final_products(imagebase, object_name=config.dset.field)
    return {"max_residual": resid, "outputs": outputs}
