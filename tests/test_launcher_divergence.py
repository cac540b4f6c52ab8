"""A chunk whose clean diverges, through the real launcher (cheap units, real mpirun).

The guard (:mod:`faust_hpc.imaging.guard`) stops a runaway tclean with a
:class:`~faust_hpc.errors.DivergenceError`; here a cheap unit raises it
(``tests/units_cheap.py``, mode ``diverge``) so the launcher's handling is
tested in seconds. The same path on real data: tests/test_real_ngc5921.py.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.launcher_helpers import CONT, CS, KEY_CONT, KEY_CS, REPO, VENV_BIN, finish_record, records, run, write_run
from tests.units_cheap import DIVERGE_REASON


@pytest.mark.mpi
def test_diverged_chunk_is_flagged_not_retried_and_the_rest_of_the_run_goes_on(tmp_path):
    bad = f"{KEY_CS}/chunk01"
    runfile, env = write_run(tmp_path, retries=2, nchunks={CS: 2, CONT: 2},
                             control={"fail": {bad: {"mode": "diverge"}}})
    res = run(runfile, env, 3, timeout=300)          # bounded: the run ends by itself
    assert res.returncode == 1, res.stdout + res.stderr
    recs = records(runfile)

    # recorded once, flagged with the guard's reason, not retried
    assert [r["attempt"] for r in recs if r.get("unit") == bad and r["event"] == "started"] == [1]
    (failed,) = [r for r in recs if r.get("unit") == bad and r["event"] == "failed"]
    assert failed["error_type"] == "DivergenceError" and failed["retry"] is False
    assert failed["diverged"] == {"stage": "nomask", "reason": DIVERGE_REASON, "nmajordone": 17, "cap": 17,
                                  "channels": [0]}
    assert failed["error"] == f"DivergenceError: tclean nomask diverged: {DIVERGE_REASON}"

    # that image cannot be finished; every other image is
    started = {r["unit"] for r in recs if r.get("event") == "started"}
    done = {r["unit"] for r in recs if r.get("event") == "done"}
    assert not {f"{KEY_CS}/beam", f"{KEY_CS}/finalize", f"{KEY_CS}/moments", f"{KEY_CS}/qa"} & started
    assert f"{KEY_CS}/chunk00" in done
    assert {f"{KEY_CONT}/finalize", f"{KEY_CONT}/moments", f"{KEY_CONT}/qa"} <= done
    assert finish_record(runfile)["failed"] == [bad]

    # the run's summary: the chunk flagged with the reason, its dependents blocked
    (line,) = [ln for ln in res.stderr.splitlines() if f"DIVERGED {bad}:" in ln]
    assert ("tclean nomask stopped after 17 major cycles (cap 17): " + DIVERGE_REASON) in line
    assert "flagged, not retried" in line
    (blocked,) = [ln for ln in res.stderr.splitlines() if "not run because a unit they need failed" in ln]
    # (the summary names the first five, sorted: beam and concats; finalize is in the status below)
    assert f"{KEY_CS}/beam" in blocked and KEY_CONT not in blocked
    assert f"FAILED {bad}" not in res.stderr

    # status: text and --json
    cli = [str(VENV_BIN / "faust-hpc"), "status", str(runfile)]
    status = subprocess.run(cli, cwd=REPO, capture_output=True, text=True, env=env)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    (flag,) = [ln for ln in lines if ln.startswith(f"DIVERGED: {bad} (attempt 1, flagged, not retried): ")]
    assert DIVERGE_REASON in flag and "traceback: " in flag
    blocked = [f"{KEY_CS}/{p}" for p in ("beam", *(f"concat{i:02d}" for i in range(9)), "finalize", "moments",
                                         "post00", "post01", "qa")]
    assert f"  blocked by it: {', '.join(blocked)}" in lines
    status = subprocess.run(cli + ["--json"], cwd=REPO, capture_output=True, text=True, env=env)
    (entry,) = json.loads(status.stdout)["failed"]
    assert entry["unit"] == bad and entry["error_type"] == "DivergenceError"
    assert entry["diverged"]["reason"] == DIVERGE_REASON and entry["diverged"]["channels"] == [0]
    assert entry["blocked"] == blocked
