"""A fork server for the local runner: steps start from a process that has done its imports.

Under the local runner a step is `churnflow <argv>` on the worker. As a fresh process, a
demo-scale day pays more for imports than for its work: Great Expectations 4-8 s, dbt 2-3 s,
the Spark Connect client with pandas and pyarrow about 1.5 s, on each of a day's steps. The
step server imports them once. For each request it forks a child that becomes that step: its
own session and process group, the caller's environment, working directory and stdin, stdout
and stderr (passed as file descriptors), then the same `churnflow.cli.main(argv)` a fresh
process runs, with the project's modules re-imported so edits apply at once. The work has one
code path; only the interpreter start and third-party imports are shared (after upgrading
packages, restart the stack).

Protocol, over a Unix socket, one connection per step. The client sends a request, a 4-byte
length and then JSON `{"argv": [...], "env": {...}, "cwd": "..."}`, with its three stdio
descriptors attached (SCM_RIGHTS). The server answers one JSON line `{"pid": N}` once the
child leads its own process group, and one `{"exit": code}` line when the child ends
(negative: the signal that killed it). When the client goes away first (a killed task, a dead
worker) the server ends the step's process group, so nothing outlives its task.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import re
import resource
import selectors
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from churnflow.errors import ConfigError

ENV_VAR = "CHURNFLOW_STEP_SERVER"
# What a step would import on its own, minus anything that starts threads or opens
# connections: a fork copies only the forking thread.
PRELOAD = (
    "churnflow.cli",
    "churnflow.landing",
    "churnflow.ingest",
    "churnflow.features",
    "churnflow.validate",
    "churnflow.scoring",
    "mlflow",
    "mlflow.pyfunc",  # 0.35 s a step: scoring loads the model, drift reads its feature spec
    "churnflow.drift",
    "churnflow.retraining",
    "churnflow.trend",
    "evidently.presets",
    "evidently.metrics",
    "pandas",
    "pyarrow.dataset",
    "pyspark.sql.connect.session",
    "dbt.cli.main",
    "dbt.adapters.spark.impl",
    "great_expectations",
    "churnflow.data_docs",  # compiles Data Docs' templates at import
)
_HEADER = struct.Struct("!I")
_MAX_REQUEST = 4 * 1024 * 1024
_REQUEST_TIMEOUT_S = 30.0
_ORPHAN_GRACE_S = 10.0


class StepServerError(RuntimeError):
    """The step server could not be reached or broke off a step."""


# --- client ---------------------------------------------------------------------------------


@dataclass
class ServedStep:
    """A step the server runs: the subset of `subprocess.Popen` the local runner uses.

    `pid` leads the step's process group, so the runner ends it as it ends a subprocess.
    `poll` only peeks at the socket: it may run in a signal handler (a task kill) while
    `wait` is blocked reading the same socket, and must not take the exit line from it.
    """

    pid: int
    _conn: socket.socket
    returncode: int | None = None
    _buffer: bytes = field(default=b"", repr=False)

    def poll(self) -> int | None:
        if self.returncode is None:
            pending = self._buffer
            with contextlib.suppress(BlockingIOError, InterruptedError):
                pending += self._conn.recv(4096, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            if b"\n" in pending:
                self.returncode = _exit_code(pending.partition(b"\n")[0])
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = _exit_code(self._read_line())
        return self.returncode

    def _read_line(self) -> bytes:
        while b"\n" not in self._buffer:
            chunk = self._conn.recv(4096)
            if not chunk:
                raise StepServerError(
                    f"the step server closed the connection before step pid {self.pid} ended"
                )
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line


def _exit_code(line: bytes) -> int:
    message = json.loads(line)
    if not isinstance(message, dict) or "exit" not in message:
        raise StepServerError(f"step server sent {message!r} instead of an exit status")
    return int(message["exit"])


def start_step(
    socket_path: str | Path,
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str | Path,
    stdio: tuple[int, int, int],
) -> ServedStep:
    """Ask the server at `socket_path` to run `churnflow <argv>`; raise OSError if it is down."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(_REQUEST_TIMEOUT_S)
        conn.connect(str(socket_path))
        payload = json.dumps({"argv": list(argv), "env": dict(env), "cwd": str(cwd)}).encode()
        message = _HEADER.pack(len(payload)) + payload
        sent = socket.send_fds(conn, [message], list(stdio))
        conn.sendall(message[sent:])
        # The step keeps whatever follows the pid line (a quick step's exit line).
        step = ServedStep(pid=0, _conn=conn)
        reply = json.loads(step._read_line())
        if not isinstance(reply, dict) or "pid" not in reply:
            raise StepServerError(f"step server at {socket_path} refused the step: {reply!r}")
        step.pid = int(reply["pid"])
        conn.settimeout(None)
        return step
    except BaseException:
        conn.close()
        raise


