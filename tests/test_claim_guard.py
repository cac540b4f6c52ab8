"""One launcher per run, even for ``--break-lock`` (issue 13, items 3, 6, 8).

Two real launchers on one run file: the first under real ``mpirun`` held at a
gate, the second a real ``faust-hpc run --break-lock`` / ``faust-hpc image``
process. The second must be refused with one line and exit 2, write nothing,
and the first must finish with every unit started exactly once.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from faust_hpc.layout import RunLayout
from faust_hpc.run.records import hostname
from tests.launcher_helpers import (CS, REPO, VENV_BIN, kill_tree, open_gate, reaped, records, run, start, wait_for,
                                    write_run)


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
def test_break_lock_and_image_are_refused_beside_a_live_launcher(tmp_path):
    runfile, env, gate = _held_run(tmp_path)
    with reaped(start(runfile, env, 3)) as first:
        # both chunks started (two workers) and held at the gate: the manifest is still until it opens
        wait_for(lambda: _chunks_started(runfile, 2), what="the first launcher to start both chunks")
        owner = json.loads(RunLayout(runfile.parent / "products").owner_path.read_text())
        n = len(records(runfile))
        broke = run(runfile, env, None, "--break-lock")
        assert broke.returncode == 2, broke.stdout + broke.stderr
        line = broke.stderr.strip()
        assert "\n" not in line and "--break-lock refused" in line and f"pid {owner['pid']}" in line
        image = _cli("image", str(runfile), env=env)   # item 6: the serial path claims the run too
        assert image.returncode == 2, image.stdout + image.stderr
        assert "another launcher is running this run now" in image.stderr
        image_break = _cli("image", str(runfile), "--break-lock", env=env)
        assert image_break.returncode == 2 and "--break-lock refused" in image_break.stderr
        assert len(records(runfile)) == n, "a refused launcher wrote to the manifest"
        assert json.loads(RunLayout(runfile.parent / "products").owner_path.read_text()) == owner
        out = open_gate(first, gate, timeout=120)
    assert first.returncode == 0, out
    started = [r["unit"] for r in records(runfile) if r.get("event") == "started"]
    assert len(started) == len(set(started)) == 6
    assert not [r for r in records(runfile) if r.get("event") == "interrupted"]


def test_break_lock_takes_over_an_owner_that_is_gone(tmp_path):
    """What --break-lock is for: the owner's process is gone (here: killed)."""
    runfile, env, gate = _held_run(tmp_path)
    first = start(runfile, env)
    wait_for(lambda: _chunks_started(runfile), what="a chunk to start")
    kill_tree(first.pid)
    first.wait()
    gate.touch()
    res = run(runfile, env, None, "--break-lock")
    assert res.returncode == 0, res.stderr


def test_owner_record_without_start_time_is_refused_naming_break_lock(tmp_path):
    """A same-host owner record without start ticks whose pid is alive cannot be
    told from a reused pid: refused, and the message says how to break it."""
    runfile, env = write_run(tmp_path, nchunks={CS: 1}, spws=(CS,))
    layout = RunLayout(runfile.parent / "products")
    layout.state_dir.mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        layout.owner_path.write_text(json.dumps({"host": hostname(), "pid": sleeper.pid, "time": 0}))
        res = run(runfile, env)
        assert res.returncode == 2
        assert len(res.stderr.strip().splitlines()) == 1
        assert f"pid {sleeper.pid}" in res.stderr and "re-run with --break-lock" in res.stderr
        assert not layout.manifest_path.exists()
        res = run(runfile, env, None, "--break-lock")
        assert res.returncode == 0, res.stderr
    finally:
        sleeper.kill()
        sleeper.wait()
    assert os.path.exists(layout.manifest_path)
