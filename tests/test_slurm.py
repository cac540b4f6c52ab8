"""The rendered Slurm job on a real single-node Slurm (started and stopped here, by PID).

The cluster comes from ``tests/slurm_cluster.py`` (Debian's Slurm + munge,
installed with apt-get if missing; the tests skip only when that fails). The
end-to-end tests submit what ``faust-hpc slurm ... --submit`` renders for the
demo run (the ``sim_tiny`` data, one SPW) and check the products, the requeue
path (``scontrol requeue`` mid-run: every unit done exactly once across both
runs, products identical to an uninterrupted run) and the walltime-signal path
(USR1 to the batch shell: no new units, self-requeue, completion).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_cluster import SlurmCluster, SlurmUnavailable, ensure_installed

pytestmark = pytest.mark.slurm

DEMO_SPW = "244.936GHz_CS"
# The demo run, cut to fit the test budget on a 2-core box: one SPW, 12m only, a 64 px
# image, single-scale clean; three chunks for two workers, so that a unit is still
# waiting when the walltime signal arrives.
DEMO_IMAGING = {"spws": [DEMO_SPW], "arrays": ["12m"], "imsize": 64, "cell_arcsec": 0.15}
DEMO_SPW_SETTINGS = {"nchunks": 3, "scales": [0]}
RANKS = 3          # rank 0 schedules, two workers image
JOB_TIMEOUT = 240  # s, a generous bound for one demo job on a busy 2-core box


@pytest.fixture(scope="module")
def slurm() -> SlurmCluster:
    if os.geteuid() != 0:
        pytest.skip("installing Slurm and starting slurmctld/slurmd/munged needs root")
    try:
        ensure_installed()
    except SlurmUnavailable as exc:
        pytest.skip(f"no Slurm: {exc}")
    cluster = SlurmCluster(ncpus=8)
    try:  # installed but not starting is a failure, not a skip
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


# ------------------------------------------------------------------ helpers

def _faust(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "faust_hpc", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def submit_rendered(runfile: Path, *extra: str, time_limit: str = "00:30:00") -> int:
    """`faust-hpc slurm RUNFILE ... --submit`, returning the Slurm job id."""
    proc = _faust("slurm", str(runfile), "--nodes", "1", "--ntasks-per-node", str(RANKS),
                  "--time", time_limit, *extra, "--submit")
    assert proc.returncode == 0, proc.stderr
    # "submitted Slurm job 12: script ..., log ..."
    return int(proc.stdout.split("submitted Slurm job ", 1)[1].split(":", 1)[0])


def job_log(product_dir: Path, jobid: int) -> Path:
    found = sorted((product_dir / "logs" / "jobs").glob(f"slurm-*-{jobid}.out"))
    assert found, f"no job log for {jobid} in {product_dir / 'logs' / 'jobs'}"
    return found[0]


def manifest_records(product_dir: Path) -> list[dict]:
    path = product_dir / ".faust-hpc" / "manifest.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a torn last line while the job writes
    return out


def unit_events(records: list[dict], event: str) -> list[dict]:
    return [r for r in records if r.get("event") == event and "unit" in r]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_done(slurm: SlurmCluster, jobid: int, product_dir: Path) -> str:
    """Wait until the job has left the queue; return its log."""
    if not slurm.wait_gone(jobid, JOB_TIMEOUT):
        log = job_log(product_dir, jobid).read_text()
        raise AssertionError(f"job {jobid} still {slurm.job_state(jobid)} after {JOB_TIMEOUT} s:\n"
                             + log[-4000:])
    return job_log(product_dir, jobid).read_text()


def final_products(product_dir: Path) -> dict[str, Path]:
    return {p.relative_to(product_dir).as_posix(): p
            for p in sorted((product_dir / "images").rglob("*.fits"))}


def fits_data(path: Path):
    from astropy.io import fits
    with fits.open(path) as hdul:
        return hdul[0].data.copy()


def assert_every_unit_done_once(records: list[dict]) -> set[str]:
    done = [r["unit"] for r in unit_events(records, "done")]
    dupes = sorted({u for u in done if done.count(u) > 1})
    assert not dupes, f"units done more than once: {dupes}"
    assert not unit_events(records, "failed"), unit_events(records, "failed")
    return set(done)


def assert_same_products(a: Path, b: Path) -> None:
    import numpy as np
    pa, pb = final_products(a), final_products(b)
    assert pa and set(pa) == set(pb), (sorted(pa), sorted(pb))
    for name in pa:
        da, db = fits_data(pa[name]), fits_data(pb[name])
        assert da.shape == db.shape and np.array_equal(da, db, equal_nan=True), \
            f"{name} differs between the uninterrupted and the interrupted run"


@pytest.fixture(scope="module")
def demo_runfile_factory(sim_tiny, tmp_path_factory):
    """Run files for the demo data restricted to one SPW, each with its own product_dir."""
    from faust_hpc.simulate.runfiles import write_runfile_variant

    def make(tag: str) -> Path:
        where = tmp_path_factory.mktemp(f"slurm-{tag}")
        return write_runfile_variant(sim_tiny, where / "demo.toml", run={"name": f"demo-{tag}"},
                                     imaging=DEMO_IMAGING, spw={DEMO_SPW: DEMO_SPW_SETTINGS})
    return make


@pytest.fixture(scope="module")
def uninterrupted_job(slurm, demo_runfile_factory) -> tuple[int, Path]:
    """The demo run as one uninterrupted Slurm job, submitted but not waited for, so that
    it runs beside the interrupted job (the test budget); returns (job id, product_dir)."""
    runfile = demo_runfile_factory("plain")
    jobid = submit_rendered(runfile, "--launcher", "mpirun")  # the interrupted job uses srun
    return jobid, runfile.parent / "products"


def request_uninterrupted(slurm: SlurmCluster, job: tuple[int, Path]) -> Path:
    jobid, product_dir = job
    log = wait_done(slurm, jobid, product_dir)
    assert "run complete" in log, log[-4000:]
    return product_dir


@pytest.fixture(scope="module")
def uninterrupted(slurm, uninterrupted_job) -> Path:
    """The uninterrupted job's product_dir, once it has finished."""
    return request_uninterrupted(slurm, uninterrupted_job)


