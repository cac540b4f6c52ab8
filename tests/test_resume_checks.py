"""Resume trusts nothing on disk (issue 13, items 1 and 2).

Real ``faust-hpc run`` processes with the cheap executor (tests/units_cheap.py):
a finished run whose products are then deleted, truncated or altered is run
again, and judged by which units start and by the products it leaves.
"""
from __future__ import annotations

import json
from pathlib import Path

from faust_hpc.run.fingerprint import fingerprint, mismatch
from tests.launcher_helpers import CS, KEY_CS, manifest_path, products, records, run, write_run


def _started(recs: list[dict]) -> list[str]:
    return sorted(r["unit"] for r in recs if r.get("event") == "started")


def _product(runfile: Path, part: str) -> Path:
    return runfile.parent / "products" / "cheap" / (f"{KEY_CS}/{part}".replace("/", "__") + ".txt")


def _finished(tmp_path: Path, name: str = "run") -> tuple[Path, dict]:
    runfile, env = write_run(tmp_path, name, nchunks={CS: 2}, spws=(CS,))
    res = run(runfile, env)
    assert res.returncode == 0, res.stderr
    return runfile, env


def _rerun_started(runfile: Path, env: dict) -> list[str]:
    n = len(records(runfile))
    res = run(runfile, env)
    assert res.returncode == 0, res.stderr
    return _started(records(runfile)[n:])


AFTER_FINALIZE = sorted(f"{KEY_CS}/{p}" for p in ("finalize", "moments", "qa"))


def _finishing(runfile: Path) -> list[str]:
    """The image's beam, post and concat units (as many posts and concats as the plan groups
    its chunks and extensions into)."""
    return sorted({r["unit"] for r in records(runfile) if r.get("event") == "done"
                   and r["unit"].rsplit("/", 1)[1].startswith(("beam", "post", "concat"))})


def test_deleted_final_cube_is_remade_with_its_moments_and_qa(tmp_path):
    """Item 1: the finalize product deleted after moments and QA are done is
    remade (it used to count as a consumed intermediate), its dependents are
    redone, the products equal the first run's, and a further run redoes nothing."""
    runfile, env = _finished(tmp_path)
    before = products(runfile)
    _product(runfile, "finalize").unlink()
    assert _rerun_started(runfile, env) == AFTER_FINALIZE
    assert products(runfile) == before
    assert _rerun_started(runfile, env) == []  # nothing left to redo: no endless reruns


def test_deleted_prepare_output_redoes_everything_downstream(tmp_path):
    runfile, env = _finished(tmp_path)
    before = products(runfile)
    _product(runfile, "prepare").unlink()
    finishing = _finishing(runfile)
    assert f"{KEY_CS}/beam" in finishing and len(finishing) >= 2
    assert _rerun_started(runfile, env) == sorted([*(f"{KEY_CS}/{p}" for p in
                                                   ("prepare", "chunk00", "chunk01", "finalize", "moments", "qa")),
                                                   *finishing])
    assert products(runfile) == before


def test_truncated_or_altered_product_is_redone_with_its_dependents(tmp_path):
    """Item 2: a product cut to half its size, or changed in place at the same
    size, fails its recorded check; the unit and its dependents are redone."""
    runfile, env = _finished(tmp_path)
    before = products(runfile)
    fin = _product(runfile, "finalize")
    data = fin.read_bytes()
    fin.write_bytes(data[: len(data) // 2])
    assert _rerun_started(runfile, env) == AFTER_FINALIZE
    assert products(runfile) == before
    fin.write_bytes(data.replace(b"digest", b"DIGEST"))  # same size, other content
    assert fin.stat().st_size == len(data)
    assert _rerun_started(runfile, env) == AFTER_FINALIZE
    assert products(runfile) == before
    qa = _product(runfile, "qa")
    qa.write_bytes(qa.read_bytes()[:-1])  # a final product with no dependents
    assert _rerun_started(runfile, env) == [f"{KEY_CS}/qa"]


def test_done_records_carry_the_checks_and_old_records_stay_readable(tmp_path):
    runfile, env = _finished(tmp_path)
    done = [r for r in records(runfile) if r.get("event") == "done"]
    for rec in done:
        assert set(rec["checks"]) == set(rec["outputs"])
        for path, check in rec["checks"].items():
            assert check["size"] == Path(path).stat().st_size and len(check["hash"]) == 32
    # a manifest written before the checks existed: outputs are checked for existence only
    path = manifest_path(runfile)
    old = [{k: v for k, v in json.loads(line).items() if k != "checks"} for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(r) + "\n" for r in old))
    fin = _product(runfile, "finalize")
    fin.write_bytes(fin.read_bytes()[:10])
    assert _rerun_started(runfile, env) == []
    fin.unlink()
    assert _rerun_started(runfile, env) == AFTER_FINALIZE


def test_chunk_images_removed_by_finalize_do_not_make_chunks_rerun(tmp_path):
    """The consumed-intermediate rule: once every unit that reads a chunk's
    images (beam, posts, concats) is done, its lost or changed images do not
    count; when its finalize must run again they do, and the chunk is redone
    first (and with it the beam and posts made from it)."""
    runfile, env = _finished(tmp_path)
    before = products(runfile)
    c0 = _product(runfile, "chunk00")
    c0.unlink()  # as a user clearing an image's intermediates does
    _product(runfile, "chunk01").write_text("damaged\n")
    assert _rerun_started(runfile, env) == []
    _product(runfile, "finalize").unlink()  # now finalize needs its chunks again
    assert _rerun_started(runfile, env) == sorted([f"{KEY_CS}/chunk00", f"{KEY_CS}/chunk01", *_finishing(runfile),
                                                   *AFTER_FINALIZE])
    assert products(runfile) == before


def test_casa_image_check_reads_the_table_files_only(tmp_path):
    """A CASA image (a table directory) is checked by the sizes of its files and
    the hash of its table.dat; lock files, which readers touch, are left out."""
    image = tmp_path / "cube.image"
    (image / "logtable").mkdir(parents=True)
    (image / "table.dat").write_bytes(b"desc" * 100)
    (image / "table.f0").write_bytes(b"\0" * 5000)
    (image / "logtable" / "table.dat").write_bytes(b"log")
    (image / "table.lock").write_bytes(b"x")
    fp = fingerprint(image)
    assert fp["files"] == 3  # table.dat, table.f0, logtable/table.dat
    (image / "table.lock").write_bytes(b"touched by a reader")
    assert mismatch(image, fp) is None
    (image / "table.f0").write_bytes(b"\0" * 2500)
    assert mismatch(image, fp) == "table files changed (a size or a table.dat)"
    (image / "table.f0").write_bytes(b"\0" * 5000)
    (image / "table.dat").write_bytes(b"DESC" * 100)
    assert mismatch(image, fp) == "table files changed (a size or a table.dat)"
    (image / "table.dat").write_bytes(b"desc" * 100)
    assert mismatch(image, fp) is None
    (image / "logtable" / "table.dat").unlink()
    assert mismatch(image, fp) == "2 table files, recorded 3"
