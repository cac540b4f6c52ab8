"""``faust-hpc torque RUNFILE ...``: print (default) or submit a Torque/PBS job script for a run."""
from __future__ import annotations

import argparse

from faust_hpc import batch

HELP = "print (or --submit) a Torque/PBS job script that runs a run file with mpirun"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runfile", metavar="RUNFILE", help="the run file (TOML) the job runs")
    parser.add_argument("--nodes", type=int, required=True, metavar="N", help="nodes")
    parser.add_argument("--ppn", type=int, required=True, metavar="M",
                        help="processors (MPI ranks) per node: #PBS -l nodes=N:ppn=M")
    parser.add_argument("--walltime", required=True, metavar="HH:MM:SS", help="walltime limit")
    parser.add_argument("--mem", metavar="SIZE", help="memory for the job, e.g. 64gb")
    parser.add_argument("--queue", metavar="NAME", help="Torque queue")
    parser.add_argument("--extra", action="append", default=[], metavar="'#PBS ...'",
                        help="extra directive passed through as is (repeatable)")
    parser.add_argument("--stage-to-shm", action="store_true",
                        help="copy the run's measurement sets into /dev/shm on every node first "
                             "(removed on exit)")
    parser.add_argument("--job-name", metavar="NAME", help="job name (default: the run name)")
    parser.add_argument("--template", metavar="PATH",
                        help="a site copy of torque/faust_hpc.pbs to render instead")
    parser.add_argument("--submit", action="store_true",
                        help="submit with qsub instead of printing the script")


def run(args: argparse.Namespace) -> int:
    opts = batch.TorqueOptions(nodes=args.nodes, ppn=args.ppn, walltime=args.walltime,
                               mem=args.mem, queue=args.queue, extra=tuple(args.extra),
                               stage_to_shm=args.stage_to_shm, job_name=args.job_name)
    target = batch.run_target(args.runfile)
    text = batch.render_torque(target, opts, template=args.template)
    if not args.submit:  # printing writes nothing
        batch.print_dry_run("torque", target, text)
        return 0
    script = batch.write_script("torque", target, text)
    jobid = batch.submit("torque", script)
    print(f"submitted Torque job {jobid}: script {script}, log {target.log_dir}/")
    return 0
