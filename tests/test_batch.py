"""Job-script rendering: headers from options, --extra passed through, loud failures.

No scheduler is needed here: rendered scripts are checked by content and with
``bash -n``; submitting them to a real Slurm is in ``test_slurm.py``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from faust_hpc import batch
from faust_hpc.cli import main as cli_main
from faust_hpc.errors import UserInputError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def runfile(tmp_path: Path) -> Path:
    (tmp_path / "data" / "CB68-Setup2").mkdir(parents=True)
    path = tmp_path / "demo.toml"
    path.write_text('[run]\nname = "CB68-demo"\ndata_dir = "data"\nproduct_dir = "products"\n'
                    '[imaging]\nfields = ["CB68"]\nsetup = 2\nspws = ["244.936GHz_CS"]\n')
    return path


def _slurm(runfile: Path, **kw) -> str:
    opts = dict(nodes=2, ntasks_per_node=4, time="01:30:00")
    opts.update(kw)
    return batch.render_slurm(batch.run_target(runfile), batch.SlurmOptions(**opts))


def _torque(runfile: Path, **kw) -> str:
    opts = dict(nodes=1, ppn=16, walltime="48:00:00")
    opts.update(kw)
    return batch.render_torque(batch.run_target(runfile), batch.TorqueOptions(**opts))


def _bash_syntax_ok(text: str, tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text(text)
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _header(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix + " ")]


def test_slurm_header_from_options_and_extra_passed_through(runfile: Path, tmp_path: Path) -> None:
    text = _slurm(runfile, mem="64gb", partition="compute",
                  extra=("#SBATCH --exclusive", "#SBATCH --constraint=skylake"), signal_before=300)
    header = _header(text, "#SBATCH")
    products = runfile.parent / "products"
    for line in ("#SBATCH --job-name=CB68-demo", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --time=01:30:00", "#SBATCH --mem=64G", "#SBATCH --partition=compute",
                 "#SBATCH --requeue", "#SBATCH --open-mode=append",
                 f"#SBATCH --output={products}/logs/jobs/slurm-%x-%j.out",
                 "#SBATCH --signal=B:USR1@300"):
        assert line in header, (line, header)
    # extra directives come last, unchanged, so they can override the defaults
    assert header[-2:] == ["#SBATCH --exclusive", "#SBATCH --constraint=skylake"]
    assert text.startswith("#!/bin/bash\n#SBATCH --job-name=")
    assert "{{" not in text and "}}" not in text.replace("}}}", "")
    assert f"RUNFILE={runfile}" in text
    assert f"FAUST_PREFIX={sys.prefix}" in text
    assert "srun --mpi=pmix" in text and "-m faust_hpc run" in text
    assert "scontrol requeue" in text and "trap on_usr1 USR1" in text
    assert "STAGE_ITEMS=(CB68-Setup2)" in text and "STAGE_TO_SHM=0" in text
    # running units may finish for half the warning; the rest is for recording and requeue
    assert "RUN_ARGS=(--drain-grace 150)" in text
    _bash_syntax_ok(text, tmp_path)


def test_slurm_options_without_mem_partition_signal(runfile: Path) -> None:
    text = _slurm(runfile, signal_before=0, launcher="mpirun", stage_to_shm=True)
    header = _header(text, "#SBATCH")
    assert not any(h.startswith(("#SBATCH --mem", "#SBATCH --partition", "#SBATCH --signal"))
                   for h in header)
    assert "LAUNCHER=mpirun" in text and "STAGE_TO_SHM=1" in text


def test_slurm_job_array_runs_one_launcher_per_task_on_the_same_run(runfile: Path, tmp_path: Path) -> None:
    """``--array N``: N tasks, each the same job script (one launcher each on
    one run file), logs per task, the requeue logic unchanged."""
    text = _slurm(runfile, array=4)
    header = _header(text, "#SBATCH")
    products = runfile.parent / "products"
    assert "#SBATCH --array=0-3" in header and "#SBATCH --requeue" in header
    assert f"#SBATCH --output={products}/logs/jobs/slurm-%x-%A_%a.out" in header
    assert text.count("-m faust_hpc run") == 2 and "scontrol requeue" in text
    assert "owner-left-by-earlier-run" not in text and "--break-lock" not in text.split("RUN_ARGS=(")[1]
    _bash_syntax_ok(text, tmp_path)
    with pytest.raises(UserInputError, match="--array 0: must be a whole number >= 1"):
        _slurm(runfile, array=0)


def test_torque_header_and_body(runfile: Path, tmp_path: Path) -> None:
    text = _torque(runfile, mem="64G", queue="batch", extra=("#PBS -m abe",))
    header = _header(text, "#PBS")
    for line in ("#PBS -N CB68-demo", "#PBS -l nodes=1:ppn=16", "#PBS -l walltime=48:00:00",
                 "#PBS -l mem=64gb", "#PBS -q batch", "#PBS -j oe"):
        assert line in header, (line, header)
    assert header[-1] == "#PBS -m abe"
    assert 'cd "${PBS_O_WORKDIR:?' in text and "JOBNAME=${PBS_JOBNAME:-CB68-demo}" in text
    assert f"RUN_ARGS=(--drain-grace {batch.TORQUE_DRAIN_GRACE_S})" in text
    assert '--hostfile "$NODEFILE"' in text and "NP=${PBS_NP:-" in text
    assert "{{" not in text
    _bash_syntax_ok(text, tmp_path)


def test_job_name_is_made_scheduler_safe(runfile: Path) -> None:
    assert batch.job_name("CB68 setup/1") == "CB68_setup_1"
    assert batch.job_name("1st-run") == "f1st-run"
    assert "#PBS -N my_job" in _torque(runfile, job_name="my job")


@pytest.mark.parametrize("kw, needle", [
    (dict(time="2h"), "--time '2h': expected HH:MM:SS"),
    (dict(time="01:75:00"), "expected HH:MM:SS"),
    (dict(time="00:00:00"), "longer than zero"),
    (dict(nodes=0), "--nodes 0: must be a whole number >= 1"),
    (dict(ntasks_per_node=-2), "--ntasks-per-node -2"),
    (dict(mem="lots"), "--mem 'lots': expected a memory size"),
    (dict(partition="a b"), "--partition 'a b'"),
    (dict(extra=("--exclusive",)), "must start with '#SBATCH '"),
    (dict(extra=("#PBS -m abe",)), "must start with '#SBATCH '"),
    (dict(extra=("#SBATCH --a\n#SBATCH --b",)), "no newlines"),
    (dict(time="00:01:00", signal_before=120), "--signal-before 120: must be shorter than --time"),
    (dict(launcher="aprun"), "--launcher 'aprun'"),
])
def test_slurm_bad_options_fail_with_one_clear_line(runfile: Path, kw: dict, needle: str) -> None:
    with pytest.raises(UserInputError) as err:
        _slurm(runfile, **kw)
    message = str(err.value)
    assert needle in message and "\n" not in message


@pytest.mark.parametrize("kw, needle", [
    (dict(walltime="1-00:00:00"), "--walltime '1-00:00:00': expected HH:MM:SS"),
    (dict(ppn=0), "--ppn 0"),
    (dict(extra=("#SBATCH --exclusive",)), "must start with '#PBS '"),
    (dict(queue="bad/queue"), "--queue 'bad/queue'"),
])
def test_torque_bad_options(runfile: Path, kw: dict, needle: str) -> None:
    with pytest.raises(UserInputError, match=None) as err:
        _torque(runfile, **kw)
    assert needle in str(err.value)


def test_paths_with_spaces_are_refused_before_submission(tmp_path: Path) -> None:
    base = tmp_path / "my runs"
    (base / "data" / "CB68-Setup2").mkdir(parents=True)
    runfile = base / "demo.toml"
    runfile.write_text('[run]\ndata_dir = "data"\nproduct_dir = "products"\n'
                       '[imaging]\nfields = ["CB68"]\nsetup = 2\nspws = ["244.936GHz_CS"]\n')
    with pytest.raises(UserInputError, match="#SBATCH paths cannot contain spaces"):
        _slurm(runfile)
    with pytest.raises(UserInputError, match="#PBS paths cannot contain spaces"):
        _torque(runfile)


def test_missing_placeholder_value_fails_loudly(runfile: Path, tmp_path: Path) -> None:
    site = tmp_path / "site.sbatch"
    site.write_text("#!/bin/bash\n{{header}}\nmodule load {{site_module}}\n{{ runfile }}\n")
    with pytest.raises(UserInputError, match=r"no value for placeholder\(s\) \{\{site_module\}\}"):
        batch.render_slurm(batch.run_target(runfile),
                           batch.SlurmOptions(nodes=1, ntasks_per_node=2, time="00:10:00"),
                           template=site)
    with pytest.raises(UserInputError, match="--template .*no such file"):
        batch.template_path("slurm", tmp_path / "nope.sbatch")


def test_site_template_is_filled(runfile: Path, tmp_path: Path) -> None:
    site = tmp_path / "site.pbs"
    site.write_text("#!/bin/bash\n{{header}}\nmodule load casa\nexec {{python}} -m faust_hpc run {{ runfile }}\n")
    text = batch.render_torque(batch.run_target(runfile),
                               batch.TorqueOptions(nodes=1, ppn=4, walltime="01:00:00"), template=site)
    assert text.endswith(f"exec {sys.executable} -m faust_hpc run {runfile}\n")


def test_packaged_templates_match_the_repository_templates() -> None:
    """faust_hpc/templates/ ships the same files as slurm/ and torque/ (see faust_hpc.batch)."""
    for kind, name in batch.TEMPLATE_NAMES.items():
        source = REPO / kind / name
        packaged = REPO / "faust_hpc" / "templates" / name
        assert packaged.read_text() == source.read_text(), \
            f"{packaged} differs from {source}: cp {kind}/{name} faust_hpc/templates/"
        assert batch.template_path(kind) == source


def test_cli_dry_run_prints_script_and_writes_nothing(runfile: Path, capsys) -> None:
    """Printing the script (no --submit) creates nothing; it says which
    directory sbatch needs (issue 13: it used to create logs/jobs)."""
    rc = cli_main(["slurm", str(runfile), "--nodes", "1", "--ntasks-per-node", "3",
                   "--time", "00:20:00", "--extra", "#SBATCH --exclusive"])
    captured = capsys.readouterr()
    out = captured.out
    assert rc == 0 and out.startswith("#!/bin/bash\n") and "#SBATCH --exclusive" in out
    jobs = runfile.parent / "products" / "logs" / "jobs"
    assert not jobs.exists() and not (runfile.parent / "products").exists()
    assert f"mkdir -p {jobs}" in captured.err
    rc = cli_main(["torque", str(runfile), "--nodes", "1", "--ppn", "3", "--walltime", "00:20:00"])
    captured = capsys.readouterr()
    assert rc == 0 and "#PBS -l nodes=1:ppn=3" in captured.out
    assert not (runfile.parent / "products").exists()               # qsub's -o directory: named, not made
    assert f"qsub needs {jobs} to exist" in captured.err


def test_cli_errors_are_one_line_exit_2_before_any_work(runfile: Path, tmp_path: Path) -> None:
    exe = [sys.executable, "-m", "faust_hpc"]
    bad_time = subprocess.run([*exe, "slurm", str(runfile), "--nodes", "1", "--ntasks-per-node", "2",
                               "--time", "90"], capture_output=True, text=True)
    assert bad_time.returncode == 2 and bad_time.stdout == ""
    assert bad_time.stderr.strip() == ("faust-hpc: error: --time '90': expected HH:MM:SS or "
                                       "D-HH:MM:SS (e.g. 04:00:00)")
    missing = subprocess.run([*exe, "torque", str(tmp_path / "nope.toml"), "--nodes", "1", "--ppn", "2",
                              "--walltime", "01:00:00"], capture_output=True, text=True)
    assert missing.returncode == 2 and "nope.toml" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "products").exists()


def test_submit_without_scheduler_command_is_a_user_error(runfile: Path, tmp_path: Path,
                                                         monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(UserInputError, match="--submit: qsub not found on PATH"):
        batch.submit("torque", tmp_path / "job.pbs")


def test_write_script_keeps_a_copy_beside_the_job_logs(runfile: Path) -> None:
    target = batch.run_target(runfile)
    path = batch.write_script("slurm", target, "#!/bin/bash\necho hi\n")
    assert path.parent == target.log_dir and path.suffix == ".sbatch"
    assert os.access(path, os.X_OK) and path.read_text() == "#!/bin/bash\necho hi\n"


def test_local_launcher_rejects_bad_arguments(runfile: Path, tmp_path: Path) -> None:
    script = REPO / "launch" / "run_local.sh"
    for args, needle in (([str(runfile), "zero"], "N must be a whole number"),
                         ([str(runfile), "0"], "N must be >= 1"),
                         ([str(tmp_path / "missing.toml"), "2"], "does not exist"),
                         ([str(runfile)], "usage:")):
        proc = subprocess.run([str(script), *args], capture_output=True, text=True)
        assert proc.returncode == 2 and needle in proc.stderr, (args, proc.stderr)
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\n")
    proc = subprocess.run([str(script), str(bad), "2"], capture_output=True, text=True)
    assert proc.returncode == 2 and "data_dir: missing" in proc.stderr


def _cheap_local_run(tmp_path: Path, name: str, chunk_sleep_s: float) -> tuple[Path, dict, Path]:
    """A run file of cheap units (tests/units_cheap.py) for launch/run_local.sh:
    the run file, its environment, and where its manifest will be."""
    import json

    (tmp_path / "data" / "CB68-Setup2").mkdir(parents=True)
    runfile = tmp_path / "run.toml"
    runfile.write_text(f'[run]\nname = "{name}"\ndata_dir = "data"\nproduct_dir = "products"\n'
                       '[imaging]\nfields = ["CB68"]\nsetup = 2\nspws = ["244.936GHz_CS"]\nnchunks = 4\n'
                       # cold unit starts: a SIGTERM to mpirun gets the job killed within seconds, and a
                       # worker still waiting for its fork server's preload could not drain in that window
                       '[scheduler]\nexecutor = "tests.units_cheap:run_unit"\nwarm_start = false\n')
    control = tmp_path / "control.json"
    control.write_text(json.dumps({"sleep": {"*chunk*": chunk_sleep_s}}))
    env = dict(os.environ, PYTHONPATH=str(REPO), FAUST_CHEAP_CONTROL=str(control))
    return runfile, env, tmp_path / "products" / ".faust-hpc" / "manifest.jsonl"


@pytest.mark.mpi
def test_local_launcher_per_rank_logs_drain_and_resume(tmp_path: Path) -> None:
    """launch/run_local.sh with 3 real MPI ranks and the cheap executor (no CASA):
    USR1 drains (exit 3), the same command again finishes, each unit done once."""
    import json
    import signal
    import time

    runfile, env, manifest = _cheap_local_run(tmp_path, "local", chunk_sleep_s=1.0)

    def events(kind: str) -> list[str]:
        if not manifest.exists():
            return []
        return [r["unit"] for r in map(json.loads, manifest.read_text().splitlines())
                if r.get("event") == kind and "unit" in r]

    cmd = [str(REPO / "launch" / "run_local.sh"), str(runfile), "3"]
    first = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    deadline = time.monotonic() + 120
    while not any("/chunk" in u for u in events("started")) and time.monotonic() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGUSR1)
    out, _ = first.communicate(timeout=120)
    assert first.returncode == 3, out
    assert "SIGUSR1 received: no new units" in out
    from tests.launcher_helpers import unit_count

    nunits = unit_count(runfile)
    assert len(events("done")) < nunits, "drained run should leave work for the re-run"
    (log_dir,) = (tmp_path / "products" / "logs" / "local").iterdir()
    assert sorted(p.name for p in log_dir.iterdir()) == ["rank0.log", "rank1.log", "rank2.log"]
    assert "no new units" in (log_dir / "rank0.log").read_text()

    second = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    done = events("done")
    assert len(done) == len(set(done)) == nunits


def test_finish_status_is_this_jobs_own_launchers(tmp_path: Path) -> None:
    """Several launchers on one run: the job script reports its own launcher's
    exit status (its Slurm job id), not another job's that finished later."""
    import time

    from faust_hpc.run.manifest import Manifest

    product_dir = tmp_path / "products"
    manifest = Manifest(product_dir)
    t0 = time.time()
    manifest.append({"event": "finish", "time": t0, "done": 4, "total": 8, "exit_status": 3, "slurm_job": "7"},
                    {"event": "finish", "time": t0 + 1, "done": 4, "total": 8, "exit_status": 1, "slurm_job": "8"})
    assert batch.finish_status_since(product_dir, t0 - 10, "7") == 3
    assert batch.finish_status_since(product_dir, t0 - 10, "8") == 1
    assert batch.finish_status_since(product_dir, t0 - 10, "9") is None
    assert batch.finish_status_since(product_dir, t0 - 10) == 1   # outside Slurm: the latest


