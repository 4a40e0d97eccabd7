"""The `local` runner: a step's argv as a subprocess of the Airflow worker.

The subprocess gets its own process group, so a timeout, a task kill from the UI or a
failure of the worker ends the step and everything it started (Spark JVMs, dbt threads):
nothing is orphaned. Output is streamed line by line into the task log while it runs.

The step gets only its own environment (`churnflow_airflow.step_env`): never the worker's
Airflow settings and secrets. Its exit code decides the task state by the rule both runners
share (`churnflow_airflow.exit_codes`).

When `CHURNFLOW_STEP_SERVER` names the socket of a running step server (the local stack
starts one), `churnflow` steps are forked from that server instead of started fresh: same
argv, environment, working directory, output and process group, without paying the imports of
Spark, dbt and Great Expectations on every step (`churnflow.step_server`). If the server does
not answer, or the variable is empty, the step runs as a plain subprocess.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from churnflow_airflow.data_docs import DataDocsWatcher
from churnflow_airflow.exit_codes import step_failure
from churnflow_airflow.step_env import MissingSecretError, step_environment

TAIL_LINES = 20


def resolve_executable(name: str) -> str:
    """Find argv[0] beside this interpreter first: the worker's own environment owns the CLI."""
    if os.sep in name:
        return name
    own_bin = str(Path(sys.executable).parent)
    search_path = os.pathsep.join([own_bin, os.environ.get("PATH", "")])
    found = shutil.which(name, path=search_path)
    if found is None:
        raise AirflowFailException(f"step command {name!r} not found in {own_bin} or on PATH")
    return found


def _default_lake() -> str:
    from churnflow_airflow.config import load_settings

    return load_settings().lake


class StepProcess(Protocol):
    """What the runner needs of a step's process: a `subprocess.Popen` or a served step."""

    pid: int

    def poll(self) -> int | None: ...

    def wait(self) -> int: ...


def terminate_group(process: StepProcess, grace_s: float) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after the grace period."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if process.poll() is not None and not _group_alive(process.pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    process.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class LocalStepOperator(DataDocsWatcher, BaseOperator):
    """Runs a step's argv locally; the exit code decides the task state.

    `secrets` names environment variables the step needs from the worker (the local
    counterpart of a pod's secret references); a missing one fails the task without retry.
    """

    template_fields: Sequence[str] = ("argv", "env")
    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        secrets: Sequence[str] = (),
        grace_period_s: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.argv = list(argv)
        self.env = dict(env or {})
        self.secrets = tuple(secrets)
        self.grace_period_s = grace_period_s
        self._process: StepProcess | None = None

    def execute(self, context: Any) -> None:
        argv = [str(arg) for arg in self.argv]
        self.log.info("running: %s", shlex.join(argv))
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        declared = {"PYTHONUNBUFFERED": "1", **{k: str(v) for k, v in self.env.items()}}
        try:
            env = step_environment(os.environ, declared, self.secrets)
        except MissingSecretError as err:
            raise AirflowFailException(
                f"step {self.task_id!r} needs the secret variable {err.args[0]} in the "
                "worker's environment; it is not set"
            ) from None
        lake = env.get("CHURNFLOW_LAKE") or _default_lake()
        self._process, output = self._start(argv, env)
        # The pump thread forwards output; the main thread waits for the leader only, since a
        # background child holding the pipe open must not keep the task running.
        pump = threading.Thread(target=self._forward_output, args=(output, tail, lake), daemon=True)
        pump.start()
        try:
            code = self._process.wait()
        finally:
            # Timeout or kill interrupts the wait; a normal exit may leave background children
            # in the group. Either way the group ends with the step.
            terminate_group(self._process, self.grace_period_s)
            pump.join(timeout=self.grace_period_s)
        if code != 0:
            raise step_failure(
                code,
                f"step {self.task_id!r} failed: `{shlex.join(argv)}` exited with code {code}. "
                "Last output:\n" + "\n".join(tail),
            )

    def _start(self, argv: list[str], env: dict[str, str]) -> tuple[StepProcess, IO[str]]:
        """The step's process and the stream of its output (stdout and stderr together)."""
        server = os.environ.get("CHURNFLOW_STEP_SERVER")
        if server and argv[0] == "churnflow":
            served = self._start_served(server, argv, env)
            if served is not None:
                return served
        process = subprocess.Popen(
            [resolve_executable(argv[0]), *argv[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            start_new_session=True,
            env=env,
        )
        assert process.stdout is not None
        return process, process.stdout

    def _start_served(
        self, server: str, argv: list[str], env: dict[str, str]
    ) -> tuple[StepProcess, IO[str]] | None:
        read_fd, write_fd = os.pipe()
        try:
            from churnflow.step_server import start_step

            with Path(os.devnull).open("rb") as devnull:
                stdio = (devnull.fileno(), write_fd, write_fd)
                process = start_step(server, argv[1:], env, Path.cwd(), stdio)
        except (OSError, ImportError) as err:
            os.close(read_fd)
            self.log.warning("step server %s not usable (%s); starting a subprocess", server, err)
            return None
        finally:
            os.close(write_fd)
        self.log.info("forked from the step server as pid %d", process.pid)
        return process, os.fdopen(read_fd, encoding="utf-8", errors="replace")

    def _forward_output(self, output: IO[str], tail: deque[str], lake: str) -> None:
        with output:
            for raw_line in output:
                line = raw_line.rstrip("\n")
                tail.append(line)
                self.log.info("%s", line)
                self.note_output(line, lake)

    def on_kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self.log.warning("killing step process group %d", self._process.pid)
            terminate_group(self._process, self.grace_period_s)
