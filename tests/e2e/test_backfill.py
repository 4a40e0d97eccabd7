"""A real scheduler backfills churn_landing_check; states are read back through the REST API.

Runs once on the embedded default database and once on the PostgreSQL server at
127.0.0.1:5432 when one answers (skipped with the reason otherwise). The third day carries a
contract defect: its run must fail at `check_landing`, on the first try (no retries for data
errors), while the other days succeed.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.api import TERMINAL_STATES, AirflowClient
from devstack.services import (
    AIRFLOW_SERVICES,
    StackConfig,
    admin_password,
    down,
    session_members,
    status,
    throwaway_config,
    up,
)
from tests.conftest import run_cli

pytestmark = pytest.mark.e2e

DAG_ID = "churn_landing_check"
DAYS = ("2026-01-05", "2026-01-06", "2026-01-07")
BROKEN_DAY = DAYS[-1]
PG_HOST, PG_PORT = "127.0.0.1", 5432


def _postgres_answers() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(params=["embedded", "postgresql"])
def stack(request: pytest.FixtureRequest, stack_home: Path) -> Iterator[StackConfig]:
    database = None
    urls: dict[str, str] = {}
    if request.param == "postgresql":
        if not _postgres_answers():
            pytest.skip(f"no PostgreSQL answers on {PG_HOST}:{PG_PORT}")
        import psycopg2

        database = f"churnflow_e2e_{uuid.uuid4().hex[:8]}"
        admin = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres")
        admin.autocommit = True
        admin.cursor().execute(f'CREATE DATABASE "{database}"')
        url = f"postgresql+psycopg2://postgres@{PG_HOST}:{PG_PORT}/{database}"
        urls = {"airflow_db_url": url, "mlflow_db_url": url}
    config = throwaway_config(stack_home, **urls)
    try:
        yield config
    finally:
        down(config, log=lambda _: None)
        if database:
            admin.cursor().execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            admin.close()


def _wait_for_runs(client: AirflowClient, timeout_s: float = 420) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        runs = [
            run
            for run in client.dag_runs(DAG_ID, DAYS[0], DAYS[-1])
            if run["run_type"] == "backfill"
        ]
        if len(runs) == len(DAYS) and all(r["state"] in TERMINAL_STATES for r in runs):
            return runs
        assert time.monotonic() < deadline, f"backfill not finished: {runs}"
        time.sleep(3)


def test_backfill_of_three_days_through_the_real_scheduler(stack: StackConfig) -> None:
    lake = stack.home / "lake"
    yesterday = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
    for start, end, extra in (
        (DAYS[0], DAYS[-1], ["--defect", "renamed-column", "--defect-ds", BROKEN_DAY]),
        (yesterday, yesterday, []),  # the scheduler's own latest run finds its day too
    ):
        generated = run_cli(
            "generate", "--start", start, "--end", end, "--customers", "200", "--quiet", *extra,
            lake=lake,
        )  # fmt: skip
        assert generated.returncode == 0, generated.stderr

    up(stack, AIRFLOW_SERVICES, log=lambda _: None)
    client = AirflowClient(stack.airflow_url, "admin", admin_password(stack))
    client.wait_for_dag(DAG_ID)
    client.unpause(DAG_ID)
    backfill = client.create_backfill(DAG_ID, DAYS[0], DAYS[-1], max_active_runs=3)
    assert backfill["dag_id"] == DAG_ID

    runs = {run["logical_date"][:10]: run for run in _wait_for_runs(client)}
    assert sorted(runs) == list(DAYS)
    assert {day: runs[day]["state"] for day in DAYS} == {
        DAYS[0]: "success",
        DAYS[1]: "success",
        BROKEN_DAY: "failed",
    }
    tasks = {t["task_id"]: t for t in client.task_instances(DAG_ID, runs[BROKEN_DAY]["dag_run_id"])}
    assert tasks["wait_for_orders"]["state"] == "success"
    assert tasks["check_landing"]["state"] == "failed"
    assert tasks["check_landing"]["try_number"] == 1, "a data error must not be retried"

    logs = stack.logs / "airflow" / f"dag_id={DAG_ID}"
    good_log = next(logs.glob(f"run_id={runs[DAYS[0]]['dag_run_id']}/task_id=check_landing/*.log"))
    assert f"ds={DAYS[0]}: " in good_log.read_text()
    bad_log = next(
        logs.glob(f"run_id={runs[BROKEN_DAY]['dag_run_id']}/task_id=check_landing/*.log")
    )
    assert "missing required column(s) amount" in bad_log.read_text()

    # A second `up` reuses the running services; `down` stops every one of them.
    pids = status(stack)
    messages: list[str] = []
    up(stack, AIRFLOW_SERVICES, log=messages.append)
    assert status(stack) == pids
    assert any("already running" in line for line in messages)
    down(stack, log=lambda _: None)
    assert set(status(stack).values()) == {None}
    assert [session_members(pid) for pid in pids.values() if pid] == [[]] * len(AIRFLOW_SERVICES)
    assert not (stack.pgdata / "postmaster.pid").exists()