def test_run_complete_only_when_the_manifest_says_so(tmp_path: Path) -> None:
    import time

    from faust_hpc.run.manifest import Manifest

    product_dir = tmp_path / "products"
    manifest = Manifest(product_dir)
    manifest.ensure_dir()
    t0 = time.time()
    assert batch.finished_since(product_dir, t0 - 10) is None
    manifest.append({"event": "finish", "time": t0, "done": 4, "total": 8, "exit_status": 3})
    assert batch.finished_since(product_dir, t0 - 10) is None
    manifest.append({"event": "finish", "time": t0 + 1, "done": 8, "total": 8, "exit_status": 0})
    assert batch.finished_since(product_dir, t0 - 10)["done"] == 8
    assert batch.finished_since(product_dir, t0 + 5) is None  # an older run's record


@pytest.mark.mpi
def test_local_launcher_exit_status_follows_the_manifest_after_sigterm_to_mpirun(tmp_path: Path) -> None:
    """SIGTERM sent to mpirun itself: mpirun exits 1, but rank 0 drained and
    recorded exit 3 in the manifest; run_local.sh reports 3 ("re-run to finish")."""
    import json
    import signal
    import time

    from tests.launcher_helpers import descendants

    runfile, env, manifest = _cheap_local_run(tmp_path, "term", chunk_sleep_s=2.0)
    proc = subprocess.Popen([str(REPO / "launch" / "run_local.sh"), str(runfile), "3"], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (manifest.exists() and "chunk" in manifest.read_text()):
        time.sleep(0.2)
    mpirun = [p for p in descendants(proc.pid) if Path(f"/proc/{p}/comm").read_text().strip() in
              ("mpirun", "prterun", "orterun")]
    assert mpirun, "no mpirun under run_local.sh"
    os.kill(mpirun[0], signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    finish = [json.loads(line) for line in manifest.read_text().splitlines() if '"finish"' in line][-1]
    assert finish["drained"] is True and finish["exit_status"] == 3
    assert proc.returncode == 3, out
    assert "rank 0 recorded 3 in the manifest" in out


def test_a_whole_program_job_stages_every_setup_of_every_field(tmp_path: Path) -> None:
    """Each field's data directory of each Setup the run images (and only those)."""
    for name in ("CB68-Setup1", "CB68-Setup3", "L1527-Setup1", "L1527-Setup3", "CB68-Setup2"):
        (tmp_path / "data" / name).mkdir(parents=True)
    path = tmp_path / "program.toml"
    path.write_text('[run]\ndata_dir = "data"\nproduct_dir = "products"\n'
                    '[imaging]\nfields = ["CB68", "L1527"]\nsetup = [1, 3]\narrays = ["default"]\n')
    assert batch.run_target(path).stage_items == ("CB68-Setup1", "CB68-Setup3", "L1527-Setup1", "L1527-Setup3")