# ------------------------------------------------------------------ the cluster itself

def test_cluster_runs_batch_jobs_and_requeues(slurm: SlurmCluster, tmp_path: Path) -> None:
    """The fixture's cluster: sbatch --wait with 2 tasks, and a job that requeues itself."""
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n#SBATCH --ntasks=2\n#SBATCH --requeue\n#SBATCH --open-mode=append\n"
                      f"#SBATCH --output={tmp_path}/job.out\n"
                      'echo "run restart=${SLURM_RESTART_COUNT:-0}"\n'
                      'srun bash -c \'echo "task $SLURM_PROCID of $SLURM_NTASKS"\'\n'
                      'if [ "${SLURM_RESTART_COUNT:-0}" -eq 0 ]; then scontrol requeue "$SLURM_JOB_ID"; sleep 60; fi\n'
                      'echo "done restart=${SLURM_RESTART_COUNT:-0}"\n')
    t0 = time.monotonic()
    proc = subprocess.run(["sbatch", "--wait", str(script)], capture_output=True, text=True, timeout=120)
    out = (tmp_path / "job.out").read_text()
    assert proc.returncode == 0, proc.stderr + out
    assert "run restart=0" in out and "done restart=1" in out and "done restart=0" not in out
    assert out.count("task 0 of 2") == 2 and out.count("task 1 of 2") == 2
    print(f"self-requeued trivial job finished in {time.monotonic() - t0:.1f} s")


# ------------------------------------------------------------------ the demo run

