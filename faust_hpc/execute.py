"""The unit executor: run one work unit of the plan with the imaging engine.

``run_unit(spec, unit, workdir) -> UnitResult`` is called by the launcher in
a child process per unit (after ``casa_env.configure``): under ``faust-hpc
run`` and in the serial mode of ``faust-hpc image`` / ``moments`` / ``qa``
(whose options reach the moments and qa units as ``unit.params``). Units of one image key:

- ``prepare``: sum-of-weights stamp -> common coverage (or the cut-out
  window) -> chunk list, frozen in ``<imagebase>_<ext>.chunks.json``;
  ``info = {"nchunks": n, "chunks": [...]}`` lets the plan expand.
- ``chunkNN``: dirty -> nomask -> seed mask -> clean (seed+multithresh) of
  that chunk only (its RMS from its own dirty cube, as the original).
- ``beam``: the common beam across all chunks, recorded in
  ``<imagebase>_<ext>.common_beam.json`` (exact floats).
- ``postNN``: postprocess a group of chunks (residual check, pbcor,
  smoothing to the recorded common beam, PB mask).
- ``concatNN``: concatenation of one group of final image extensions
  (:data:`~faust_hpc.layout.FINAL_PRODUCT_EXTS`, the unit's ``ext_start`` /
  ``ext_count``) from the chunks, and the FITS export of those that have one.
- ``finalize``: checks that every final product is there and reports them
  (what moments, QA, resume and status follow).
  Together these are the steps of ``ChunkedConfigSet.postprocess``
  (the same methods), so the products are the serial finalize's, bit for bit.
  Chunk images stay (as the original's): ``postprocess(use_existing_except=...)``
  and ``faust-hpc rerun --chunk`` redo one chunk against the others' images.
- ``moments`` / ``qa``: the products layer on the concatenated image.

Every unit reads the frozen chunk list written by prepare, so chunk
boundaries are identical on 1 rank, N ranks, or after a resume. Outputs are
absolute paths under ``spec.product_dir``; the launcher records a unit as
done only when they all exist.

Every unit's ``info`` also carries what it cost (:class:`~faust_hpc.run.records.UnitCost`
under ``info["cost"]``): seconds per stage and the sizes the cost model is
driven by (channels, pixels per plane, visibility rows per channel -- counted
by the prepare unit, which reads every visibility anyway). Earlier runs'
records are what :mod:`faust_hpc.costfit` learns the cost constants from.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path
from typing import Any, Iterable

from faust_hpc.errors import PrerequisiteError, UserInputError
from faust_hpc.imaging import ImageConfig
from faust_hpc.imaging.dataset import visibility_rows
from faust_hpc.imaging.image_tools import TEMP_PREFIX, glob_escape
from faust_hpc.layout import (CHUNK_POST_EXTS, CHUNK_PRODUCT_EXTS, FINAL_PRODUCT_EXTS, IMAGE_EXT,
                              RunLayout, final_fits_ext)
from faust_hpc.products import moments, qa
from faust_hpc.run.records import COST_INFO_KEY, UnitCost
from faust_hpc.units import ImageKey, Unit

log = logging.getLogger(__name__)


@dataclass
class UnitResult:
    """What a unit produced (paths) and what the launcher should know."""

    outputs: list[str]
    info: dict[str, Any] = field(default_factory=dict)


def weighting_value(text: str | float) -> float | str:
    """``"0.5"`` -> 0.5; ``"natural"`` stays a string (ImageKey holds text)."""
    if isinstance(text, (int, float)):
        return float(text)
    try:
        return float(text)
    except ValueError:
        return text


def config_for(spec: Any, key: ImageKey):
    """The :class:`ImageConfig` of one image key with the run file's settings."""
    geo = spec.geometry
    config = ImageConfig.from_name(key.field, key.label, kind=key.array, weighting=weighting_value(key.weighting),
                                   fullcube=spec.fullcube, prod_dir=spec.product_dir, data_dir=spec.data_dir,
                                   oversample=geo.oversample, cell_arcsec=geo.cell_arcsec, imsize=geo.imsize,
                                   setup=spec.setup_of(key.label))
    config.line_vwin = config.spw.line_vwin or spec.line_vwin   # a run file's window may set its own
    config.preserve_all_intermediate_products = bool(spec.preserve_all_intermediate_products)
    config.image_last_covered_channel = bool(spec.image_last_covered_channel)
    ov = spec.spw_overrides(key.label)
    if ov.rms is not None:
        config.rms = ov.rms
    for name in ("gain", "cyclefactor", "smallscalebias"):
        value = getattr(ov, name)
        if value is not None:
            setattr(config, name, float(value))
    if ov.scales is not None:
        config.scales = [int(s) for s in ov.scales]
    if ov.mask_ang_scales is not None:
        config.mask_ang_scales = [float(s) for s in ov.mask_ang_scales]
    if ov.uvtaper is not None:
        config.uvtaper = list(ov.uvtaper)
    if ov.automask:
        config.autom_kwargs.update(dict(ov.automask))
    return config


