"""Manifest: concurrent appends under the real filelock, torn lines, derived
states, run ownership (second launcher, stale owner, other host), ENOSYS fallback."""
from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import subprocess
import sys

import pytest

from faust_hpc.layout import RunLayout
from faust_hpc.run import locks
from faust_hpc.run.claim import RunBusyError, RunClaim
from faust_hpc.run.manifest import Manifest, derive_states
from faust_hpc.run.records import hostname, unit_record


def _append_many(product_dir: str, proc: int, n: int) -> None:
    m = Manifest(product_dir)
    for i in range(n):
        m.append(unit_record(f"F/L/joint/0.5/chunk{proc:02d}", "started", attempt=i + 1, rank=proc,
                             note="x" * (i % 7) * 100))


def test_sixteen_processes_appending_lose_no_record(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), p, 40)) for p in range(16)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = Manifest(tmp_path).path.read_text().splitlines()
    assert len(lines) == 16 * 40
    recs = [json.loads(line) for line in lines]  # every line whole: none interleaved
    seen = {(r["rank"], r["attempt"]) for r in recs}
    assert seen == {(p, i + 1) for p in range(16) for i in range(40)}


def test_torn_last_line_is_tolerated_and_not_glued_to_the_next(tmp_path):
    m = Manifest(tmp_path)
    m.append(unit_record("F/L/joint/0.5/prepare", "started", attempt=1),
             unit_record("F/L/joint/0.5/prepare", "done", attempt=1, outputs=["a"], info={"nchunks": 2}))
    with open(m.path, "ab") as fh:  # a crash in the middle of an append
        fh.write(b'{"unit": "F/L/joint/0.5/chunk00", "event": "sta')
    states = m.states()
    assert states["F/L/joint/0.5/prepare"].status == "done"
    assert states["F/L/joint/0.5/prepare"].info == {"nchunks": 2}
    assert "F/L/joint/0.5/chunk00" not in states
    m.append(unit_record("F/L/joint/0.5/chunk00", "started", attempt=1))
    states = m.states()
    assert states["F/L/joint/0.5/chunk00"].status == "running"
    assert len(m.records()) == 3


def test_derived_states_follow_events():
    uid = "F/L/joint/0.5/chunk01"
    recs = [unit_record(uid, "started", attempt=1), unit_record(uid, "failed", attempt=1, error="boom"),
            unit_record(uid, "started", attempt=2), unit_record(uid, "done", attempt=2, outputs=["o"])]
    st = derive_states(recs)[uid]
    assert (st.status, st.attempt, st.failures, st.outputs) == ("done", 2, 0, ["o"])
    st = derive_states(recs + [unit_record(uid, "invalidated", attempt=2)])[uid]
    assert (st.status, st.attempt, st.outputs) == ("pending", 2, [])
    st = derive_states(recs[:2])[uid]
    assert (st.status, st.failures, st.error) == ("failed", 1, "boom")


def test_scan_of_many_records_is_one_pass(tmp_path):
    m = Manifest(tmp_path)
    recs = [unit_record(f"F/L/joint/0.5/chunk{i % 500:03d}", ("started", "done")[i % 2], attempt=1)
            for i in range(20000)]
    m.append(*recs)
    assert len(m.states()) == 500


def test_second_claim_refused_with_owner_named(tmp_path):
    first = RunClaim(tmp_path).acquire()
    try:
        with pytest.raises(RunBusyError, match=rf"another launcher is running this run now \(host .* pid {os.getpid()}"):
            RunClaim(tmp_path).acquire()
    finally:
        first.release()
    RunClaim(tmp_path).acquire().release()  # free again once released


def test_stale_owner_on_this_host_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    d = RunLayout(tmp_path).state_dir
    d.mkdir(parents=True)
    (d / "owner.json").write_text(json.dumps({"host": hostname(), "pid": int(dead), "time": 0}))
    claim = RunClaim(tmp_path).acquire()
    assert claim.took_over["pid"] == int(dead)
    assert json.loads((d / "owner.json").read_text())["pid"] == os.getpid()
    claim.release()
    assert not (d / "owner.json").exists()


def test_owner_on_another_host_refused_until_break_lock(tmp_path):
    d = RunLayout(tmp_path).state_dir
    d.mkdir(parents=True)
    (d / "owner.json").write_text(json.dumps({"host": "node-elsewhere-17", "pid": 4242, "time": 0}))
    with pytest.raises(RunBusyError, match=r"another host \(host node-elsewhere-17 pid 4242.*--break-lock"):
        RunClaim(tmp_path).acquire()
    RunClaim(tmp_path).acquire(break_lock=True).release()


def test_flock_enosys_falls_back_to_strict_soft_lock(tmp_path, monkeypatch):
    """Lustre without -o flock answers ENOSYS: appends must still be locked."""
    import fcntl

    real_flock = fcntl.flock

    def no_flock(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    monkeypatch.setattr(locks, "_soft_dirs", set())
    m = Manifest(tmp_path)
    m.append(unit_record("F/L/joint/0.5/qa", "started", attempt=1))
    assert str(m.dir) in locks._soft_dirs
    assert isinstance(m.lock._make(), locks.StrictSoftFileLock)
    m.append(unit_record("F/L/joint/0.5/qa", "done", attempt=1))
    assert m.states()["F/L/joint/0.5/qa"].status == "done"
    # Without flock the live-owner record alone keeps a second launcher out.
    other = subprocess.Popen(["sleep", "30"])
    try:
        (m.dir / "owner.json").write_text(json.dumps({"host": hostname(), "pid": other.pid, "time": 0}))
        with pytest.raises(RunBusyError, match=f"pid {other.pid}"):
            RunClaim(tmp_path).acquire()
    finally:
        other.kill()
        other.wait()
    RunClaim(tmp_path).acquire().release()  # its owner is gone now: taken over
    monkeypatch.setattr(fcntl, "flock", real_flock)
