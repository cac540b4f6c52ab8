"""The rendered Torque job script, run directly as Torque would run it, completes the demo run.

There is no Torque server here, so the test plays its part: it sets the
variables pbs_mom gives a job (PBS_O_WORKDIR, PBS_JOBNAME, PBS_JOBID,
PBS_NODEFILE with one line per core, PBS_NP) and runs the script with bash.
Everything after that is real: mpirun with three ranks, CASA on the sim_tiny
data, the manifest, the per-job log.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.mpi, pytest.mark.casa]

RANKS = 3


def test_rendered_torque_script_completes_the_demo(sim_tiny, make_runfile, tmp_path: Path) -> None:
    # the demo run cut to the test budget as in test_slurm.py: one SPW, 12m, 64 px, single scale
    runfile = make_runfile(sim_tiny, tmp_path, run={"name": "demo-torque"},
                           imaging={"spws": ["244.936GHz_CS"], "arrays": ["12m"], "imsize": 64,
                                    "cell_arcsec": 0.15},
                           spw={"244.936GHz_CS": {"nchunks": 2, "scales": [0]}})
    render = subprocess.run([sys.executable, "-m", "faust_hpc", "torque", str(runfile), "--nodes", "1",
                             "--ppn", str(RANKS), "--walltime", "00:30:00", "--stage-to-shm"],
                            capture_output=True, text=True, timeout=120)
    assert render.returncode == 0, render.stderr
    script = tmp_path / "job.pbs"
    script.write_text(render.stdout)
    assert "#PBS -l nodes=1:ppn=3" in render.stdout

    workdir = tmp_path / "submitdir"
    workdir.mkdir()
    nodefile = tmp_path / "nodefile"
    nodefile.write_text(f"{socket.gethostname()}\n" * RANKS)
    env = dict(os.environ, PBS_O_WORKDIR=str(workdir), PBS_JOBNAME="demo-torque",
               PBS_JOBID="4242.torque-server", PBS_NODEFILE=str(nodefile), PBS_NP=str(RANKS))
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=400)

    product_dir = tmp_path / "products"
    log_path = product_dir / "logs" / "jobs" / "torque-demo-torque-4242.torque-server.log"
    log = log_path.read_text() if log_path.exists() else proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "run complete" in log and f"{RANKS} rank(s)" in log and f"workdir {workdir}" in log
    # staged into /dev/shm for the job, and cleaned up on exit
    assert "measurement sets read from: /dev/shm/faust-hpc-4242.torque-server" in log
    assert not Path("/dev/shm/faust-hpc-4242.torque-server").exists()

    finals = sorted((product_dir / "images").rglob("*_clean.image.pbcor.common.fits"))
    assert finals, sorted(p.name for p in (product_dir / "images").rglob("*"))
    records = [json.loads(line) for line in
               (product_dir / ".faust-hpc" / "manifest.jsonl").read_text().splitlines() if line.strip()]
    done = [r["unit"] for r in records if r.get("event") == "done"]
    assert done and len(done) == len(set(done))
    assert not [r for r in records if r.get("event") == "failed"]