def _existing(paths: list[str]) -> list[str]:
    return [p for p in paths if os.path.exists(p)]


def _npix(config: Any) -> int | None:
    """Pixels per plane of the image (None if the geometry cannot be read)."""
    try:
        size = config.dset.imsize
        return int(size[0]) * int(size[-1])
    except Exception as exc:  # noqa: BLE001 - sizes are for the cost records only
        log.debug("no image size for the cost record: %s", exc)
        return None


def _image_nchan(spec: Any, config: Any) -> int | None:
    """Channels of the whole image, from the frozen chunk list (None before prepare)."""
    try:
        return int(config.load_frozen_chunks(spec.ext).nchan_total)
    except Exception as exc:  # noqa: BLE001 - sizes are for the cost records only
        log.debug("no channel count for the cost record: %s", exc)
        return None


def _with_cost(result: UnitResult, stages: dict[str, float], nchan: int | None, npix: int | None,
               rows: float | None = None) -> UnitResult:
    result.info[COST_INFO_KEY] = UnitCost(stages=stages, nchan=nchan, npix=npix, rows=rows).to_info()
    return result


def _run_prepare(spec: Any, unit: Unit, config: Any) -> UnitResult:
    config.validate_inputs()
    t0 = time.perf_counter()
    chunked = config.prepare_chunks(nchunks=unit.nchunks or None, ext=spec.ext)
    stages = {"prepare": time.perf_counter() - t0}
    outputs = [config.chunk_list_path(spec.ext), f"{config.tinyimg_imagebase}.sumwt"]
    result = UnitResult(outputs=outputs, info={"nchunks": chunked.nchunks,
                                               "chunks": [c.to_dict() for c in chunked.chunks]})
    try:
        rows = float(visibility_rows(config.dset.vis, config.spw_ids, config.dset.field))
    except Exception as exc:  # noqa: BLE001 - sizes are for the cost records only
        log.debug("visibility rows not counted: %s", exc)
        rows = None
    return _with_cost(result, stages, chunked.nchan_total, _npix(config), rows)


def _chunk_config(spec: Any, unit: Unit, config: Any, workdir: Path) -> Any:
    chunked = config.load_frozen_chunks(spec.ext)
    index = unit.chunk_index
    if index is None or not 0 <= index < chunked.nchunks:
        raise PrerequisiteError(f"{unit.id}: chunk {index} is not in the frozen chunk list "
                                f"({chunked.nchunks} chunks in {config.chunk_list_path(spec.ext)}); "
                                f"re-plan from the prepare unit")
    chunk_config = chunked[index]
    chunk_config.workdir = workdir
    return chunk_config


def _run_chunk(spec: Any, unit: Unit, config: Any, workdir: Path) -> UnitResult:
    cc = _chunk_config(spec, unit, config, workdir)
    th = spec.thresholds
    # ImageConfig.run_pipeline_tasks of a chunk, stage by stage, timed
    steps = (("dirty", cc.make_dirty_cube),
             ("nomask", lambda: cc.clean_line_nomask(sigma=th.nomask_sigma)),
             ("seedmask", lambda: cc.make_seed_mask(sigma=th.seedmask_sigma)),
             ("clean", lambda: cc.clean_line(mask_method="seed+multithresh", ext=spec.ext, sigma=th.clean_sigma)))
    stages: dict[str, float] = {}
    for name, step in steps:
        t0 = time.perf_counter()
        step()
        stages[name] = time.perf_counter() - t0
    base = cc.get_imagebase(ext=spec.ext)
    outputs = _existing([f"{base}.{e}" for e in CHUNK_PRODUCT_EXTS])
    result = UnitResult(outputs=outputs, info={"chunk": cc.chunk.to_dict(), "rms": cc.rms})
    return _with_cost(result, stages, int(cc.chunk.nchan), _npix(cc))


