"""Manifest: concurrent appends under the real filelock, torn lines, derived
states, leases of several launchers, --break-lock, snapshot + tail, group
commit, ENOSYS fallback."""
from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

import pytest

from faust_hpc.run import locks
from faust_hpc.run.claim import RunBusyError, break_lock, proc_start_ticks
from faust_hpc.run.journal import Journal
from faust_hpc.run.manifest import Manifest, derive_states
from faust_hpc.run.records import FinishRecord, LauncherRecord, LeaseRecord, RevokeRecord, hostname, unit_record
from faust_hpc.run.snapshot import RunState, load_state, write_snapshot


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


def _launcher(host: str = "node-elsewhere-17", pid: int = 4242, until_in: float = 60.0, **kw) -> LauncherRecord:
    t = time.time()
    return LauncherRecord(id=f"{host}:{pid}:{kw.pop('tag', 'x')}", host=host, pid=pid, time=t, until=t + until_in, **kw)


def test_a_launcher_is_alive_while_its_lease_lasts_and_not_after_finish_or_revoke():
    """Replaces "a second launcher is refused": launchers are alive while
    their lease lasts; finish, revoke, a lapsed lease, a dead process on this
    host and a later incarnation of the same Slurm job each end it."""
    state = RunState()
    a, b = _launcher(tag="a"), _launcher(tag="b", until_in=1.0)
    state.fold([a.to_json(), b.to_json()])
    assert state.alive(a.id) and state.alive(b.id)
    assert not state.alive(b.id, at=time.time() + 2)                    # its lease ran out
    state.fold([LeaseRecord(launcher=b.id, until=time.time() + 60).to_json()])
    assert state.alive(b.id, at=time.time() + 2)                        # ... unless renewed
    state.fold([FinishRecord(launcher=a.id).to_json()])
    assert not state.alive(a.id)
    state.fold([RevokeRecord(launchers=[b.id]).to_json()])
    assert not state.alive(b.id)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    here = _launcher(host=hostname(), pid=int(dead), tag="here")
    state.fold([here.to_json()])
    assert not state.alive(here.id)                                     # same host, process gone
    job1 = _launcher(tag="j1", slurm_job="77")
    job2 = _launcher(host="node02", tag="j2", slurm_job="77")
    state.fold([job1.to_json()])
    assert state.alive(job1.id)
    state.fold([job2.to_json()])                                        # the requeued job's next run
    assert not state.alive(job1.id) and state.alive(job2.id)


def test_break_lock_revokes_launchers_elsewhere_but_not_one_alive_here(tmp_path):
    m = Manifest(tmp_path)
    away = _launcher()
    mine = LauncherRecord(id="me", pid=os.getpid(), start_ticks=proc_start_ticks(os.getpid()),
                          until=time.time() + 60)
    m.append(away)
    assert break_lock(m, RunState()) == [away.id]
    assert not load_state(m).alive(away.id)
    m.append(mine)
    n = len(m.records())
    with pytest.raises(RunBusyError, match=rf"--break-lock refused: .* pid {os.getpid()}"):
        break_lock(m, RunState())
    assert len(m.records()) == n


def test_snapshot_plus_tail_equals_a_full_scan_and_a_replaced_manifest_is_read_in_full(tmp_path):
    m = Manifest(tmp_path)
    uid = "F/L/joint/0.5/chunk01"
    m.append(_launcher(), {"event": "freeze", "nchunks": {"F/L/joint/0.5": 3}},
             unit_record(uid, "started", attempt=1), unit_record(uid, "failed", attempt=1, error="boom"))
    assert write_snapshot(m, load_state(m, use_snapshot=False))
    assert not write_snapshot(m, load_state(m))            # covers no more than the one on disk
    m.append(unit_record(uid, "started", attempt=2), unit_record(uid, "done", attempt=2, outputs=["o"]))
    snap, full = load_state(m), load_state(m, use_snapshot=False)
    assert snap.records_folded == full.records_folded == 6
    assert snap.units[uid] == full.units[uid] and snap.units[uid].status == "done"
    assert snap.frozen == full.frozen == {"F/L/joint/0.5": 3} and set(snap.launchers) == set(full.launchers)
    # a new manifest under the old snapshot (product_dir reused): the snapshot must not be trusted
    m.path.unlink()
    m.append(unit_record("G/L/joint/0.5/qa", "started", attempt=1), unit_record(uid, "started", attempt=1),
             unit_record(uid, "done", attempt=1), unit_record("G/L/joint/0.5/qa", "done", attempt=1),
             unit_record("G/L/joint/0.5/moments", "started", attempt=1))
    fresh = load_state(m)
    assert set(fresh.units) == {uid, "G/L/joint/0.5/qa", "G/L/joint/0.5/moments"} and not fresh.frozen


def test_group_commit_writes_a_batch_with_one_fsync_and_keeps_order(tmp_path, monkeypatch):
    m = Manifest(tmp_path)
    journal = Journal(m, "me", max_delay_s=60, max_batch=3)
    fsyncs = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd)))
    journal.add(unit_record("a", "done", attempt=1), unit_record("b", "done", attempt=1))
    assert not journal.due() and not m.path.exists()
    journal.add(unit_record("c", "done", attempt=1))
    assert journal.due()                                     # the buffer is full
    journal.commit(unit_record("d", "started", attempt=1))
    assert len(fsyncs) == 1 and [r["unit"] for r in m.records()] == ["a", "b", "c", "d"]
    assert journal.pending == 0


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
    # Without flock the claim step and --break-lock take the strict soft lock too.
    m.append(_launcher())
    assert break_lock(m, RunState()) and isinstance(m.lock._make(), locks.StrictSoftFileLock)
    monkeypatch.setattr(fcntl, "flock", real_flock)
