"""The step server: `churnflow` steps forked from a preloaded process behave like subprocesses.

One real server (`churnflow step-server`, preloading Spark's client, dbt and GX) serves the
module; steps go through the local runner as the DAGs run them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from churnflow.step_server import start_step
from churnflow_airflow.local_runner import LocalStepOperator
from tests.conftest import CHURNFLOW, run_cli

DAY = "2026-03-02"
# A real step that runs for minutes: years of raw data for many customers.
LONG_STEP = ["generate", "--start", "2020-01-01", "--end", "2026-01-01", "--customers", "200000"]


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(socket, log) of a running step server."""
    folder = tmp_path_factory.mktemp("step-server")
    path, log = folder / "steps.sock", folder / "steps.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [CHURNFLOW, "step-server", "--socket", str(path)],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 180
    while not _listening(path):
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "step server did not listen within 180 s"
        time.sleep(0.2)
    yield path, log
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    assert not path.exists(), "the server removes its socket on the way out"


@pytest.fixture
def served(server: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CHURNFLOW_STEP_SERVER", str(server[0]))
    return server[1]


def _gone(pid: int, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_a_step_runs_forked_with_the_callers_env_and_output(
    served: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lake = tmp_path / "lake"
    assert run_cli("generate", "--start", DAY, "--end", DAY, "--quiet", lake=lake).returncode == 0
    LocalStepOperator(
        task_id="check",
        argv=["churnflow", "check-landing", "--ds", DAY],
        env={"CHURNFLOW_LAKE": str(lake)},
    ).execute({})
    out = capsys.readouterr().out
    assert "forked from the step server" in out
    assert f"orders in 1 file(s) at {lake}/raw/orders/ds={DAY}" in out
    assert f"churnflow check-landing --ds {DAY}" in served.read_text()


def test_a_data_error_fails_without_retry_and_shows_the_message(
    served: Path, tmp_path: Path
) -> None:
    operator = LocalStepOperator(
        task_id="check",
        argv=["churnflow", "check-landing", "--ds", DAY],
        env={"CHURNFLOW_LAKE": str(tmp_path / "empty-lake")},
    )
    with pytest.raises(AirflowFailException, match="exited with code 65") as caught:
        operator.execute({})
    assert f"ds={DAY}" in str(caught.value) and "missing" in str(caught.value)


def test_killing_the_task_ends_the_served_step(served: Path, tmp_path: Path) -> None:
    operator = LocalStepOperator(
        task_id="long",
        argv=["churnflow", *LONG_STEP],
        env={"CHURNFLOW_LAKE": str(tmp_path / "lake")},
        grace_period_s=5.0,
    )
    failures: list[BaseException] = []

    def run() -> None:
        try:
            operator.execute({})
        except AirflowException as err:
            failures.append(err)

    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.monotonic() + 30
    while operator._process is None:
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.05)
    pid = operator._process.pid
    time.sleep(1.0)
    operator.on_kill()
    assert _gone(pid), f"step group {pid} still alive after on_kill"
    runner.join(30)
    assert len(failures) == 1 and "exited with code -15" in str(failures[0])


def test_a_client_that_goes_away_takes_its_step_with_it(
    server: tuple[Path, Path], tmp_path: Path
) -> None:
    env = {"CHURNFLOW_LAKE": str(tmp_path / "lake"), "PATH": os.environ["PATH"]}
    with Path(os.devnull).open("rb+") as devnull:
        fd = devnull.fileno()
        step = start_step(server[0], LONG_STEP, env, tmp_path, (fd, fd, fd))
    time.sleep(1.0)
    assert step.poll() is None
    step._conn.close()  # the worker died
    assert _gone(step.pid), f"step group {step.pid} outlived its client"


def test_without_a_server_the_step_runs_as_a_subprocess(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHURNFLOW_STEP_SERVER", str(tmp_path / "no-server.sock"))
    LocalStepOperator(task_id="version", argv=["churnflow", "--version"]).execute({})
    out = capsys.readouterr().out
    assert "not usable" in out and "starting a subprocess" in out
    assert "churnflow 0." in out