def _frozen_chunks(spec: Any, config: Any, workdir: Path) -> Any:
    chunked = config.load_frozen_chunks(spec.ext)
    for cc in chunked:
        cc.workdir = workdir
    return chunked


def _beam_info(beam: dict) -> dict[str, str]:
    return {k: f"{float(v['value'])!r}{v['unit']}" for k, v in beam.items()}


def _run_beam(spec: Any, unit: Unit, config: Any, workdir: Path) -> UnitResult:
    chunked = _frozen_chunks(spec, config, workdir)
    beam = chunked.record_common_beam(ext=spec.ext)
    return UnitResult(outputs=[chunked.common_beam_path(spec.ext)], info={"beam": _beam_info(beam)})


def post_chunk_range(unit: Unit) -> range:
    """The chunks a post unit postprocesses (its plan parameters)."""
    params = dict(unit.params)
    start = int(params["chunk_start"])
    return range(start, start + int(params["chunk_count"]))


def _run_post(spec: Any, unit: Unit, config: Any, workdir: Path) -> UnitResult:
    chunked = _frozen_chunks(spec, config, workdir)
    indices = post_chunk_range(unit)
    if indices.stop > chunked.nchunks:
        raise PrerequisiteError(f"{unit.id}: chunks {indices.start}..{indices.stop - 1} are not all in the frozen "
                                f"chunk list ({chunked.nchunks} chunks); re-plan from the prepare unit")
    reports = chunked.postprocess_chunks(indices, chunked.recorded_common_beam(spec.ext), ext=spec.ext)
    outputs = _existing([f"{chunked[i].get_imagebase(ext=spec.ext)}.{e}" for i in indices for e in CHUNK_POST_EXTS])
    resid = {str(k): round(float(v["max_residual"]["max_sigma"]), 3) for k, v in reports.items()}
    return UnitResult(outputs=outputs, info={"max_residual_sigma": resid})


def concat_exts(unit: Unit) -> tuple[str, ...]:
    """The final image extensions a concat unit concatenates (its plan parameters)."""
    params = dict(unit.params)
    start = int(params["ext_start"])
    return FINAL_PRODUCT_EXTS[start:start + int(params["ext_count"])]


def _concat_outputs(base: str, im_exts: Iterable[str]) -> list[str]:
    """``<base>.<ext>`` and its final FITS, if any, per extension."""
    return [f"{base}.{name}" for e in im_exts for name in (e, final_fits_ext(e)) if name]


def _run_concat(spec: Any, unit: Unit, config: Any, workdir: Path) -> UnitResult:
    chunked = _frozen_chunks(spec, config, workdir)
    missing = chunked.unpostprocessed(ext=spec.ext)
    if missing:
        raise PrerequisiteError(f"{unit.id}: chunk(s) {', '.join(map(str, missing[:5]))} have no postprocessed "
                                f"images ({', '.join(CHUNK_POST_EXTS)}): run the image's post units first")
    exts = concat_exts(unit)
    for im_ext in exts:
        chunked.concat_extension(im_ext, ext=spec.ext)
    return UnitResult(outputs=_existing(_concat_outputs(chunked.get_imagebase(ext=spec.ext), exts)))


def _run_finalize(spec: Any, unit: Unit, config: Any, workdir: Path) -> UnitResult:
    chunked = _frozen_chunks(spec, config, workdir)   # (a clear error before the prepare unit ran)
    final = _concat_outputs(chunked.get_imagebase(ext=spec.ext), FINAL_PRODUCT_EXTS)
    missing = [p for p in final if not os.path.exists(p)]
    if missing:
        raise PrerequisiteError(f"{unit.id}: {len(missing)} final product(s) missing ({missing[0]}, ...): "
                                f"run the image's concat units first")
    return UnitResult(outputs=final)


def _final_image_path(spec: Any, config: Any) -> str:
    return f"{config.get_imagebase(ext=spec.ext)}.{IMAGE_EXT}"


def _final_image(spec: Any, config: Any) -> str:
    image = _final_image_path(spec, config)
    if not os.path.exists(image):
        raise PrerequisiteError(f"{image} not found: run the finalize unit first")
    return image


