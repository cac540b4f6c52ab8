"""Render Slurm and Torque job scripts from the templates in ``slurm/`` and ``torque/``.

Why templates as data: a site adapts the job script (modules to load, a
scratch file system, site-specific directives) by editing one readable shell
file, not Python. The Python side only builds the scheduler header from
validated options, passes ``--extra`` directives through unchanged and fills
``{{name}}`` placeholders; a placeholder without a value is an error, never an
empty string in a job script.

Where the templates are found (in this order):

1. ``--template PATH`` (``template=`` here): a site's own copy;
2. the repository checkout this package was imported from
   (``<repo>/slurm/faust_hpc.sbatch``, ``<repo>/torque/faust_hpc.pbs``): the
   source of truth, used by an editable install;
3. ``faust_hpc/templates/`` (package data): symbolic links to the repository
   files, which a wheel build turns into copies, so an installed faust-hpc
   works without the repository; ``tests/test_batch.py`` checks they match.

The job scripts run ``<python> -m faust_hpc run RUNFILE`` with the Python of
the environment the command was rendered from (``sys.executable``,
``sys.prefix`` is activated), so the job uses the same faust-hpc and CASA.
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faust_hpc.errors import UserInputError
from faust_hpc.layout import RunLayout

log = logging.getLogger(__name__)

TEMPLATE_NAMES = {"slurm": "faust_hpc.sbatch", "torque": "faust_hpc.pbs"}
DIRECTIVE = {"slurm": "#SBATCH", "torque": "#PBS"}
DRAINED_STATUS = 3  # `faust-hpc run` exit status: drained on a signal, re-run to finish
LAUNCHERS = ("srun", "mpirun")
TORQUE_DRAIN_GRACE_S = 10  # pbs_mom SIGKILLs kill_delay seconds after its TERM

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+):(\d{2}):(\d{2})$")
_TORQUE_TIME = re.compile(r"^(\d+):(\d{2}):(\d{2})$")
_MEM = re.compile(r"^(\d+)\s*([KMGTkmgt]?)[Bb]?$")
_QUEUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")


class BatchError(UserInputError):
    """A batch option or template that cannot be rendered."""


# ----------------------------------------------------------------------------
# Templates
# ----------------------------------------------------------------------------

def _repo_template_dir(kind: str) -> Path:
    return Path(__file__).resolve().parent.parent / kind


def _package_template_dir() -> Path:
    return Path(__file__).resolve().parent / "templates"


def template_path(kind: str, template: str | os.PathLike | None = None) -> Path:
    """The template file for ``kind`` ('slurm' or 'torque'); see the module docstring."""
    if kind not in TEMPLATE_NAMES:
        raise BatchError(f"unknown batch system {kind!r}; expected one of {sorted(TEMPLATE_NAMES)}")
    if template is not None:
        path = Path(template).expanduser()
        if not path.is_file():
            raise BatchError(f"--template {template}: no such file (a copy of "
                             f"{kind}/{TEMPLATE_NAMES[kind]} with {{{{placeholders}}}})")
        return path
    for folder in (_repo_template_dir(kind), _package_template_dir()):
        candidate = folder / TEMPLATE_NAMES[kind]
        if candidate.is_file():
            return candidate
    raise BatchError(f"{kind} template {TEMPLATE_NAMES[kind]} not found in {_repo_template_dir(kind)} "
                     f"or {_package_template_dir()}; reinstall faust-hpc or pass --template")


def placeholders(text: str) -> set[str]:
    """Names of the ``{{name}}`` placeholders in a template."""
    return set(_PLACEHOLDER.findall(text))


def fill(text: str, values: dict[str, str], source: str = "template") -> str:
    """Replace every ``{{name}}``; a name without a value raises :class:`BatchError`."""
    missing = sorted(placeholders(text) - set(values))
    if missing:
        raise BatchError(f"{source}: no value for placeholder(s) "
                         + ", ".join("{{" + m + "}}" for m in missing)
                         + f"; known: {', '.join(sorted(values))}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


# ----------------------------------------------------------------------------
# Option checks (each error says what would be right)
# ----------------------------------------------------------------------------

def _positive(option: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BatchError(f"{option} {value!r}: must be a whole number >= 1")
    return value


def slurm_time_seconds(text: str, option: str = "--time") -> int:
    """``HH:MM:SS`` or ``D-HH:MM:SS`` -> seconds."""
    m = _SLURM_TIME.match(text.strip())
    if not m or int(m.group(3)) > 59 or int(m.group(4)) > 59:
        raise BatchError(f"{option} {text!r}: expected HH:MM:SS or D-HH:MM:SS (e.g. 04:00:00)")
    days, h, mi, s = (int(g) if g else 0 for g in m.groups())
    total = ((days * 24 + h) * 60 + mi) * 60 + s
    if total == 0:
        raise BatchError(f"{option} {text!r}: must be longer than zero (e.g. 04:00:00)")
    return total


def torque_walltime_seconds(text: str, option: str = "--walltime") -> int:
    """``HH:MM:SS`` (hours may exceed 24) -> seconds."""
    m = _TORQUE_TIME.match(text.strip())
    if not m or int(m.group(2)) > 59 or int(m.group(3)) > 59:
        raise BatchError(f"{option} {text!r}: expected HH:MM:SS (e.g. 48:00:00)")
    h, mi, s = (int(g) for g in m.groups())
    total = (h * 60 + mi) * 60 + s
    if total == 0:
        raise BatchError(f"{option} {text!r}: must be longer than zero (e.g. 48:00:00)")
    return total


def parse_mem(text: str, option: str = "--mem") -> tuple[int, str]:
    """``16G``, ``16GB``, ``16gb``, ``4000M`` or ``4000`` (MB) -> (amount, 'K'|'M'|'G'|'T')."""
    m = _MEM.match(str(text).strip())
    if not m or int(m.group(1)) == 0:
        raise BatchError(f"{option} {text!r}: expected a memory size per node such as 64G, 16000M "
                         "or 64gb (no unit = megabytes)")
    return int(m.group(1)), (m.group(2) or "M").upper()


def _queue_name(option: str, text: str) -> str:
    if not _QUEUE.match(text):
        raise BatchError(f"{option} {text!r}: expected a partition/queue name such as 'batch' "
                         "(letters, digits, '_', '.', '-', '@')")
    return text


def extra_directives(kind: str, lines: list[str] | tuple[str, ...]) -> list[str]:
    """Check ``--extra`` lines: each one directive, starting with '#SBATCH ' or '#PBS '."""
    prefix = DIRECTIVE[kind]
    checked = []
    for line in lines:
        text = line.strip()
        if "\n" in text or "\r" in text:
            raise BatchError(f"--extra {line!r}: one directive per --extra (no newlines)")
        if not text.startswith(prefix + " ") or not text[len(prefix):].strip():
            raise BatchError(f"--extra {line!r}: a directive must start with '{prefix} ' "
                             f"(e.g. --extra '{prefix} {'--exclusive' if kind == 'slurm' else '-m abe'}')")
        checked.append(text)
    return checked


def job_name(name: str) -> str:
    """A scheduler-safe job name from the run name (PBS wants a leading letter)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64] or "faust"
    return cleaned if cleaned[0].isalpha() else "f" + cleaned


