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

from churnflow.step_server import STEP_ENDED, start_step
from churnflow_airflow.local_runner import LocalStepOperator
from churnflow_airflow.step_env import step_environment
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
            env=step_environment(os.environ),  # as the stack starts it: no Airflow settings
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
    log = served.read_text()
    assert f"churnflow check-landing --ds {DAY}" in log
    # Logged before the exit status is sent: each step's CPU, for bench/backfill.
    ended = [m for m in STEP_ENDED.finditer(log) if m["command"] == "check-landing"]
    assert ended and ended[-1]["exit"] == "0" and float(ended[-1]["cpu"]) >= 0


def test_the_socket_is_created_private(server: tuple[Path, Path]) -> None:
    assert server[0].stat().st_mode & 0o777 == 0o600


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


def _started(
    operator: LocalStepOperator, timeout_s: float
) -> tuple[threading.Thread, list[BaseException]]:
    """Run the operator in a thread, as a worker would; return once its step process exists."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            operator.execute({})
        except AirflowException as err:
            failures.append(err)

    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.monotonic() + timeout_s
    while operator._process is None:
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.05)
    return runner, failures


def test_killing_the_task_ends_the_served_step(served: Path, tmp_path: Path) -> None:
    operator = LocalStepOperator(
        task_id="long",
        argv=["churnflow", *LONG_STEP],
        env={"CHURNFLOW_LAKE": str(tmp_path / "lake")},
        grace_period_s=5.0,
    )
    runner, failures = _started(operator, timeout_s=30)
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


# What an Airflow worker holds in its environment and no step may see.
AIRFLOW_SECRETS = {
    "AIRFLOW__CORE__FERNET_KEY": "fernet-key-must-stay-with-airflow",
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-secret-must-stay-with-airflow",
    "AIRFLOW__API__SECRET_KEY": "api-secret-must-stay-with-airflow",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://airflow:db-password@db/airflow",
    "AIRFLOW_CONN_SLACK_DEFAULT": "slack://:xoxb-connection-secret@",
    "UNRELATED_TOKEN": "not-declared-by-the-step",
}


def _session_members(leader: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == leader and int(stat.parent.name) != leader:  # process group
            members.append(int(stat.parent.name))
    return members


def _environment_of_a_child(leader: int, timeout_s: float = 120.0) -> dict[str, str]:
    """The environment a child of the step (Spark's JVM launcher) was started with."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pid in _session_members(leader):
            try:
                raw = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
            if "CHURNFLOW_LAKE" in env:
                return env
        time.sleep(0.1)
    raise AssertionError(f"step {leader} started no child within {timeout_s} s")


@pytest.mark.parametrize("path", ["subprocess", "step-server"])
def test_a_step_gets_its_settings_and_no_airflow_secret(
    path: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A real ingest starts Spark's JVM with its own environment, which the test reads."""
    served_log = request.getfixturevalue("served") if path == "step-server" else None
    if served_log is None:
        monkeypatch.delenv("CHURNFLOW_STEP_SERVER", raising=False)
    lake = tmp_path / "lake"
    assert run_cli("generate", "--start", DAY, "--end", DAY, "--quiet", lake=lake).returncode == 0
    for name, value in {**AIRFLOW_SECRETS, "SLACK_BOT_TOKEN": "xoxb-declared"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SPARK_REMOTE", raising=False)  # a local JVM: the child we inspect
    monkeypatch.setenv("CHURNFLOW_SPARK_DIR", str(tmp_path / "spark"))
    operator = LocalStepOperator(
        task_id="ingest_orders",
        argv=["churnflow", "ingest", "--ds", DAY],
        env={"CHURNFLOW_LAKE": str(lake), "CHURNFLOW_MAX_REJECT_SHARE": "0.5"},
        secrets=["SLACK_BOT_TOKEN"],
        grace_period_s=5.0,
    )
    runner, failures = _started(operator, timeout_s=60)
    try:
        env = _environment_of_a_child(operator._process.pid)
    finally:
        operator.on_kill()
        runner.join(60)
    assert len(failures) == 1, "the killed step fails its task"
    if served_log is not None:
        assert f"churnflow ingest --ds {DAY}" in served_log.read_text()
    assert env["CHURNFLOW_LAKE"] == str(lake)
    assert env["CHURNFLOW_MAX_REJECT_SHARE"] == "0.5"
    assert env["SLACK_BOT_TOKEN"] == "xoxb-declared"
    assert env["PATH"] == os.environ["PATH"]
    leaked = sorted(name for name in env if name in AIRFLOW_SECRETS or name.startswith("AIRFLOW"))
    assert leaked == []
    assert not any(secret in "\0".join(env.values()) for secret in AIRFLOW_SECRETS.values())


def test_the_preload_leaves_torch_and_lightning_to_the_training_step() -> None:
    """Every forked step carries what the server preloaded: torch and Lightning (10-12 s of
    import, thread pools on first use) must stay out, so daily steps do not pay for them."""
    code = (
        "import sys; from churnflow.step_server import preload; preload(); "
        "print(','.join(m for m in ('torch', 'pytorch_lightning') if m in sys.modules))"
    )
    python = str(Path(CHURNFLOW).with_name("python"))
    done = subprocess.run(
        [python, "-c", code], check=False, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ""