def _run_moments(spec: Any, unit: Unit, config: Any) -> UnitResult:
    over = spec.spw_overrides(unit.key.label)
    opts = dict(unit.params)  # `faust-hpc moments` options: vwin, overwrite
    files = moments.make_moments_from_image(_final_image(spec, config), vwin=opts.get("vwin", over.moments_vwin_kms),
                                            rms=over.rms, overwrite=opts.get("overwrite", True),
                                            moma_dir=RunLayout(spec.product_dir).moments_dir)
    return UnitResult(outputs=[str(p) for p in files])


def _run_qa(spec: Any, unit: Unit, config: Any) -> UnitResult:
    opts = dict(unit.params)  # `faust-hpc qa` options: plot_sigma, overwrite
    files = qa.make_qa_plots_from_image(_final_image(spec, config), rms=spec.spw_overrides(unit.key.label).rms,
                                        plot_sigma=opts.get("plot_sigma"), overwrite=opts.get("overwrite", True),
                                        plot_dir=RunLayout(spec.product_dir).plots_dir)
    return UnitResult(outputs=[str(p) for p in files])


def run_unit(spec: Any, unit: Unit, workdir: str | os.PathLike) -> UnitResult:
    """Run one unit (see the module docstring). Raises UserInputError for bad
    input (missing MS, SPW absent from an MS) and PrerequisiteError when a
    unit runs before the one that produces its inputs."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    config = config_for(spec, unit.key)
    config.workdir = workdir
    log.info("unit %s: start", unit.id)
    t0 = time.perf_counter()
    if unit.kind == "prepare":
        result = _run_prepare(spec, unit, config)
    elif unit.kind == "chunk":
        result = _run_chunk(spec, unit, config, workdir)
    elif unit.kind == "beam":
        result = _run_beam(spec, unit, config, workdir)
    elif unit.kind == "post":
        result = _run_post(spec, unit, config, workdir)
    elif unit.kind == "concat":
        result = _run_concat(spec, unit, config, workdir)
    elif unit.kind == "finalize":
        result = _run_finalize(spec, unit, config, workdir)
    elif unit.kind == "moments":
        result = _run_moments(spec, unit, config)
    elif unit.kind == "qa":
        result = _run_qa(spec, unit, config)
    else:  # pragma: no cover - Unit validates its kind
        raise UserInputError(f"unknown unit kind {unit.kind!r}")
    if COST_INFO_KEY not in result.info:   # one stage: the whole unit
        _with_cost(result, {unit.kind: time.perf_counter() - t0}, _image_nchan(spec, config), _npix(config))
    log.info("unit %s: done (%d outputs)", unit.id, len(result.outputs))
    return result


def partial_outputs(spec: Any, unit: Unit) -> list[str]:
    """Temporary products a crashed attempt of ``unit`` may have left (the
    launcher deletes them before the unit runs again)."""
    config = config_for(spec, unit.key)
    if unit.kind == "moments":
        return sorted(moments.partial_outputs(_final_image_path(spec, config), RunLayout(spec.product_dir).moments_dir))
    if unit.kind == "qa":
        return sorted(qa.partial_outputs(_final_image_path(spec, config), RunLayout(spec.product_dir).plots_dir))
    key = unit.key
    full = config.layout.image_base(key.field, key.label, key.array, key.weighting)
    image_dir = glob_escape(str(full.parent))
    if unit.kind == "concat":   # only its own extensions: other concat units of the image may be running
        names = (Path(p).name for p in _concat_outputs(config.get_imagebase(ext=spec.ext), concat_exts(unit)))
        return sorted({p for name in names
                       for p in glob(os.path.join(image_dir, f"{TEMP_PREFIX}*-{glob_escape(name)}"))})
    if unit.kind == "chunk" and unit.chunk_index is not None:
        chunks: Iterable[int | None] = (unit.chunk_index,)
    elif unit.kind == "post":
        chunks = post_chunk_range(unit)
    elif unit.kind in ("prepare", "beam", "finalize"):   # finalize: after every concat, so the image's are safe
        chunks = (None,)
    else:
        return []
    found: set[str] = set()
    for index in chunks:
        base = config.layout.image_base(key.field, key.label, key.array, key.weighting, chunk=index)
        found.update(glob(os.path.join(image_dir, f"{TEMP_PREFIX}*-{glob_escape(base.name)}_*")))
    return sorted(found)


__all__ = ["UnitResult", "run_unit", "config_for", "partial_outputs", "post_chunk_range", "concat_exts",
           "weighting_value"]
