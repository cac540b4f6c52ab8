"""Several launchers on one run, kills at any point, and the no-flock path (issue 12, items 3 and 4).

Real processes throughout: ``faust-hpc run`` under real ``mpirun`` and alone,
with the cheap executor (tests/units_cheap.py) for the mechanics. Judged by
the manifest (every unit done exactly once, no unit run by two launchers)
and by the products (identical to one launcher's).
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from faust_hpc.run.journal import FAULT_ENV
from tests.launcher_helpers import (unit_count, CONT, CS, KEY_CS, REPO, descendants, kill_tree, products, reaped, records, run,
                                    start, wait_for, write_run)

NCHUNKS = {CS: 6, CONT: 6}


def _events(recs: list[dict], event: str) -> list[dict]:
    return [r for r in recs if r.get("event") == event and "unit" in r]


def _done_once(recs: list[dict]) -> list[str]:
    done = [r["unit"] for r in _events(recs, "done")]
    assert len(done) == len(set(done)), sorted({u for u in done if done.count(u) > 1})
    return done


def _reference(tmp_path) -> dict[str, bytes]:
    ref, env = write_run(tmp_path, "reference", nchunks=NCHUNKS)
    res = run(ref, env)
    assert res.returncode == 0, res.stderr
    return products(ref)


def _launcher_of(runfile, proc: subprocess.Popen) -> str:
    """The launcher id of a started command (its rank 0 is the process or one below it)."""
    def find() -> str | None:
        pids = set(descendants(proc.pid))
        return next((r["id"] for r in records(runfile) if r.get("event") == "launcher" and r["pid"] in pids), None)
    return wait_for(find, what="the launcher record")


@pytest.mark.mpi
def test_three_launchers_one_killed_survivors_finish_every_unit_once(tmp_path):
    """Two ``mpirun -n 2`` launchers and one serial launcher drain one run; one
    of the MPI launchers is SIGKILLed (its whole tree, as a node failure) while
    it runs a unit. The survivors take its unit over and finish the run:
    every unit is done exactly once, and the products equal one launcher's."""
    runfile, env = write_run(tmp_path, "shared", nchunks=NCHUNKS, control={"sleep": {"*chunk*": 0.6}})
    with reaped(start(runfile, env, 2)) as a, reaped(start(runfile, env, 2)) as b, reaped(start(runfile, env)) as c:
        victim = _launcher_of(runfile, a)

        def victim_busy() -> str | None:
            recs = records(runfile)
            ended = {(r["unit"], r["attempt"]) for r in recs if r.get("event") in ("done", "failed", "interrupted")}
            if len(_events(recs, "done")) < 3:
                return None
            return next((r["unit"] for r in _events(recs, "started") if r.get("launcher") == victim
                         and "chunk" in r["unit"] and (r["unit"], r["attempt"]) not in ended), None)
        held = wait_for(victim_busy, timeout=120, what="the victim launcher to run a chunk mid-run")
        kill_tree(a.pid)
        a.wait()
        out_b, _ = b.communicate(timeout=180)
        out_c, _ = c.communicate(timeout=180)
    assert b.returncode == 0, out_b
    assert c.returncode == 0, out_c
    recs = records(runfile)
    done = _done_once(recs)
    assert len(done) == unit_count(runfile)
    launchers = {r["launcher"] for r in _events(recs, "started")}
    assert victim in launchers and len(launchers) == 3, launchers
    (redone,) = [r for r in _events(recs, "done") if r["unit"] == held]
    assert redone["launcher"] != victim                      # a survivor took the victim's unit over
    assert products(runfile) == _reference(tmp_path)


def test_a_kill_during_a_group_commit_loses_at_most_the_buffered_records(tmp_path):
    """SIGKILL of rank 0 in the middle of a group commit (``torn``: half of
    the batch written, the last line torn) and before one (``kill``): the
    manifest stays readable, no unit recorded done is redone, the resumed run
    redoes exactly the units whose end records were lost (started, never
    ended), and the products equal an uninterrupted run's."""
    reference = _reference(tmp_path)
    for mode in ("torn", "kill"):
        runfile, env = write_run(tmp_path, mode, nchunks=NCHUNKS)
        env = dict(env, **{FAULT_ENV: f"{mode}:4"})
        res = run(runfile, env, None, "--local-workers", "2")
        assert res.returncode == -9, res.stdout + res.stderr      # killed by the fault, mid-run
        before = records(runfile)
        done_before = set(_done_once(before))
        ended = {(r["unit"], r["attempt"]) for r in before if r.get("event") in ("done", "failed", "interrupted")}
        lost = {r["unit"] for r in _events(before, "started") if (r["unit"], r["attempt"]) not in ended}
        assert 0 < len(done_before) < unit_count(runfile) and lost
        del env[FAULT_ENV]
        res = run(runfile, env)
        assert res.returncode == 0, res.stderr
        after = records(runfile)[len(before):]
        restarted = {r["unit"] for r in _events(after, "started")}
        assert not restarted & done_before
        never_started = set(_done_once(records(runfile))) - {r["unit"] for r in _events(before, "started")}
        assert lost <= restarted <= lost | never_started
        assert len(_done_once(records(runfile))) == unit_count(runfile)
        assert products(runfile) == reference, mode


def test_a_finished_units_record_is_committed_while_nothing_else_happens(tmp_path):
    """The lateness bound: with nothing to claim (the other chunk still runs,
    the finalize waits for it), a finished unit's end record is still
    committed (the journal is due after max_delay_s), not held until the next
    claim or the end of the run."""
    gate = tmp_path / "gate"
    runfile, env = write_run(tmp_path, nchunks={CS: 2}, spws=(CS,), control={"gate": {f"{KEY_CS}/chunk00": str(gate)}})
    with reaped(start(runfile, env, None, "--local-workers", "2")) as proc:
        wait_for(lambda: any(r["unit"] == f"{KEY_CS}/chunk01" for r in _events(records(runfile), "done")),
                 timeout=60, what="chunk01's done record")
        assert not [r for r in _events(records(runfile), "done") if r["unit"] == f"{KEY_CS}/chunk00"]
        gate.touch()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out


def test_two_launchers_without_flock_use_the_strict_soft_lock_and_do_every_unit_once(tmp_path):
    """On a filesystem without flock both launchers fall back to the
    StrictSoftFileLock, and still never claim one unit twice."""
    runfile, env = write_run(tmp_path, "noflock", nchunks=NCHUNKS, control={"sleep": {"*chunk*": 0.3}})
    cmd = [sys.executable, str(REPO / "tests" / "no_flock.py"), "run", str(runfile), "--local-workers", "2"]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True) for _ in range(2)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=180)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                kill_tree(p.pid)
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
        assert "using StrictSoftFileLock" in out
    recs = records(runfile)
    assert len(_done_once(recs)) == unit_count(runfile)
    started = [r["unit"] for r in _events(recs, "started")]
    assert len(started) == len(set(started)) == unit_count(runfile)
    assert len({r["launcher"] for r in _events(recs, "started")}) == 2
    assert products(runfile) == _reference(tmp_path)
