"""``faust-hpc slurm RUNFILE ...``: print (default) or submit a Slurm job script for a run."""
from __future__ import annotations

import argparse

from faust_hpc import batch

HELP = "print (or --submit) a Slurm job script that runs a run file with MPI, requeue-safe"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runfile", metavar="RUNFILE", help="the run file (TOML) the job runs")
    parser.add_argument("--nodes", type=int, required=True, metavar="N", help="nodes")
    parser.add_argument("--ntasks-per-node", type=int, required=True, metavar="M",
                        help="MPI ranks per node (rank 0 schedules, the others image)")
    parser.add_argument("--time", required=True, metavar="HH:MM:SS", help="time limit (or D-HH:MM:SS)")
    parser.add_argument("--mem", metavar="SIZE", help="memory per node, e.g. 64G")
    parser.add_argument("--partition", metavar="NAME", help="Slurm partition")
    parser.add_argument("--extra", action="append", default=[], metavar="'#SBATCH ...'",
                        help="extra directive passed through as is (repeatable)")
    parser.add_argument("--signal-before", type=int, default=120, metavar="SECONDS",
                        help="Slurm sends USR1 this long before the time limit: the launcher "
                             "stops handing out units and the job requeues itself (0 = off; "
                             "default 120)")
    parser.add_argument("--launcher", choices=batch.LAUNCHERS, default="srun",
                        help="srun --mpi=pmix (default) or mpirun")
    parser.add_argument("--stage-to-shm", action="store_true",
                        help="copy the run's measurement sets into /dev/shm on every node first "
                             "(removed on exit)")
    parser.add_argument("--array", type=int, metavar="N",
                        help="a job array of N tasks, each with --nodes/--ntasks-per-node of its own, all "
                             "draining the same run together (each task is one launcher; a task that dies "
                             "loses its units to the others when its lease runs out)")
    parser.add_argument("--job-name", metavar="NAME", help="job name (default: the run name)")
    parser.add_argument("--template", metavar="PATH",
                        help="a site copy of slurm/faust_hpc.sbatch to render instead")
    parser.add_argument("--submit", action="store_true",
                        help="submit with sbatch instead of printing the script")


def run(args: argparse.Namespace) -> int:
    opts = batch.SlurmOptions(nodes=args.nodes, ntasks_per_node=args.ntasks_per_node,
                              time=args.time, mem=args.mem, partition=args.partition,
                              extra=tuple(args.extra), signal_before=args.signal_before,
                              launcher=args.launcher, stage_to_shm=args.stage_to_shm,
                              job_name=args.job_name, array=args.array)
    target = batch.run_target(args.runfile)
    text = batch.render_slurm(target, opts, template=args.template)
    if not args.submit:  # printing writes nothing
        batch.print_dry_run("slurm", target, text)
        return 0
    script = batch.write_script("slurm", target, text)
    jobid = batch.submit("slurm", script)
    logname = f"{jobid}_*" if args.array is not None else jobid
    print(f"submitted Slurm job {jobid}: script {script}, "
          f"log {target.log_dir}/slurm-{batch.job_name(args.job_name or target.name)}-{logname}.out")
    return 0