# ----------------------------------------------------------------------------
# What the job runs
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class RunTarget:
    """What a job script needs to know about the run file (from :func:`run_target`)."""

    runfile: Path
    name: str
    product_dir: Path
    data_dir: Path
    stage_items: tuple[str, ...]   # subdirectories of data_dir this run reads

    @property
    def log_dir(self) -> Path:
        """Per-job logs (scheduler output, launcher output): ``<product_dir>/logs/jobs``."""
        return RunLayout(self.product_dir).job_logs_dir


def stage_items(spec: Any) -> list[str]:
    """The entries of ``data_dir`` a run reads: ``<FIELD>-Setup<N>`` of FAUST fields,
    and the top-level entry holding each MS of a run file's target (an MS outside
    ``data_dir`` is read where it is)."""
    from faust_hpc import catalog
    from faust_hpc.runfile import target_ms_paths

    items: list[str] = []
    for f in spec.fields:
        target = catalog.get_target(f)
        if target.faust:
            names = [f"{f}-Setup{setup}" for setup in dict.fromkeys(spec.setup_of(label)
                                                                   for label in spec.spw_labels)]
        else:
            rels = (os.path.relpath(ms, spec.data_dir) for ms in target_ms_paths(target, Path(spec.data_dir)))
            names = [Path(rel).parts[0] for rel in rels if not rel.startswith(os.pardir)]
        items.extend(n for n in names if n not in items)
    return items


