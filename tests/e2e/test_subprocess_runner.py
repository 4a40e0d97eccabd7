"""The plain-subprocess path of the local runner, end to end, gives what the step server gives.

A real scheduler runs one day of churn_features with the step server switched off
(`CHURNFLOW_STEP_SERVER` empty, as in docker-compose): every step is a fresh `churnflow`
process. The same steps of the same day are then run again through a step server (the stack's
own, started beside Airflow) and the published partitions must come out identical. The day's
Data Docs are one click from its task: the extra link is an http URL the api-server serves.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests

from churnflow_airflow.local_runner import LocalStepOperator
from churnflow_airflow.step_env import passes
from devstack.api import TERMINAL_STATES, AirflowClient
from devstack.services import (
    PIPELINE_SERVICES,
    StackConfig,
    admin_password,
    down,
    throwaway_config,
    up,
)
from tests.conftest import run_cli

pytestmark = pytest.mark.e2e

DAG_ID = "churn_features"
DAY = "2026-02-01"
# The published outputs of the day, and the key that orders their rows.
OUTPUTS = {"silver/orders": "order_id", "features/customer_features": "customer_id"}


@pytest.fixture
def stack(stack_home: Path) -> Iterator[StackConfig]:
    config = throwaway_config(stack_home, extra_env={"CHURNFLOW_STEP_SERVER": ""})
    try:
        yield config
    finally:
        down(config, log=lambda _: None)


def _published(lake: Path) -> dict[str, pd.DataFrame]:
    frames = {}
    for dataset, key in OUTPUTS.items():
        frame = pd.read_parquet(lake / dataset / f"ds={DAY}")
        assert len(frame) > 0, dataset
        frames[dataset] = frame.sort_values(key).reset_index(drop=True)
    return frames


def _run_day(client: AirflowClient) -> dict:
    client.create_backfill(DAG_ID, DAY, DAY, max_active_runs=1)
    deadline = time.monotonic() + 600
    while True:
        runs = [r for r in client.dag_runs(DAG_ID, DAY, DAY) if r["run_type"] == "backfill"]
        if runs and runs[0]["state"] in TERMINAL_STATES:
            return runs[0]
        assert time.monotonic() < deadline, f"run of {DAY} not finished: {runs}"
        time.sleep(3)


def test_a_day_through_plain_subprocesses_matches_the_step_server_and_links_its_data_docs(
    stack: StackConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = stack.lake
    generated = run_cli(
        "generate", "--start", DAY, "--end", DAY, "--customers", "3000", "--quiet", lake=lake
    )
    assert generated.returncode == 0, generated.stderr
    env = up(stack, PIPELINE_SERVICES, log=lambda _: None)
    client = AirflowClient(stack.airflow_url, "admin", admin_password(stack))
    client.wait_for_dag(DAG_ID)
    client.unpause(DAG_ID)

    run = _run_day(client)
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances(DAG_ID, run["dag_run_id"])}
    assert run["state"] == "success", f"task states {states}; logs under {stack.logs}"
    served = (stack.logs / "steps.log").read_text()
    assert f"--ds {DAY}" not in served, "a step was forked although the step server was off"
    task_logs = "".join(p.read_text() for p in (stack.logs / "airflow").rglob("*.log"))
    assert "forked from the step server" not in task_logs
    by_subprocess = _published(lake)

    # The Data Docs page the ingest step named is one click away, over http, for a logged-in user.
    links_path = f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/ingest_orders/links"
    url = client.request("GET", links_path)["extra_links"]["Data Docs"]
    assert url and url.startswith(f"{stack.airflow_url}/churnflow/reports/gx/silver_orders/"), url
    page = requests.get(url, headers=client._headers(), timeout=30)
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert requests.get(url, timeout=30).status_code in (401, 403), "reports need a login"

    # The same steps of the same day, forked from the step server this time.
    monkeypatch.setenv("CHURNFLOW_STEP_SERVER", str(stack.step_socket))
    step_env = {name: value for name, value in env.items() if passes(name)}
    for task_id, command in (("ingest_orders", "ingest"), ("build_features", "features")):
        LocalStepOperator(
            task_id=task_id, argv=["churnflow", command, "--ds", DAY], env=step_env
        ).execute({})
        assert f"churnflow {command} --ds {DAY}" in (stack.logs / "steps.log").read_text()
    by_step_server = _published(lake)

    for dataset, frame in by_subprocess.items():
        pd.testing.assert_frame_equal(frame, by_step_server[dataset], obj=dataset)
    assert os.environ["CHURNFLOW_STEP_SERVER"] == str(stack.step_socket)
