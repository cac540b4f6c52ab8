"""A per-worker fork server ("zygote"): unit children that start warm.

A cold unit child (``python -m faust_hpc.launcher.unit_child``) spends about
2 s before its first CASA call: the interpreter, CASA's compiled libraries
and the scipy/matplotlib stack casatasks imports. Each worker rank (or local
slot) instead starts one fork server (:func:`server_main`) with the worker's
child environment (thread budget set before anything is imported), which
preloads all of that (:func:`faust_hpc.casa_env.preload`, plus the unit
code and the executor's module) and then forks one child per
unit on request. Still one process per unit, so a crash, a SIGKILL or a
timeout ends that unit only.

Why forking is safe here: the server checks that it has exactly one thread
(``/proc/self/task``) when it is ready and before every fork; casatools'
initialisation, which starts gRPC threads and reads the site config, runs in
each child (``casa_env.configure`` with the unit's own CASA log, then
``import casatools``: ~0.05 s once the libraries are loaded) — never in the
server. If the server cannot be single-threaded it says so and the worker
starts units cold, logging why.

The forked child: stdout/stderr on the unit's ``.out`` file (``dup2``), stdin
``/dev/null``, the worker's process group (signals from mpirun, Slurm or a
terminal reach it as they reach a cold child), the default signal handlers
of a fresh interpreter, SIGKILL when the server dies (which gets SIGKILL when
its worker dies), then :func:`faust_hpc.launcher.unit_child.run`, the code a
cold child runs.

Protocol, JSON lines on a socket pair: the server says ``{"ready": ...}``
once; the worker sends ``{"id": n, "task": .., "out": .., "cwd": ..}``; the
server answers ``{"id": n, "pid": ..}`` (or ``"error"``) and later
``{"exited": pid, "status": wait status}``. The worker sees a child through
:class:`WarmChild` (the part of :class:`subprocess.Popen` it uses): its pid,
its exit status or signal, terminate/kill. End of file on either side means
the other is gone: the server exits; the worker reports its running unit as
failed ("fork server died") and starts a new server for the next unit. A
server that stops reporting (its child ended, no word for 5 s) is killed and
replaced the same way, so a worker never waits on it for ever.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 180.0     # preloading on a loaded node; past this the worker starts units cold
REPLY_TIMEOUT_S = 30.0      # a fork is milliseconds; a silent server is replaced
LOST_CHILD_WAIT_S = 5.0     # a dead server's children get SIGKILL; how long to watch them go
MAX_SERVER_STARTS = 3       # a server that keeps dying: cold starts from then on
SERVER_LOST = "fork server died (the unit's process was killed with it)"
SERVER_SILENT = "fork server stopped answering (the unit's process ended; its exit status is unknown)"
# Not ``-m``: that would import this module twice (once as __main__).
SERVER_COMMAND = ("import sys; from faust_hpc.launcher.forkserver import server_main; "
                  "sys.exit(server_main(sys.argv[1:]))")


def thread_count() -> int:
    """Threads of this process (fork copies only the calling one)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _send(sock: socket.socket, message: dict) -> None:
    sock.sendall((json.dumps(message) + "\n").encode())


# ============================================================================ server side
@dataclass
class Spawn:
    """One fork request, as the child receives it."""

    task: str
    out: str
    cwd: str
    server_pid: int


def _serve(sock: socket.socket) -> Spawn | None:
    """The server loop: fork on request, report exits; returns None in the
    server when the worker hangs up, a :class:`Spawn` in each forked child."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    buffer = b""
    me = os.getpid()
    try:
        while True:
            readable, _, _ = select.select([sock, wake_r], [], [], 5.0)
            if wake_r in readable:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            _reap(sock)
            if sock not in readable:
                continue
            data = sock.recv(65536)
            if not data:
                return None
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                threads = thread_count()
                if threads != 1:
                    _send(sock, {"id": request["id"], "error": f"the fork server has {threads} threads"})
                    continue
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    for fd in (wake_r, wake_w):
                        os.close(fd)
                    sock.close()
                    return Spawn(request["task"], request["out"], request["cwd"], me)
                _send(sock, {"id": request["id"], "pid": pid})
    except (BrokenPipeError, ConnectionResetError):
        return None


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(sock, {"exited": pid, "status": status})


def _become_unit(spawn: Spawn) -> int:
    """In the forked child: the process a cold child would be, then the unit."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    out = os.open(spawn.out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.chdir(spawn.cwd)
    if "numpy" in sys.modules:  # a fresh process draws a fresh seed; so does each forked child
        sys.modules["numpy"].random.seed()
    from faust_hpc.launcher import unit_child

    sys.argv = [unit_child.__file__, spawn.task]  # as a cold child's (casaconfig parses it)
    return unit_child.run(Path(spawn.task), "warm", parent_pid=spawn.server_pid)