def run_target(runfile: str | os.PathLike) -> RunTarget:
    """Validate the run file now (on the login node) so a typo fails before submission."""
    from faust_hpc.runfile import load_runfile
    spec = load_runfile(runfile, check_paths=True)
    items = tuple(stage_items(spec))
    return RunTarget(runfile=Path(spec.path), name=spec.name, product_dir=Path(spec.product_dir),
                     data_dir=Path(spec.data_dir), stage_items=items)


def _common_values(target: RunTarget, stage_to_shm: bool, name: str) -> dict[str, str]:
    q = shlex.quote
    return {
        "run_name": target.name.replace("\n", " "),
        "job_name": name,
        "runfile": q(str(target.runfile)),
        "prefix": q(sys.prefix),
        "python": q(sys.executable),
        "stage_to_shm": "1" if stage_to_shm else "0",
        "data_dir": q(str(target.data_dir)),
        "stage_items": " ".join(q(i) for i in target.stage_items),
        "log_dir": q(str(target.log_dir)),
    }


# ----------------------------------------------------------------------------
# Slurm
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class SlurmOptions:
    nodes: int
    ntasks_per_node: int
    time: str                       # HH:MM:SS or D-HH:MM:SS
    mem: str | None = None          # per node
    partition: str | None = None
    extra: tuple[str, ...] = field(default_factory=tuple)
    signal_before: int = 120        # seconds before the time limit Slurm sends USR1 (0 = never)
    launcher: str = "srun"          # srun --mpi=pmix | mpirun
    stage_to_shm: bool = False
    job_name: str | None = None
    array: int | None = None        # N: a job array of N tasks, each one launcher on the same run


