"""Finalize that scales (issue 12, item 1): beam -> postNN -> concatNN -> finalize units.

The graph tests are pure Python (the plan from the catalog). The CASA test
images the chunks of one image once (``faust-hpc image``: its own beam, post,
concat and finalize units run too, in child processes, one post unit per
chunk and the concats as the cost model groups them), then finalizes
copies of those chunks two more ways -- the documented serial
``ChunkedConfigSet.postprocess`` and the beam / post / concat / finalize
units through the executor with the chunks forced into a group of one and a
group of two and the extensions into concat groups of one to four -- and
requires the delivered FITS to be identical, data and header (but the
export date and history), and the nine concatenated CASA images too.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faust_hpc import costmodel
from faust_hpc.layout import FINAL_PRODUCT_EXTS
from faust_hpc.plan import _key_units, build_plan, post_groups
from faust_hpc.runfile import load_runfile
from faust_hpc.scheduler import image_lower_bound
from faust_hpc.units import ImageKey, kind_of_id

SPW = "244.936GHz_CS"
IMAGING = {"spws": [SPW], "arrays": ["12m"], "imsize": 64, "cell_arcsec": 0.15}
NCHUNKS = 3


def _spec(tmp_path: Path, extra: str = "", setup: int = 2, arrays: str = '["joint"]'):
    path = tmp_path / "run.toml"
    path.write_text(f'[run]\ndata_dir = "absent"\nproduct_dir = "products"\n'
                    f'[imaging]\nfields = ["CB68"]\nsetup = {setup}\narrays = {arrays}\n{extra}')
    return load_runfile(path, check_paths=False)


# --------------------------------------------------------------------------- graph shape

def test_links_grow_linearly_with_the_chunks(tmp_path):
    plan = build_plan(_spec(tmp_path, f'spws = ["{SPW}"]\n'))
    key = plan.keys[0]
    model = plan.models[key.path]
    for n in (10, 100, model.nchan):          # up to one chunk per channel
        for per_post in (1, 7):
            units = _key_units(key, model, n, chunks_per_post=per_post)
            groups = len(post_groups(n, per_post))
            concats = sum(1 for u in units if u.kind == "concat")
            assert 1 <= concats <= len(FINAL_PRODUCT_EXTS)
            links = sum(len(u.deps) for u in units)
            # chunk -> prepare, chunk -> beam, post -> beam, concat -> every post (at most nine concats),
            # finalize -> concat, moments/qa -> finalize
            assert links == 2 * n + groups + concats * groups + concats + 2
            kinds = [u.kind for u in units]
            assert kinds == ["prepare", *["chunk"] * n, "beam", *["post"] * groups, *["concat"] * concats,
                             "finalize", "moments", "qa"]


def test_post_groups_cover_every_chunk_once_in_order():
    for n in range(1, 40):
        for size in range(1, n + 2):
            groups = post_groups(n, size)
            covered = [c for first, count in groups for c in range(first, first + count)]
            assert covered == list(range(n))
            assert max(count for _, count in groups) - min(count for _, count in groups) <= 1
            assert max(count for _, count in groups) <= max(size, 1) + 1
    assert post_groups(3, 2) == [(0, 1), (1, 2)]          # the CASA test's groups: one and two chunks


def test_units_ids_wiring_and_expand(tmp_path):
    spec = _spec(tmp_path, f'spws = ["{SPW}"]\n[spw."{SPW}"]\nnchunks = 4\n')
    plan = build_plan(spec)
    key = plan.keys[0]
    units = plan.units_of(key)
    chunks = [u for u in units if u.kind == "chunk"]
    posts = [u for u in units if u.kind == "post"]
    beam = plan.units[key.unit_id("beam")]
    assert beam.deps == tuple(c.id for c in chunks)
    assert all(p.deps == (beam.id,) for p in posts)
    concats = [u for u in units if u.kind == "concat"]
    assert concats and all(c.deps == tuple(p.id for p in posts) for c in concats)
    assert [c.id.rsplit("/", 1)[1] for c in concats] == [f"concat{i:02d}" for i in range(len(concats))]
    assert plan.units[key.unit_id("finalize")].deps == tuple(c.id for c in concats)
    assert plan.units[key.unit_id("moments")].deps == (key.unit_id("finalize"),)
    assert [p.id.rsplit("/", 1)[1] for p in posts] == [f"post{i:02d}" for i in range(len(posts))]
    assert [kind_of_id(u.id) for u in units] == [u.kind for u in units]
    # the same count gives the same ids on any rank count / resume: the plan is a pure function
    again = build_plan(spec)
    assert list(again.units) == list(plan.units) and again.units == plan.units
    # expansion to the prepare's real count = planning that count directly; idempotent
    grown = plan.copy()
    grown.expand(key.unit_id("prepare"), 150)
    direct = build_plan(spec, frozen_nchunks={key.path: 150})
    assert [u.id for u in grown.units_of(key)] == [u.id for u in direct.units_of(key)]   # graph order
    prepare = key.unit_id("prepare")                     # (it keeps the count it was asked for)
    assert {u: v for u, v in grown.units.items() if u != prepare} == \
        {u: v for u, v in direct.units.items() if u != prepare}
    assert grown.units_of(key)[-1].deps == (key.unit_id("finalize"),)
    wide_posts = [u for u in grown.units.values() if u.kind == "post"]
    assert wide_posts[-1].id.endswith(f"post{len(wide_posts) - 1:0{max(2, len(str(len(wide_posts) - 1)))}d}")
    before = dict(grown.units)
    grown.expand(key.unit_id("prepare"), 150)
    assert grown.units == before
    grown.expand(key.unit_id("prepare"), 2)            # shrinking removes the old posts too
    assert not [u for u in grown.units if u.endswith("chunk02") or u.endswith("post149")]
    assert grown.units[key.unit_id("finalize")].deps == \
        tuple(u.id for u in grown.units_of(key) if u.kind == "concat")
    grown.topological_order()


def test_posts_merge_while_a_chunks_share_is_below_the_start_up(tmp_path, monkeypatch):
    faust = build_plan(_spec(tmp_path, 'spws = ["233.796GHz_cont"]\n', setup=1))
    key = faust.keys[0]
    model = faust.models[key.path]
    # FAUST size: a chunk's postprocessing outweighs a unit's start-up -> one post per chunk
    assert costmodel.post_work_s(model, model.nchan / 40) >= costmodel.UNIT_OVERHEAD_S
    assert costmodel.post_chunks_per_unit(model, 40) == 1
    # at one channel per chunk the share is below the start-up: neighbours share a post unit
    per_post = costmodel.post_chunks_per_unit(model, model.nchan)
    assert per_post > 1
    assert costmodel.post_work_s(model, per_post) >= costmodel.UNIT_OVERHEAD_S
    assert costmodel.post_work_s(model, per_post - 1) < costmodel.UNIT_OVERHEAD_S
    # the rule follows the start-up cost (warm start-up: fewer chunks merged)
    monkeypatch.setattr(costmodel, "UNIT_OVERHEAD_S", costmodel.UNIT_OVERHEAD_S / 10)
    assert costmodel.post_chunks_per_unit(model, model.nchan) < per_post


def test_finish_costs_are_split_honestly(tmp_path):
    plan = build_plan(_spec(tmp_path, 'spws = ["233.796GHz_cont"]\n', setup=1))
    key = plan.keys[0]
    m = plan.models[key.path]
    # concatenation grows with the chunks (every input image opened), beam reads them all
    assert costmodel.concat_estimate(m, 3840).cost - costmodel.concat_estimate(m, 40).cost == \
        pytest.approx(3800 * costmodel.K_CONCAT_CHUNK)
    assert costmodel.beam_estimate(m, 3840).cost > costmodel.beam_estimate(m, 40).cost
    # the serial step is the three parts less the start-ups the units do not share
    units = plan.units_of(key)
    parts = sum(u.cost for u in units if u.kind in ("beam", "post", "concat"))
    starts = sum(1 for u in units if u.kind in ("beam", "post", "concat")) - 1
    assert costmodel.finalize_estimate(m, plan.nchunks(key)).cost == \
        pytest.approx(parts - starts * costmodel.UNIT_OVERHEAD_S)
    # the image's own chain in the tight bound spreads the posts over the workers
    bound = image_lower_bound(plan, 10_000)
    chain = sum(max(u.cost for u in units if u.kind == k)
                for k in ("prepare", "chunk", "beam", "post", "concat", "finalize"))
    assert bound == pytest.approx(chain + max(plan.units[key.unit_id(k)].cost for k in ("moments", "qa")))


def test_concat_groups_cover_every_extension_once_and_outweigh_the_start_up(tmp_path, monkeypatch):
    faust = build_plan(_spec(tmp_path, 'spws = ["233.796GHz_cont"]\n', setup=1))
    key = faust.keys[0]
    model = faust.models[key.path]
    nchunks = faust.nchunks(key)
    # FAUST size: every extension is a unit of its own, the largest a fraction of the serial step
    assert costmodel.concat_groups(model, nchunks) == [(i, 1) for i in range(len(FINAL_PRODUCT_EXTS))]
    concats = [u for u in faust.units_of(key) if u.kind == "concat"]
    serial = costmodel.concat_estimate(model, nchunks).cost
    assert max(u.cost for u in concats) < serial / 4
    assert sum(u.cost for u in concats) == pytest.approx(serial + 8 * costmodel.UNIT_OVERHEAD_S)
    assert [dict(u.params)["ext_start"] for u in concats] == list(range(len(FINAL_PRODUCT_EXTS)))
    # the finalize unit only checks the products: a start-up and a stat each
    assert faust.units[key.unit_id("finalize")].cost < costmodel.UNIT_OVERHEAD_S + 1.0
    # a small image: neighbours share a unit while one's share is below the start-up
    for nchan, npix in ((62, 64 * 64), (62, 480 * 480), (500, 1024 * 1024), (3840, 3500 * 3500)):
        small = costmodel.ImageModel(setup=2, nchan=nchan, npix=npix, rows=1e4, gridder="mosaic",
                                     chan_spacing_hz=141e3, chan_width_hz=141e3, bandwidth_hz=nchan * 141e3,
                                     restfreq_hz=245e9, nscales=3)
        for n in (1, 3, 40):
            groups = costmodel.concat_groups(small, n)
            covered = [e for first, count in groups for e in range(first, first + count)]
            assert covered == list(range(len(FINAL_PRODUCT_EXTS)))
            work = [costmodel.concat_work_s(small, n, FINAL_PRODUCT_EXTS[f:f + c]) for f, c in groups]
            assert len(groups) == 1 or min(work) >= costmodel.UNIT_OVERHEAD_S
    tiny = costmodel.ImageModel(setup=2, nchan=62, npix=64 * 64, rows=1e4, gridder="mosaic", chan_spacing_hz=141e3,
                                chan_width_hz=141e3, bandwidth_hz=62 * 141e3, restfreq_hz=245e9, nscales=3)
    assert costmodel.concat_groups(tiny, 3) == [(0, len(FINAL_PRODUCT_EXTS))]
    # the rule follows the start-up cost (warm start-up: fewer extensions merged)
    mid = costmodel.ImageModel(setup=2, nchan=500, npix=480 * 480, rows=1e4, gridder="mosaic",
                               chan_spacing_hz=141e3, chan_width_hz=141e3, bandwidth_hz=500 * 141e3,
                               restfreq_hz=245e9, nscales=3)
    before = len(costmodel.concat_groups(mid, 10))
    monkeypatch.setattr(costmodel, "UNIT_OVERHEAD_S", costmodel.UNIT_OVERHEAD_S / 10)
    assert len(costmodel.concat_groups(mid, 10)) > before


def test_partial_outputs_of_a_post_unit_are_its_chunks_temporaries(tmp_path):
    from faust_hpc.execute import partial_outputs

    spec = _spec(tmp_path, f'spws = ["{SPW}"]\n[spw."{SPW}"]\nnchunks = 3\n')
    key = spec.image_keys()[0]
    units = {u.id.rsplit("/", 1)[1]: u for u in _key_units(key, build_plan(spec).models[key.path], 3,
                                                           chunks_per_post=2)}
    images = spec.product_dir / "images" / "CB68"
    images.mkdir(parents=True)
    stem = f"CB68_{SPW}_joint_0.5"
    names = [f".tmp-11-{stem}_clean.image.pbcor.common.fits", f".tmp-12-{stem}_clean.common_beam.json",
             *(f".tmp-13-CB68_{SPW}_chunk{k}_joint_0.5_clean.image.common" for k in range(3))]
    for name in names:
        (images / name).write_text("x")
    found = {u: sorted(Path(p).name for p in partial_outputs(spec, units[u])) for u in ("beam", "post00", "post01")}
    assert found["post00"] == [names[2]]
    assert found["post01"] == sorted(names[3:])
    assert found["beam"] == sorted(names[:2])        # the whole image's names (beam record, final FITS)
    # a concat unit: its own extensions' temporaries only (other concats of the image may be running)
    concat = {u.id.rsplit("/", 1)[1]: u for u in _key_units(key, build_plan(spec).models[key.path], 3,
                                                            concat_groups=[(0, 4), (4, 5)]) if u.kind == "concat"}
    (images / f".tmp-14-{stem}_clean.mask").write_text("x")
    (images / f".tmp-15-{stem}_clean.image").write_text("x")
    assert sorted(Path(p).name for p in partial_outputs(spec, concat["concat00"])) == \
        sorted([names[0], f".tmp-15-{stem}_clean.image"])
    assert [Path(p).name for p in partial_outputs(spec, concat["concat01"])] == [f".tmp-14-{stem}_clean.mask"]


# --------------------------------------------------------------------------- real CASA: bit-identical

FITS_EXTS = ("image.pbcor.common.fits", "mask.fits", "pb.fits")
VOLATILE_CARDS = ("DATE", "HISTORY")


def _fits(product_dir: Path) -> dict[str, tuple[np.ndarray, list[tuple[str, object]]]]:
    from astropy.io import fits

    out = {}
    for ext in FITS_EXTS:
        path = product_dir / "images" / "CB68" / f"CB68_{SPW}_12m_0.5_clean.{ext}"
        with fits.open(path) as hdul:
            header = [(k, v) for k, v in hdul[0].header.items() if k not in VOLATILE_CARDS]
            out[ext] = (np.array(hdul[0].data), header)
    return out


def _copy_chunks(src: Path, dst: Path) -> None:
    """The chunk images and the frozen chunk list only: what finalizing starts from."""
    from faust_hpc.layout import CHUNK_POST_EXTS

    shutil.copytree(src / "images", dst / "images")
    for path in (dst / "images" / "CB68").iterdir():
        chunk_post = "_chunk" in path.name and path.name.endswith(tuple(f".{e}" for e in CHUNK_POST_EXTS))
        final = "_chunk" not in path.name and not path.name.endswith((".chunks.json", ".sumwt")) \
            and "tinyimg" not in path.name
        if chunk_post or final:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


CONCAT_GROUPS = [(0, 1), (1, 3), (4, 1), (5, 4)]   # extensions forced into groups of one to four


def _casa_images(product_dir: Path) -> dict[str, str]:
    """A digest of pixels and pixel mask of each concatenated CASA image (in a CASA process)."""
    import hashlib

    from faust_hpc.imaging.image_tools import ImageManager

    out = {}
    for ext in FINAL_PRODUCT_EXTS:
        with ImageManager(str(product_dir / "images" / "CB68" / f"CB68_{SPW}_12m_0.5_clean.{ext}")) as ia:
            digest = hashlib.sha256(np.asarray(ia.getchunk()).tobytes())
            digest.update(np.asarray(ia.getchunk(getmask=True)).tobytes())
            digest.update(repr(ia.shape()).encode())
            out[ext] = digest.hexdigest()
    return out


def finalize_both_ways(runfile: str, launcher_products: str, out_root: str) -> dict:
    """Copies of the launcher's chunks finalized (a) by the documented serial
    ``ChunkedConfigSet.postprocess`` and (b) by the beam, post (chunk 0; chunks
    1-2), concat (:data:`CONCAT_GROUPS`) and finalize units through the executor. Run in a child process with
    the launcher's one-thread environment (FFT rounding follows the thread
    count; the launcher pins it for bit-identical products)."""
    from dataclasses import replace

    from faust_hpc import casa_env
    from faust_hpc.execute import config_for, run_unit

    out = Path(out_root)
    spec = load_runfile(runfile)
    key = spec.image_keys()[0]
    serial_spec = replace(spec, product_dir=out / "serial" / "products")
    units_spec = replace(spec, product_dir=out / "units" / "products")
    for target in (serial_spec, units_spec):
        _copy_chunks(Path(launcher_products), target.product_dir)
    casa_env.configure(log_path=out / "casa.log")
    serial = config_for(serial_spec, key).load_frozen_chunks(serial_spec.ext)
    for cc in serial:
        cc.workdir = out / "serial" / "work"
    report = serial.postprocess(ext=serial_spec.ext)
    plan_units = _key_units(key, build_plan(units_spec).models[key.path], NCHUNKS, chunks_per_post=2,
                            concat_groups=CONCAT_GROUPS)
    finishing = [u for u in plan_units if u.kind in ("beam", "post", "concat", "finalize")]
    results = {u.id.rsplit("/", 1)[1]: run_unit(units_spec, u, out / "units" / "work" / u.id.replace("/", "_"))
               for u in finishing}
    return {"serial_chunks": sorted(report["chunks"]), "serial_beam": report["beam"],
            "units": [(u.id.rsplit("/", 1)[1], dict(u.params).get("chunk_count")) for u in finishing],
            "recorded_beam": json.loads(Path(results["beam"].outputs[0]).read_text())["beam"],
            "post_outputs": {k: len(v.outputs) for k, v in results.items() if k.startswith("post")},
            "concat_outputs": {k: sorted(Path(p).name.split("_clean.")[1] for p in v.outputs)
                               for k, v in results.items() if k.startswith("concat")},
            "finalize_outputs": len(results["finalize"].outputs),
            "casa_images": {name: _casa_images(d) for name, d in (("serial", serial_spec.product_dir),
                                                                  ("units", units_spec.product_dir),
                                                                  ("launcher", Path(launcher_products)))}}


@pytest.mark.casa
def test_finalize_units_give_the_serial_finalize_bit_for_bit(sim_tiny, make_runfile, tmp_path):
    from faust_hpc.launcher.worker import child_environment

    spw = {SPW: {"nchunks": NCHUNKS, "scales": [0]}}
    launcher_runfile = make_runfile(sim_tiny, tmp_path / "launcher", imaging=IMAGING, spw=spw)
    env = dict(os.environ)
    env.pop("FAUST_DATA_DIR", None)
    proc = subprocess.run([sys.executable, "-m", "faust_hpc", "image", str(launcher_runfile), "--no-products"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    launcher_dir = tmp_path / "launcher" / "products"
    records = [json.loads(line) for line in (launcher_dir / ".faust-hpc" / "manifest.jsonl").read_text().splitlines()
               if line.strip()]
    done = sorted(r["unit"].rsplit("/", 1)[1] for r in records if r.get("event") == "done")
    spec = load_runfile(launcher_runfile)
    # the launcher's grouping is the cost model's (from the catalog's channel count: a post per chunk)
    posts = [u.id.rsplit("/", 1)[1] for u in build_plan(spec).units.values() if u.kind == "post"]
    assert posts == ["post00", "post01", "post02"]
    concats = [u.id.rsplit("/", 1)[1] for u in build_plan(spec).units.values() if u.kind == "concat"]
    assert concats == ["concat00"]                  # a tiny image: one concat unit (shares below the start-up)
    assert done == sorted(["prepare", "chunk00", "chunk01", "chunk02", "beam", *posts, *concats, "finalize"])

    repo = Path(__file__).resolve().parents[1]
    code = ("import json, sys; from tests.test_finalize_units import finalize_both_ways; "
            "print(json.dumps(finalize_both_ways(*sys.argv[1:])))")
    child_env = child_environment(1, str(repo))       # the launcher's unit children: one thread
    child_env.pop("FAUST_DATA_DIR", None)
    child = subprocess.run([sys.executable, "-c", code, str(launcher_runfile), str(launcher_dir), str(tmp_path)],
                           capture_output=True, text=True, cwd=repo, env=child_env, timeout=900)
    assert child.returncode == 0, child.stderr[-3000:]
    info = json.loads(child.stdout.strip().splitlines()[-1])
    assert info["serial_chunks"] == [0, 1, 2]
    assert info["units"] == [["beam", None], ["post00", 1], ["post01", 2], ["concat00", None], ["concat01", None],
                             ["concat02", None], ["concat03", None], ["finalize", None]]
    assert info["recorded_beam"] == info["serial_beam"]                 # floats read back exactly
    assert info["post_outputs"] == {"post00": 3, "post01": 6}
    assert info["concat_outputs"] == {
        "concat00": ["image"], "concat01": ["image.common", "image.pbcor", "image.pbcor.common",
                                            "image.pbcor.common.fits"],
        "concat02": ["mask", "mask.fits"], "concat03": ["model", "pb", "pb.fits", "psf", "residual"]}
    assert info["finalize_outputs"] == len(FINAL_PRODUCT_EXTS) + len(FITS_EXTS)
    casa = info["casa_images"]
    assert casa["units"] == casa["serial"] and casa["launcher"] == casa["serial"]   # all nine CASA images

    expected = _fits(tmp_path / "serial" / "products")
    for name, product_dir in (("units", tmp_path / "units" / "products"), ("launcher", launcher_dir)):
        got = _fits(product_dir)
        for ext in FITS_EXTS:
            data, header = expected[ext]
            assert got[ext][0].tobytes() == data.tobytes(), f"{name}: {ext} data differ"
            assert got[ext][1] == header, f"{name}: {ext} header differs"