def server_main(argv: list[str]) -> int:
    """The server process (:data:`SERVER_COMMAND` ``FD WORKER_PID [MODULE ...]``)."""
    sock = socket.socket(fileno=int(argv[0]))
    from faust_hpc.launcher.unit_child import die_with_parent

    die_with_parent(int(argv[1]))  # the worker
    # Drain signals and Ctrl-C are the launcher's to act on; the server dies with its worker.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
    t0 = time.time()
    try:
        from faust_hpc import casa_env

        failed = casa_env.preload(("faust_hpc.launcher.unit_child", *argv[2:]))
        threads = thread_count()
        ready = threads == 1
        reason = None if ready else f"{threads} threads after preloading (fork is unsafe)"
    except Exception as exc:  # noqa: BLE001 - reported to the worker, which starts units cold
        failed, ready, reason = [], False, f"{type(exc).__name__}: {exc}"
    _send(sock, {"ready": ready, "reason": reason, "pid": os.getpid(), "preload_s": round(time.time() - t0, 3),
                 "not_preloaded": failed})
    if not ready:
        return 1
    spawn = _serve(sock)
    if spawn is None:
        return 0
    code = 1
    try:
        code = _become_unit(spawn)
    except BaseException:  # noqa: BLE001 - before the unit's own handler: say why, on the .out file
        traceback.print_exc()
    _exit_now(code)
    return code  # not reached


def _exit_now(code: int) -> None:
    """End a forked child: the exit handlers its unit registered (casatools'
    ``ctsys.shutdown``, logging), flushed streams, then ``os._exit``. A normal
    interpreter exit would tear down every module preloaded into the server
    (~2 s of garbage collection that touches, and so copies, every page)."""
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


# ============================================================================ worker side
class ForkServerError(RuntimeError):
    """The fork server cannot start a unit now (the worker starts it cold)."""