# --- server ---------------------------------------------------------------------------------


@dataclass
class _Running:
    conn: socket.socket
    started: float
    argv: Sequence[str]
    kill_at: float | None = None  # set when the client has gone away


def preload(modules: Sequence[str] = PRELOAD) -> None:
    """Import what steps import; refuse to serve if that started a thread (forks lose them)."""
    for name in modules:
        importlib.import_module(name)
    extra = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if extra:
        raise ConfigError(
            f"step server: preloading started threads {extra}; forking now could deadlock"
        )


class _NoRequestError(Exception):
    """A connection closed without a request: a health probe."""


def _receive_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    conn.settimeout(_REQUEST_TIMEOUT_S)
    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
    if not data and not fds:
        raise _NoRequestError
    try:
        while len(data) < _HEADER.size:
            data += _recv_some(conn)
        (length,) = _HEADER.unpack_from(data)
        if length > _MAX_REQUEST:
            raise StepServerError(f"request of {length} bytes is over {_MAX_REQUEST}")
        while len(data) < _HEADER.size + length:
            data += _recv_some(conn)
        request = json.loads(data[_HEADER.size : _HEADER.size + length])
        if len(fds) != 3 or not isinstance(request.get("argv"), list):
            raise StepServerError("a request carries argv, env, cwd and three descriptors")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return request, fds


def _recv_some(conn: socket.socket) -> bytes:
    chunk = conn.recv(65536)
    if not chunk:
        raise StepServerError("client closed the connection mid-request")
    return chunk


def _become_step(request: Mapping[str, Any], stdio: Sequence[int], ready_fd: int) -> None:
    """In the forked child: turn into `churnflow <argv>` as the caller would have started it."""
    os.setsid()
    os.write(ready_fd, b"1")
    os.close(ready_fd)
    for target, fd in enumerate(stdio):
        os.dup2(fd, target)
        os.close(fd)
    code = 1
    try:
        os.chdir(request.get("cwd") or "/")
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in request.get("env", {}).items()})
        argv = [str(arg) for arg in request["argv"]]
        sys.argv = ["churnflow", *argv]
        for stream in (sys.stdout, sys.stderr):
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        # The project's own modules are imported afresh (tens of milliseconds: what they import
        # stays loaded), so an edit to them takes effect without restarting the server.
        for name in [m for m in sys.modules if m == "churnflow" or m.startswith("churnflow.")]:
            del sys.modules[name]
        from churnflow.cli import main

        code = main(argv)
    except SystemExit as exit_:  # argparse errors, --help
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()  # what a fresh interpreter runs on its way out
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        os._exit(code)


