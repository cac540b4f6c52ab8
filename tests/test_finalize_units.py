"""Finalize that scales (issue 12, item 1): beam -> postNN -> finalize units.

The graph tests are pure Python (the plan from the catalog). The CASA test
images the chunks of one image once (``faust-hpc image``: its own beam, post
and finalize units run too, in child processes, one post unit per chunk as
the cost model groups them), then finalizes
copies of those chunks two more ways -- the documented serial
``ChunkedConfigSet.postprocess`` and the beam / post / finalize units through
the executor with the chunks forced into a group of one and a group of two --
and requires the delivered FITS to be identical, data and header (but the
export date and history).
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
            links = sum(len(u.deps) for u in units)
            # chunk -> prepare, chunk -> beam, post -> beam, finalize -> post, moments/qa -> finalize
            assert links == 2 * n + 2 * groups + 2
            kinds = [u.kind for u in units]
            assert kinds == ["prepare", *["chunk"] * n, "beam", *["post"] * groups, "finalize", "moments", "qa"]


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
    assert plan.units[key.unit_id("finalize")].deps == tuple(p.id for p in posts)
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
    parts = sum(u.cost for u in units if u.kind in ("beam", "post", "finalize"))
    starts = sum(1 for u in units if u.kind in ("beam", "post", "finalize")) - 1
    assert costmodel.finalize_estimate(m, plan.nchunks(key)).cost == \
        pytest.approx(parts - starts * costmodel.UNIT_OVERHEAD_S)
    # the image's own chain in the tight bound spreads the posts over the workers
    bound = image_lower_bound(plan, 10_000)
    chain = sum(max(u.cost for u in units if u.kind == k) for k in ("prepare", "chunk", "beam", "post", "finalize"))
    assert bound == pytest.approx(chain + max(plan.units[key.unit_id(k)].cost for k in ("moments", "qa")))


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


def finalize_both_ways(runfile: str, launcher_products: str, out_root: str) -> dict:
    """Copies of the launcher's chunks finalized (a) by the documented serial
    ``ChunkedConfigSet.postprocess`` and (b) by the beam, post (chunk 0; chunks
    1-2) and finalize units through the executor. Run in a child process with
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
    plan_units = _key_units(key, build_plan(units_spec).models[key.path], NCHUNKS, chunks_per_post=2)
    finishing = [u for u in plan_units if u.kind in ("beam", "post", "finalize")]
    results = {u.id.rsplit("/", 1)[1]: run_unit(units_spec, u, out / "units" / "work" / u.id.replace("/", "_"))
               for u in finishing}
    return {"serial_chunks": sorted(report["chunks"]), "serial_beam": report["beam"],
            "units": [(u.id.rsplit("/", 1)[1], dict(u.params).get("chunk_count")) for u in finishing],
            "recorded_beam": json.loads(Path(results["beam"].outputs[0]).read_text())["beam"],
            "post_outputs": {k: len(v.outputs) for k, v in results.items() if k.startswith("post")}}


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
    assert done == sorted(["prepare", "chunk00", "chunk01", "chunk02", "beam", *posts, "finalize"])

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
    assert info["units"] == [["beam", None], ["post00", 1], ["post01", 2], ["finalize", None]]
    assert info["recorded_beam"] == info["serial_beam"]                 # floats read back exactly
    assert info["post_outputs"] == {"post00": 3, "post01": 6}

    expected = _fits(tmp_path / "serial" / "products")
    for name, product_dir in (("units", tmp_path / "units" / "products"), ("launcher", launcher_dir)):
        got = _fits(product_dir)
        for ext in FITS_EXTS:
            data, header = expected[ext]
            assert got[ext][0].tobytes() == data.tobytes(), f"{name}: {ext} data differ"
            assert got[ext][1] == header, f"{name}: {ext} header differs"