def slurm_header(opts: SlurmOptions, target: RunTarget) -> list[str]:
    """The ``#SBATCH`` lines: resources from the options, then requeue/log settings, then --extra."""
    _positive("--nodes", opts.nodes)
    _positive("--ntasks-per-node", opts.ntasks_per_node)
    limit = slurm_time_seconds(opts.time)
    if opts.launcher not in LAUNCHERS:
        raise BatchError(f"--launcher {opts.launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    if not isinstance(opts.signal_before, int) or opts.signal_before < 0:
        raise BatchError(f"--signal-before {opts.signal_before!r}: seconds >= 0 (0 = no drain signal)")
    if opts.signal_before >= limit:
        raise BatchError(f"--signal-before {opts.signal_before}: must be shorter than --time "
                         f"{opts.time} ({limit} s)")
    name = job_name(opts.job_name or target.name)
    d = DIRECTIVE["slurm"]
    lines = [f"{d} --job-name={name}",
             f"{d} --nodes={opts.nodes}",
             f"{d} --ntasks-per-node={opts.ntasks_per_node}",
             f"{d} --time={opts.time.strip()}"]
    if opts.mem is not None:
        amount, unit = parse_mem(opts.mem)
        lines.append(f"{d} --mem={amount}{unit}")
    if opts.partition is not None:
        lines.append(f"{d} --partition={_queue_name('--partition', opts.partition)}")
    if opts.array is not None:
        _positive("--array", opts.array)
        lines.append(f"{d} --array=0-{opts.array - 1}")
    lines += [f"{d} --requeue",
              f"{d} --open-mode=append",
              f"{d} --output={target.log_dir}/slurm-%x-{'%A_%a' if opts.array is not None else '%j'}.out",
              f"{d} --chdir={target.runfile.parent}"]
    if opts.signal_before:
        lines.append(f"{d} --signal=B:USR1@{opts.signal_before}")
    for path in (target.log_dir, target.runfile.parent):
        if any(c.isspace() for c in str(path)):
            raise BatchError(f"{path}: #SBATCH paths cannot contain spaces; move the run file or "
                             "product_dir to a path without spaces")
    return lines + extra_directives("slurm", opts.extra)


def render_slurm(target: RunTarget, opts: SlurmOptions, template: str | os.PathLike | None = None) -> str:
    path = template_path("slurm", template)
    values = _common_values(target, opts.stage_to_shm, job_name(opts.job_name or target.name))
    values["header"] = "\n".join(slurm_header(opts, target))
    values["launcher"] = opts.launcher
    # drain within the warning: running units get half of it, the rest is for recording and requeue
    grace = opts.signal_before // 2 if opts.signal_before else 60
    values["run_args"] = f"--drain-grace {grace}"
    return fill(path.read_text(), values, source=str(path))


# ----------------------------------------------------------------------------
# Torque
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class TorqueOptions:
    nodes: int
    ppn: int
    walltime: str                   # HH:MM:SS
    mem: str | None = None          # per job
    queue: str | None = None
    extra: tuple[str, ...] = field(default_factory=tuple)
    stage_to_shm: bool = False
    job_name: str | None = None


def torque_header(opts: TorqueOptions, target: RunTarget) -> list[str]:
    """The ``#PBS`` lines: resources from the options, then logging, then --extra."""
    _positive("--nodes", opts.nodes)
    _positive("--ppn", opts.ppn)
    torque_walltime_seconds(opts.walltime)
    d = DIRECTIVE["torque"]
    name = job_name(opts.job_name or target.name)
    lines = [f"{d} -N {name}",
             f"{d} -l nodes={opts.nodes}:ppn={opts.ppn}",
             f"{d} -l walltime={opts.walltime.strip()}"]
    if opts.mem is not None:
        amount, unit = parse_mem(opts.mem)
        lines.append(f"{d} -l mem={amount}{unit.lower()}b")
    if opts.queue is not None:
        lines.append(f"{d} -q {_queue_name('--queue', opts.queue)}")
    if any(c.isspace() for c in str(target.log_dir)):
        raise BatchError(f"{target.log_dir}: #PBS paths cannot contain spaces; move product_dir "
                         "to a path without spaces")
    lines += [f"{d} -j oe",
              f"{d} -o {target.log_dir}/torque-{name}.out"]
    return lines + extra_directives("torque", opts.extra)


def render_torque(target: RunTarget, opts: TorqueOptions, template: str | os.PathLike | None = None) -> str:
    path = template_path("torque", template)
    values = _common_values(target, opts.stage_to_shm, job_name(opts.job_name or target.name))
    values["header"] = "\n".join(torque_header(opts, target))
    values["run_args"] = f"--drain-grace {TORQUE_DRAIN_GRACE_S}"
    return fill(path.read_text(), values, source=str(path))


# ----------------------------------------------------------------------------
# Submission
# ----------------------------------------------------------------------------

SUBMIT_COMMAND = {"slurm": ["sbatch", "--parsable"], "torque": ["qsub"]}
SCRIPT_SUFFIX = {"slurm": ".sbatch", "torque": ".pbs"}


def print_dry_run(kind: str, target: RunTarget, text: str) -> None:
    """Print a rendered job script without writing anything. The scheduler does
    not create its ``-o``/``--output`` directory itself, so say what to create
    before submitting the printed script by hand (``--submit`` creates it)."""
    print(text, end="")
    if not target.log_dir.is_dir():
        print(f"faust-hpc: note: {SUBMIT_COMMAND[kind][0]} needs {target.log_dir} to exist: "
              f"`mkdir -p {target.log_dir}` before submitting this script (--submit does it)", file=sys.stderr)


def write_script(kind: str, target: RunTarget, text: str) -> Path:
    """Keep the submitted script beside the job logs (one file per submission)."""
    target.log_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = target.log_dir / f"{job_name(target.name)}-{stamp}-{os.getpid()}{SCRIPT_SUFFIX[kind]}"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    tmp.rename(path)
    return path


def submit(kind: str, script: Path) -> str:
    """Submit with sbatch/qsub; return the job id. A missing command is a user error."""
    cmd = SUBMIT_COMMAND[kind]
    if shutil.which(cmd[0]) is None:
        raise BatchError(f"--submit: {cmd[0]} not found on PATH; run on a {kind} login node, "
                         f"or drop --submit and submit the printed script there")
    proc = subprocess.run([*cmd, str(script)], capture_output=True, text=True)
    if proc.returncode != 0:
        why = " ".join((proc.stderr or proc.stdout).split()) or f"exit status {proc.returncode}"
        raise BatchError(f"{cmd[0]} refused {script}: {why}")
    return proc.stdout.strip().split(";")[0]


# ----------------------------------------------------------------------------
# What the manifest says about this job's launcher
# ----------------------------------------------------------------------------
# A requeued job needs no help to take over from its earlier incarnation: its
# launcher record names the same Slurm job, and a later incarnation of a job
# makes the earlier one dead at once (faust_hpc.run.leases).

def _finishes_since(product_dir: str | os.PathLike, since: float) -> list[dict]:
    from faust_hpc.run.manifest import Manifest
    from faust_hpc.run.snapshot import load_state

    return [r for r in load_state(Manifest(product_dir), outputs=False).finishes if float(r.get("time") or 0) >= since]


def _own(finishes: list[dict], job: str | None) -> list[dict]:
    """The finish records of this Slurm job's launchers (all of them outside Slurm)."""
    return [r for r in finishes if r.get("slurm_job") == job] if job else finishes


def finished_since(product_dir: str | os.PathLike, since: float) -> dict | None:
    """A ``finish`` record of a complete run written after ``since``, if any:
    this job's launcher's, or any launcher's of the same run (with several
    launchers on one run, the last one to finish records the run complete).

    Why: the launcher's exit status can lie on a cluster -- after a node failure
    srun has been seen to return 0 -- so the job script only reports "run
    complete" when the manifest says so.
    """
    from faust_hpc.run.records import FinishRecord

    for raw in reversed(_finishes_since(product_dir, since)):
        rec = FinishRecord.from_json(raw)
        if rec.exit_status == 0 and rec.total and rec.done == rec.total:
            return raw
    return None


def finish_status_since(product_dir: str | os.PathLike, since: float, job: str | None = None) -> int | None:
    """The exit status rank 0 of this job (``job``: its Slurm job id; the
    latest launcher outside Slurm) recorded in its ``finish`` record after ``since``.

    Why: ``mpirun`` answers SIGTERM with status 1 whatever rank 0 did, even
    when rank 0 drained cleanly (status 3, "re-run to finish"); a script that
    started the launcher reports what the manifest says instead."""
    from faust_hpc.run.records import FinishRecord

    own = _own(_finishes_since(product_dir, since), job)
    if not own:
        return None
    rec = FinishRecord.from_json(own[-1])
    return None if rec.exit_status is None else int(rec.exit_status)


_USAGE = ("usage: python -m faust_hpc.batch finished-since RUNFILE EPOCH_SECONDS\n"
          "       python -m faust_hpc.batch finish-status RUNFILE EPOCH_SECONDS")


def _main(argv: list[str]) -> int:
    """Helpers for the job templates; exit 0 = yes (and print why), 1 = no, 2 = usage.

    ``finished-since RUNFILE EPOCH``: the manifest records a complete run after EPOCH;
    ``finish-status RUNFILE EPOCH``: print the exit status rank 0 recorded after EPOCH.
    """
    if len(argv) != 3 or argv[0] not in ("finished-since", "finish-status"):
        print(_USAGE, file=sys.stderr)
        return 2
    from faust_hpc.runfile import load_runfile

    spec = load_runfile(argv[1], check_paths=False)
    if argv[0] == "finish-status":
        status = finish_status_since(spec.product_dir, float(argv[2]), os.environ.get("SLURM_JOB_ID"))
        if status is None:
            return 1
        print(status)
        return 0
    rec = finished_since(spec.product_dir, float(argv[2]))
    if rec is None:
        return 1
    print(f"{rec.get('done')}/{rec.get('total')} units done")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
