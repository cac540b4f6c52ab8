"""A full disk is said to be one, and stops the run (issue 13, item 7).

The product directory is a real small tmpfs (needs root to mount); the cheap
executor (tests/units_cheap.py) writes outputs bigger than the space. The
run must say "no space left on <product dir>", stop handing out units
(exit 3, no retries burnt), and once the filesystem is made bigger the same
command must finish with the products of a run that never lacked space.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.launcher_helpers import CS, KEY_CS, finish_record, products, records, run, write_run

MB = 1 << 20


@pytest.fixture
def small_products(tmp_path):
    """Mount a tmpfs of 8 MB at <run>/products; yields (mountpoint, remount(size_mb))."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "run" / "products"
    mnt.mkdir(parents=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")

    def remount(size_mb: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size_mb}m", str(mnt)], check=True)

    try:
        yield mnt, remount
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _attempts(recs: list[dict], unit: str) -> int:
    return len([r for r in recs if r.get("event") == "started" and r["unit"] == unit])


def _check_stopped_for_space(res: subprocess.CompletedProcess, runfile: Path, mnt: Path, unit: str) -> None:
    assert res.returncode == 3, res.stdout + res.stderr
    assert f"no space left on {mnt}" in res.stderr
    recs = records(runfile)
    failed = [r for r in recs if r.get("event") == "failed"]
    assert [r["unit"] for r in failed] == [unit]  # one attempt, no retries burnt
    assert failed[0]["no_space"] == str(mnt) and failed[0]["error"].startswith(f"no space left on {mnt}")
    fin = finish_record(runfile)
    assert fin["drained"] is True and fin["no_space"] == str(mnt) and fin["exit_status"] == 3


@pytest.mark.parametrize("when", ["writing", "before"])
def test_full_disk_stops_the_run_and_the_rerun_after_freeing_finishes(tmp_path, small_products, when):
    """``writing``: the unit's output estimate fits, its write hits ENOSPC;
    ``before``: its estimate does not fit the free space, it never starts writing."""
    mnt, remount = small_products
    big = f"{KEY_CS}/chunk01"
    control = {"pad": {big: 16 * MB}, "sleep": {"*chunk00": 1.0}}
    if when == "writing":
        control["estimate"] = {"*": 0}
    runfile, env = write_run(tmp_path, "run", nchunks={CS: 2}, spws=(CS,), control=control, retries=3)
    res = run(runfile, env)
    _check_stopped_for_space(res, runfile, mnt, big)
    recs = records(runfile)
    assert _attempts(recs, big) == 1
    assert not [r for r in recs if r.get("event") == "started" and r["unit"].endswith(("finalize", "moments"))]
    assert not list((mnt / "cheap").glob("*.tmp*"))

    remount(64)
    again = run(runfile, env)
    assert again.returncode == 0, again.stderr
    ref, ref_env = write_run(tmp_path, "reference", nchunks={CS: 2}, spws=(CS,), control={"pad": {big: 16 * MB}})
    assert run(ref, ref_env).returncode == 0
    assert products(runfile) == products(ref)


def test_child_dying_on_a_full_disk_is_recognised(tmp_path, small_products):
    """A child that dies without a Python exception (CASA's SIGABRT or SIGSEGV)
    while the product filesystem has (almost) no room left: the worker names
    the full disk instead of retrying."""
    mnt, remount = small_products
    crash = f"{KEY_CS}/chunk00"
    filler = mnt / "filler"
    filler.write_bytes(b"\0" * (8 * MB - 512 * 1024))  # leave room for the records and the small outputs
    runfile, env = write_run(tmp_path, "run", nchunks={CS: 2}, spws=(CS,), retries=3,
                             control={"fail": {crash: {"mode": "segfault", "attempts": [1]}}})
    res = run(runfile, env)
    _check_stopped_for_space(res, runfile, mnt, crash)
    assert "SIGSEGV" in next(r for r in records(runfile) if r.get("event") == "failed")["error"]
    filler.unlink()
    again = run(runfile, env)
    assert again.returncode == 0, again.stderr
    assert _attempts(records(runfile), crash) == 2
