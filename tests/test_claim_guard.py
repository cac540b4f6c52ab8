"""``--break-lock`` and leases with real launchers (issue 13, items 3, 6, 8; issue 12, item 4).

Several launchers may drain one run (leases, :mod:`faust_hpc.run.leases`);
``--break-lock`` declares the others dead, and is refused beside a launcher
that is verifiably alive on this host. The first launcher runs under real
``mpirun`` held at a gate; the others are real ``faust-hpc run`` /
``faust-hpc image`` processes. A refused command exits 2 with one line and
writes nothing; one that joins takes no unit another holds.
"""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from faust_hpc.plan import build_plan
from faust_hpc.runfile import load_runfile

from faust_hpc.run.manifest import Manifest
from faust_hpc.run.records import LauncherRecord, unit_record
from tests.launcher_helpers import (CS, KEY_CS, REPO, VENV_BIN, kill_tree, open_gate, reaped, records, run, start,
                                    wait_for, write_run)


def _chunks_started(runfile, n: int = 1) -> bool:
    return len([r for r in records(runfile) if r.get("event") == "started" and "chunk" in r["unit"]]) >= n


def _held_run(tmp_path):
    gate = tmp_path / "open-the-gate"
    runfile, env = write_run(tmp_path, nchunks={CS: 2}, spws=(CS,), control={"gate": {"*chunk*": str(gate)}})
    return runfile, env, gate


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "faust-hpc"), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.mpi
def test_break_lock_is_refused_beside_a_live_launcher_and_image_joins_it(tmp_path):
    runfile, env, gate = _held_run(tmp_path)
    with reaped(start(runfile, env, 3)) as first:
        # both chunks started (two workers) and held at the gate
        wait_for(lambda: _chunks_started(runfile, 2), what="the first launcher to start both chunks")
        (rank0,) = [r for r in records(runfile) if r.get("event") == "launcher"]
        n = len(records(runfile))
        broke = run(runfile, env, None, "--break-lock")
        assert broke.returncode == 2, broke.stdout + broke.stderr
        line = broke.stderr.strip()
        assert "\n" not in line and "--break-lock refused" in line and f"pid {rank0['pid']}" in line
        image_break = _cli("image", str(runfile), "--break-lock", env=env)   # item 6: the serial path too
        assert image_break.returncode == 2 and "--break-lock refused" in image_break.stderr
        assert len(records(runfile)) == n, "a refused launcher wrote to the manifest"
        # without --break-lock the serial command joins the run: it runs what nobody holds
        with reaped(subprocess.Popen([str(VENV_BIN / "faust-hpc"), "image", str(runfile)], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)) as image:
            wait_for(lambda: len([r for r in records(runfile) if r.get("event") == "launcher"]) == 2,
                     what="the image command to join")
            out = open_gate(first, gate, timeout=120)
            image_out, _ = image.communicate(timeout=120)
    assert first.returncode == 0, out
    assert image.returncode == 0, image_out
    started = [r["unit"] for r in records(runfile) if r.get("event") == "started"]
    every_unit = build_plan(load_runfile(runfile, check_paths=False)).units     # each started exactly once
    assert len(started) == len(set(started)) == len(every_unit)
    assert not [r for r in records(runfile) if r.get("event") == "interrupted"]


def test_break_lock_takes_over_a_launcher_that_is_gone(tmp_path):
    """What --break-lock is for: the launcher's process is gone (here: killed)."""
    runfile, env, gate = _held_run(tmp_path)
    first = start(runfile, env)
    wait_for(lambda: _chunks_started(runfile), what="a chunk to start")
    kill_tree(first.pid)
    first.wait()
    gate.touch()
    res = run(runfile, env, None, "--break-lock")
    assert res.returncode == 0, res.stderr


def _held_by_another_host(runfile, lease_s: float) -> str:
    """The run's prepare unit claimed by a launcher on another host (its
    process cannot be checked from here) whose lease lasts ``lease_s`` more."""
    manifest = Manifest(runfile.parent / "products")
    now = time.time()
    rec = LauncherRecord(id="node-elsewhere-17:4242:abcd", host="node-elsewhere-17", pid=4242, lease_s=lease_s,
                         until=now + lease_s)
    manifest.append(rec, unit_record(f"{KEY_CS}/prepare", "started", attempt=1, host="node-elsewhere-17",
                                     pid=4242, launcher=rec.id))
    return rec.id


def test_a_launcher_elsewhere_holds_its_units_until_its_lease_ends_or_break_lock(tmp_path):
    """A launcher on another host is alive while its lease lasts: status shows
    it and its unit; ``--break-lock`` declares it dead (a ``revoke`` record)
    and the unit is cleaned and redone; a lease that runs out frees the unit
    without help."""
    runfile, env = write_run(tmp_path, nchunks={CS: 1}, spws=(CS,))
    lid = _held_by_another_host(runfile, lease_s=600)
    st = json.loads(_cli("status", str(runfile), "--json", env=env).stdout)
    (ls,) = st["launchers"]
    assert ls["alive"] and ls["host"] == "node-elsewhere-17" and ls["running"] == [f"{KEY_CS}/prepare"]
    res = run(runfile, env, None, "--break-lock")
    assert res.returncode == 0, res.stderr
    recs = records(runfile)
    assert [r["launchers"] for r in recs if r.get("event") == "revoke"] == [[lid]]
    prep = [r for r in recs if r.get("unit") == f"{KEY_CS}/prepare"]
    assert [(r["event"], r["attempt"]) for r in prep] == [("started", 1), ("interrupted", 1), ("started", 2),
                                                          ("done", 2)]

    later, env2 = write_run(tmp_path, "lapsing", nchunks={CS: 1}, spws=(CS,))
    _held_by_another_host(later, lease_s=4)
    t0 = time.time()
    res = run(later, env2)
    assert res.returncode == 0, res.stderr
    restart = [r for r in records(later) if r.get("unit") == f"{KEY_CS}/prepare" and r.get("event") == "started"]
    assert restart[-1]["attempt"] == 2 and restart[-1]["time"] >= t0 + 3   # only once the lease had run out


def test_rerun_is_refused_while_a_live_launcher_runs_a_unit_it_would_invalidate(tmp_path):
    """``rerun`` writes its records under the lock, and never invalidates a
    unit a live launcher is running (one line, exit 2, nothing written)."""
    runfile, env = write_run(tmp_path, nchunks={CS: 2}, spws=(CS,))
    assert run(runfile, env).returncode == 0
    manifest = Manifest(runfile.parent / "products")
    other = LauncherRecord(id="node-elsewhere-17:4242:abcd", host="node-elsewhere-17", pid=4242, lease_s=600,
                           until=time.time() + 600)
    manifest.append(other, unit_record(f"{KEY_CS}/chunk01", "started", attempt=2, host="node-elsewhere-17",
                                       pid=4242, launcher=other.id))
    n = len(records(runfile))
    res = _cli("rerun", str(runfile), "--spw", CS, "--chunk", "1", env=env)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert f"{KEY_CS}/chunk01" in res.stderr and "host node-elsewhere-17 pid 4242" in res.stderr
    assert len(records(runfile)) == n
    ok = _cli("rerun", str(runfile), "--spw", CS, "--chunk", "0", env=env)   # a unit nobody runs
    assert ok.returncode == 0, ok.stderr
    plan = build_plan(load_runfile(runfile, check_paths=False))     # chunk00 and everything downstream of it
    downstream = {uid for uid, u in plan.units.items() if u.kind not in ("prepare", "chunk")}
    assert {r["unit"] for r in records(runfile)[n:]} == {f"{KEY_CS}/chunk00", *downstream}