class ForkServer:
    """The worker's handle on its fork server process."""

    def __init__(self, python: str, env: dict[str, str], cwd: str, preload: tuple[str, ...] = ()) -> None:
        mine, theirs = socket.socketpair()
        self.sock = mine
        self.proc = subprocess.Popen([python, "-c", SERVER_COMMAND, str(theirs.fileno()), str(os.getpid()), *preload],
                                     env=env, cwd=cwd, stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),))
        theirs.close()
        self.pid = self.proc.pid
        self.ready: bool | None = None
        self.reason: str | None = None
        self.dead = False
        self.exits: dict[int, int] = {}      # child pid -> wait status
        self.replies: dict[int, dict] = {}
        self._buffer = b""
        self._next_id = 0
        atexit.register(self.close)

    # ------------------------------------------------------------ messages
    def pump(self, timeout: float) -> None:
        """Read what the server has said, waiting up to ``timeout`` s for the first message."""
        if self.dead:
            return
        try:
            readable, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        except (OSError, ValueError):
            readable = []
        while readable:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:
                self._lost("closed its socket")
                return
            self._buffer += data
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                self._take(json.loads(line))
            readable, _, _ = select.select([self.sock], [], [], 0)

    def _take(self, message: dict) -> None:
        if "ready" in message:
            self.ready, self.reason = bool(message["ready"]), message.get("reason")
            if message.get("not_preloaded"):
                log.info("fork server %d: not preloaded: %s", self.pid, "; ".join(message["not_preloaded"]))
        elif "exited" in message:
            self.exits[int(message["exited"])] = int(message["status"])
        elif "id" in message:
            self.replies[int(message["id"])] = message

    def _lost(self, how: str) -> None:
        self.dead = True
        if self.ready is None:
            self.ready = False
        self.reason = self.reason or f"fork server {self.pid} {how}"
        self.sock.close()
        try:
            self.proc.wait(timeout=LOST_CHILD_WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    # ------------------------------------------------------------ control
    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> bool:
        deadline = time.time() + timeout
        while self.ready is None and not self.dead and time.time() < deadline:
            self.pump(min(1.0, max(0.0, deadline - time.time())))
            if self.ready is None and self.proc.poll() is not None:
                self._lost(f"exited with status {self.proc.returncode} while preloading")
        if self.ready is None:
            self.reason = f"fork server {self.pid} not ready after {timeout:g} s"
            self.close()
        return bool(self.ready) and not self.dead

    def usable(self) -> bool:
        self.pump(0)
        if not self.dead and self.proc.poll() is not None:
            self._lost(f"exited with status {self.proc.returncode}")
        return bool(self.ready) and not self.dead

    def spawn(self, task: Path, out: Path, cwd: Path) -> "WarmChild":
        """Fork a child for one unit; :class:`ForkServerError` if the server cannot."""
        if not self.wait_ready() or not self.usable():
            raise ForkServerError(self.reason or "fork server not usable")
        self._next_id += 1
        rid = self._next_id
        try:
            _send(self.sock, {"id": rid, "task": str(task), "out": str(out), "cwd": str(cwd)})
        except OSError as exc:
            self._lost(f"lost its socket ({exc})")
            raise ForkServerError(self.reason or str(exc)) from exc
        deadline = time.time() + REPLY_TIMEOUT_S
        while rid not in self.replies and not self.dead and time.time() < deadline:
            self.pump(max(0.0, deadline - time.time()))
        reply = self.replies.pop(rid, None)
        if reply is None:
            if not self.dead:
                self.reason = f"fork server {self.pid} did not answer within {REPLY_TIMEOUT_S:g} s"
                self.close()
            raise ForkServerError(self.reason or "no answer from the fork server")
        if "pid" not in reply:
            self.reason = f"fork server {self.pid}: {reply.get('error')}"
            self.close()
            raise ForkServerError(self.reason)
        return WarmChild(self, int(reply["pid"]))

    def close(self) -> None:
        """Stop the server (its running children, if any, die with it)."""
        if not self.dead:
            self.dead = True
            self.sock.close()
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class WarmChild:
    """A forked unit child as the worker sees it: the :class:`subprocess.Popen`
    calls :class:`~faust_hpc.launcher.worker.RunningUnit` makes."""

    def __init__(self, server: ForkServer, pid: int) -> None:
        self.server = server
        self.pid = pid
        self.args = [f"fork server {server.pid}", f"child {pid}"]
        self.returncode: int | None = None
        self.lost: str | None = None   # why the exit status is not the child's own
        self._ended_unreported: float | None = None  # when it was first seen ended but not reported

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        self.server.pump(0)
        status = self.server.exits.pop(self.pid, None)
        if status is not None:
            self.returncode = os.waitstatus_to_exitcode(status)
        elif self.server.dead or not self.server.usable():
            self._wait_gone()
            self.lost, self.returncode = SERVER_LOST, -signal.SIGKILL
        elif not _alive(self.pid):  # ended (a zombie): the server should say so at once
            self._ended_unreported = self._ended_unreported or time.time()
            if time.time() - self._ended_unreported > LOST_CHILD_WAIT_S:
                self.server.reason = f"fork server {self.server.pid} stopped reporting its children"
                self.server.close()
                self.lost, self.returncode = SERVER_SILENT, -signal.SIGKILL
        return self.returncode

    def _wait_gone(self) -> None:
        """The server died: its pdeathsig SIGKILLs this child; wait until it is gone."""
        deadline = time.time() + LOST_CHILD_WAIT_S
        while time.time() < deadline and _alive(self.pid):
            time.sleep(0.02)
        if _alive(self.pid):
            self._signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.time() + timeout
        while self.poll() is None:
            remaining = 1.0 if deadline is None else deadline - time.time()
            if remaining <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.server.pump(min(1.0, remaining))
        return self.returncode  # type: ignore[return-value]

    def _signal(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def terminate(self) -> None:
        if self.poll() is None:  # not yet reaped by the server: the pid is still this child's
            self._signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.poll() is None:
            self._signal(signal.SIGKILL)


def _alive(pid: int) -> bool:
    """A live, non-zombie process ``pid``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"