def test_walltime_signal_then_requeue_resume_every_unit_once(slurm: SlurmCluster, uninterrupted_job,
                                                             demo_runfile_factory) -> None:
    """One job through both interruptions (one demo run less than two tests, same coverage):

    1. USR1 to the batch shell, as Slurm sends it ``--signal-before`` seconds before the
       time limit: the launcher hands out no new unit, lets the running ones finish,
       exits 3, and the job requeues itself (SLURM_RESTART_COUNT=1);
    2. ``scontrol requeue`` while the restarted job is working: it is requeued again
       (SLURM_RESTART_COUNT=2) and completes.
    Across the three runs every unit is done exactly once and the products equal the
    uninterrupted run's.
    """
    runfile = demo_runfile_factory("interrupted")
    product_dir = runfile.parent / "products"
    jobid = submit_rendered(runfile, "--signal-before", "120", "--stage-to-shm")
    assert slurm.job_info(jobid).get("Requeue") == "1"
    staged = Path(f"/dev/shm/faust-hpc-{jobid}")

    # --- 1. the walltime signal, once the first chunks are running
    wait_for(lambda: any("/chunk" in r["unit"] for r in unit_events(manifest_records(product_dir), "started")),
             JOB_TIMEOUT, "the first chunk to start")
    t_signal = time.time()
    slurm.signal_batch(jobid, "USR1")  # what Slurm does at --signal=B:USR1@120
    drained: list[dict] = []

    def first_run_drained() -> bool:
        drained[:] = [r for r in manifest_records(product_dir) if r.get("event") == "finish"]
        return bool(drained)
    wait_for(first_run_drained, JOB_TIMEOUT, "the first launcher to drain")
    assert drained[0]["drained"] and drained[0]["exit_status"] == 3, drained[0]
    records = manifest_records(product_dir)
    late_starts = [r["unit"] for r in unit_events(records, "started")
                   if t_signal + 1.0 < r["time"] < drained[0]["time"]]
    assert not late_starts, f"units handed out after USR1: {late_starts}"
    chunks_done = {r["unit"] for r in unit_events(records, "done") if "/chunk" in r["unit"]}
    assert len(chunks_done) < DEMO_SPW_SETTINGS["nchunks"], f"nothing left for the requeued job: {chunks_done}"

    # --- 2. scontrol requeue once the self-requeued job has finished a unit of its own
    restarted: list[dict] = []

    def resumed_work_done() -> bool:
        recs = manifest_records(product_dir)
        runs = [r for r in recs if r.get("event") == "run" and r["time"] > drained[0]["time"]]
        restarted[:] = runs
        if not runs:
            return False
        done = [r["time"] for r in unit_events(recs, "done") if r["time"] > runs[0]["time"]]
        # ... and to have started the next one, so the requeue kills a running CASA unit
        return bool(done) and any(r["time"] > min(done) for r in unit_events(recs, "started"))
    wait_for(resumed_work_done, JOB_TIMEOUT, "the requeued job to finish a unit and start the next",
             interval=0.2)
    t_requeue = time.time()
    slurm.requeue(jobid)
    log = wait_done(slurm, jobid, product_dir)
    for needle in ("USR1: time limit near", "requeueing job", "SLURM_RESTART_COUNT=1",
                   "TERM: job is being stopped", "SLURM_RESTART_COUNT=2", "run complete",
                   "launcher srun", f"measurement sets read from: {staged}"):
        assert needle in log, (needle, log[-4000:])
    assert not staged.exists(), "the staged copy in /dev/shm was not removed"

    records = manifest_records(product_dir)
    done = assert_every_unit_done_once(records)
    uninterrupted = request_uninterrupted(slurm, uninterrupted_job)
    assert done == {r["unit"] for r in unit_events(manifest_records(uninterrupted), "done")}
    assert_same_products(uninterrupted, product_dir)

    runs = sorted(r["time"] for r in records if r.get("event") == "run")
    assert len(runs) == 3, runs
    third = runs[2]
    first_start = min(r["time"] for r in unit_events(records, "started") if r["time"] >= third)
    timing = {"usr1_to_drained_s": round(drained[0]["time"] - t_signal, 1),
              "drained_to_relaunch_s": round(restarted[0]["time"] - drained[0]["time"], 1),
              "requeue_to_relaunch_s": round(third - t_requeue, 1),
              "requeue_to_first_unit_s": round(first_start - t_requeue, 1)}
    print("slurm resume timing", json.dumps(timing))


def test_rendered_script_runs_the_demo(uninterrupted: Path) -> None:
    products = final_products(uninterrupted)
    assert any(name.endswith("_clean.image.pbcor.common.fits") for name in products), sorted(products)
    records = manifest_records(uninterrupted)
    done = assert_every_unit_done_once(records)
    assert any(u.endswith("/finalize") for u in done)
    log = next((uninterrupted / "logs" / "jobs").glob("slurm-*.out")).read_text()
    assert "SLURM_RESTART_COUNT=0" in log and "launcher mpirun" in log
