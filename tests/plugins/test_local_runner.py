"""The local runner: exit codes decide the state, output streams live, nothing is orphaned."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowTaskTimeout
from airflow.sdk.execution_time.timeout import timeout

from churnflow_airflow.local_runner import LocalStepOperator


def _operator(script: str, **kwargs: object) -> LocalStepOperator:
    return LocalStepOperator(
        task_id="step_under_test",
        argv=[sys.executable, "-c", script],
        grace_period_s=2.0,
        **kwargs,  # type: ignore[arg-type]
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def _wait_for_file(path: Path, timeout_s: float = 20.0) -> str:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)
    return path.read_text().strip()


# A step that starts a grandchild in its process group, records both pids, and hangs.
HANGING_STEP = """
import subprocess, sys, time, pathlib
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
pathlib.Path(sys.argv[1]).write_text(f"{child.pid}")
time.sleep(300)
"""


def test_exit_code_zero_succeeds() -> None:
    _operator("print('ok')").execute({})


def test_non_zero_exit_fails_with_the_command_and_last_output() -> None:
    operator = _operator("import sys; print('boom happened'); sys.exit(3)")
    with pytest.raises(AirflowException, match="exited with code 3") as caught:
        operator.execute({})
    assert "boom happened" in str(caught.value)
    assert not isinstance(caught.value, AirflowFailException)


@pytest.mark.parametrize("code", [os.EX_DATAERR, os.EX_CONFIG])
def test_data_and_config_error_exit_codes_fail_without_retry(code: int) -> None:
    operator = _operator(f"import sys; sys.exit({code})")
    with pytest.raises(AirflowFailException, match=f"exited with code {code}"):
        operator.execute({})


@pytest.mark.parametrize("code", [os.EX_TEMPFAIL, 1])
def test_engine_failures_and_crashes_are_retried(code: int) -> None:
    operator = _operator(f"import sys; sys.exit({code})")
    with pytest.raises(AirflowException, match=f"exited with code {code}") as caught:
        operator.execute({})
    assert not isinstance(caught.value, AirflowFailException)


def test_unknown_command_fails_clearly() -> None:
    operator = LocalStepOperator(task_id="missing", argv=["no-such-churnflow-command"])
    with pytest.raises(AirflowFailException, match="'no-such-churnflow-command' not found"):
        operator.execute({})


def test_env_is_passed_to_the_step(capsys: pytest.CaptureFixture[str]) -> None:
    operator = _operator(
        "import os; print('lake is', os.environ['CHURNFLOW_LAKE'])",
        env={"CHURNFLOW_LAKE": "/x/lake"},
    )
    operator.execute({})
    assert "lake is /x/lake" in capsys.readouterr().out


def test_output_reaches_the_task_log_while_the_step_runs(tmp_path: Path) -> None:
    """The step only finishes after the test has seen its first line in the log."""
    gate = tmp_path / "gate"
    script = (
        "import pathlib, time\n"
        "print('first line', flush=True)\n"
        f"while not pathlib.Path({str(gate)!r}).exists(): time.sleep(0.05)\n"
        "print('second line')\n"
    )
    seen = threading.Event()

    class Watcher(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "first line" in record.getMessage():
                seen.set()

    watched = logging.getLogger("test.local_runner.watched")
    watched.setLevel(logging.INFO)
    watched.addHandler(Watcher())

    class WatchedStep(LocalStepOperator):
        @property
        def log(self) -> logging.Logger:  # type: ignore[override]
            return watched

    operator = WatchedStep(task_id="streams", argv=[sys.executable, "-c", script])
    runner = threading.Thread(target=operator.execute, args=({},))
    runner.start()
    try:
        assert seen.wait(30), "first line was not logged while the step was still running"
        assert runner.is_alive()
    finally:
        gate.touch()
        runner.join(30)
    assert not runner.is_alive()


def test_execution_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    operator = LocalStepOperator(
        task_id="hangs", argv=[sys.executable, "-c", HANGING_STEP, str(pids)], grace_period_s=2.0
    )
    started = time.monotonic()
    with pytest.raises(AirflowTaskTimeout), timeout(3):  # the task runner's own timeout
        operator.execute({})
    grandchild = int(_wait_for_file(pids))
    assert operator._process is not None
    assert not _alive(operator._process.pid)
    assert not _alive(grandchild)
    assert time.monotonic() - started < 20


def test_on_kill_ends_the_step_and_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    operator = LocalStepOperator(
        task_id="killed", argv=[sys.executable, "-c", HANGING_STEP, str(pids)], grace_period_s=2.0
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            operator.execute({})
        except BaseException as err:
            errors.append(err)

    runner = threading.Thread(target=run)
    runner.start()
    grandchild = int(_wait_for_file(pids))
    operator.on_kill()
    runner.join(30)
    assert not runner.is_alive()
    assert errors and isinstance(errors[0], AirflowException)
    assert "exited with code -15" in str(errors[0])
    assert not _alive(grandchild)


def test_background_children_do_not_outlive_a_successful_step(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = (
        "import subprocess, sys, pathlib\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'],"
        " stdout=subprocess.DEVNULL)\n"
        f"pathlib.Path({str(pids)!r}).write_text(str(child.pid))\n"
    )
    _operator(script).execute({})
    assert not _alive(int(_wait_for_file(pids)))
