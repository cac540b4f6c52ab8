"""Run ``faust-hpc`` as on a filesystem without flock (Lustre without ``-o flock``).

``python tests/no_flock.py run RUNFILE ...``: every ``fcntl.flock`` in this
process answers ENOSYS, as the kernel does there, so the run's locks take the
StrictSoftFileLock fallback (:mod:`faust_hpc.run.locks`) for real.
"""
import errno
import fcntl
import runpy
import sys


def _no_flock(fd, operation):
    raise OSError(errno.ENOSYS, "Function not implemented")


if __name__ == "__main__":
    fcntl.flock = _no_flock
    sys.argv = ["faust_hpc", *sys.argv[1:]]
    runpy.run_module("faust_hpc", run_name="__main__", alter_sys=True)