class StepServer:
    """Single-threaded: one selector over the listening socket, clients and SIGCHLD."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.running: dict[int, _Running] = {}
        self.selector = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False

    def serve_forever(self) -> None:
        socket_path = self.socket_path
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        socket_path.unlink(missing_ok=True)
        # Whoever can connect runs commands as this user: the socket is created private (no
        # window between bind and a chmod in which another user could connect).
        previous_umask = os.umask(0o177)
        try:
            self.listener.bind(str(socket_path))
        finally:
            os.umask(previous_umask)
        self.listener.listen(64)
        _become_subreaper()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        _log(f"serving steps on {socket_path} (pid {os.getpid()})")
        try:
            while not self._stopping:
                for key, _events in self.selector.select(timeout=1.0):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_r, 4096)
                    else:
                        self._client_event(key.data)
                self._reap()
                self._kill_orphans()
        finally:
            self._shutdown()

    def _stop(self, *_: object) -> None:
        self._stopping = True

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        try:
            request, stdio = _receive_request(conn)
        except _NoRequestError:
            conn.close()
            return
        except (OSError, ValueError, StepServerError) as err:
            _log(f"bad request: {err}")
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"error": str(err)}).encode() + b"\n")
            conn.close()
            return
        ready_r, ready_w = os.pipe()
        try:
            pid = os.fork()
        except OSError as err:  # out of memory or processes: this step fails, the server stays
            _log(f"fork failed: {err}")
            for fd in (*stdio, ready_r, ready_w):
                os.close(fd)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"error": f"fork failed: {err}"}).encode() + b"\n")
            conn.close()
            return
        if pid == 0:
            self._close_in_child(conn, ready_r)
            _become_step(request, stdio, ready_w)
        os.close(ready_w)
        for fd in stdio:
            os.close(fd)
        os.read(ready_r, 1)  # the child leads its process group now: safe to killpg
        os.close(ready_r)
        argv = request["argv"]
        self.running[pid] = _Running(conn=conn, started=time.monotonic(), argv=argv)
        try:
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        except OSError:
            self._client_gone(pid)
            return
        conn.setblocking(False)
        self.selector.register(conn, selectors.EVENT_READ, pid)
        _log(f"pid {pid}: churnflow {' '.join(map(str, argv))}")

    def _close_in_child(self, conn: socket.socket, ready_r: int) -> None:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        self.selector.close()
        for sock in (self.listener, conn, *(r.conn for r in self.running.values())):
            sock.close()
        for fd in (self._wake_r, self._wake_w, ready_r):
            os.close(fd)

    def _client_event(self, pid: int) -> None:
        entry = self.running.get(pid)
        if entry is None:
            return
        try:
            data = entry.conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._client_gone(pid)

    def _client_gone(self, pid: int) -> None:
        """The task that asked for this step is gone: the step goes too."""
        entry = self.running[pid]
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(entry.conn)
        if entry.kill_at is None:
            _log(f"pid {pid}: client went away, ending the step's process group")
            _signal_group(pid, signal.SIGTERM)
            entry.kill_at = time.monotonic() + _ORPHAN_GRACE_S

    def _kill_orphans(self) -> None:
        now = time.monotonic()
        for pid, entry in self.running.items():
            if entry.kill_at is not None and now >= entry.kill_at:
                _signal_group(pid, signal.SIGKILL)

    def _reap(self) -> None:
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            entry = self.running.pop(pid, None)
            if entry is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            _log(step_ended_line(pid, entry.argv, code, time.monotonic() - entry.started, usage))
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(entry.conn)
            with contextlib.suppress(OSError):
                entry.conn.setblocking(True)
                entry.conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
            entry.conn.close()

    def _shutdown(self) -> None:
        for pid in list(self.running):
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + _ORPHAN_GRACE_S
        while self.running and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.1)
        for pid in list(self.running):
            _signal_group(pid, signal.SIGKILL)
        self._reap()
        self.listener.close()
        self.socket_path.unlink(missing_ok=True)
        _log("stopped")


def _become_subreaper() -> None:
    """Linux: orphans of a step (dbt's resource tracker, say) become our children, not init's.

    We reap them at once; an init that reaps lazily would leave zombies in a step's process
    group, and the runner waits for that group to be empty before it ends the task.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


# The log line each step ends with; `bench/backfill` reads the CPU seconds back from it.
STEP_ENDED = re.compile(
    r"pid (?P<pid>\d+) churnflow (?P<command>\S+): exit (?P<exit>-?\d+) after "
    r"(?P<wall>[\d.]+) s, (?P<cpu>[\d.]+) CPU s"
)


def step_ended_line(
    pid: int, argv: Sequence[str], code: int, wall_s: float, usage: resource.struct_rusage
) -> str:
    """Wall and CPU seconds (user + system, with the children the step waited for; orphans
    the server adopts and reaps are not counted): a step's cost on a shared machine is its
    CPU, which its wall time hides when the cores are busy."""
    command = re.sub(r"\s", "_", str(argv[0])) if argv and str(argv[0]) else "-"
    cpu_s = usage.ru_utime + usage.ru_stime
    return f"pid {pid} churnflow {command}: exit {code} after {wall_s:.1f} s, {cpu_s:.2f} CPU s"


def _log(message: str) -> None:
    print(f"{time.strftime('%F %T')} step-server: {message}", flush=True)


def run_server(socket_path: Path) -> None:
    """`churnflow step-server --socket PATH`: preload, then serve until SIGTERM."""
    started = time.perf_counter()
    preload()
    _log(f"preloaded {len(PRELOAD)} modules in {time.perf_counter() - started:.1f} s")
    StepServer(socket_path).serve_forever()
