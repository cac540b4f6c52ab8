"""``faust-hpc run RUNFILE``: run or resume a run file, alone or under mpirun/srun."""
from __future__ import annotations

import argparse

from faust_hpc.cli.argtypes import count, seconds

HELP = "run (or resume) a run file: alone, or under mpirun/srun with rank 0 scheduling"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runfile", help="the run file (TOML)")
    parser.add_argument("--break-lock", action="store_true",
                        help="declare the run's other launchers dead now (their units are cleaned and redone); "
                             "refused while one runs on this host: for launchers that are surely gone "
                             "but whose lease has not run out yet")
    parser.add_argument("--allow-changed-spec", action="store_true",
                        help="resume although the imaging settings changed since the run started")
    parser.add_argument("--drain-grace", type=seconds(minimum=0.0), default=60.0, metavar="S",
                        help="after SIGUSR1, let running units finish for S seconds before interrupting "
                             "them (default 60; after SIGTERM at most 10)")
    parser.add_argument("--progress-every", type=seconds(minimum=0.0, strict=True), default=10.0, metavar="S",
                        help="seconds between progress lines (default 10)")
    parser.add_argument("--local-workers", type=count(minimum=1, maximum=1024), default=1, metavar="N",
                        help="without mpirun: run N units at a time as local child processes (default 1)")


def run(args: argparse.Namespace) -> int:
    from faust_hpc.launcher import launch

    return launch(args.runfile, break_lock=args.break_lock, allow_changed_spec=args.allow_changed_spec,
                  drain_grace_s=args.drain_grace, term_grace_s=min(10.0, args.drain_grace),
                  progress_interval_s=args.progress_every, local_slots=max(1, args.local_workers))
