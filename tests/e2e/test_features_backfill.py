"""A real scheduler backfills churn_features (Spark Connect, dbt, Great Expectations) in order."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

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
FIRST, LAST = date(2026, 2, 1), date(2026, 2, 3)


@pytest.fixture
def stack(stack_home: Path) -> Iterator[StackConfig]:
    config = throwaway_config(stack_home)
    try:
        yield config
    finally:
        down(config, log=lambda _: None)


def test_backfill_builds_silver_features_and_data_docs_for_every_day(stack: StackConfig) -> None:
    lake = stack.home / "lake"
    yesterday = (date.today() - timedelta(days=1)).isoformat()
    for start, end in ((FIRST.isoformat(), LAST.isoformat()), (yesterday, yesterday)):
        generated = run_cli(
            "generate", "--start", start, "--end", end, "--customers", "3000", "--quiet", lake=lake
        )
        assert generated.returncode == 0, generated.stderr

    up(stack, PIPELINE_SERVICES, log=lambda _: None)
    client = AirflowClient(stack.airflow_url, "admin", admin_password(stack))
    client.wait_for_dag(DAG_ID)
    client.unpause(DAG_ID)
    client.create_backfill(DAG_ID, FIRST.isoformat(), LAST.isoformat(), max_active_runs=4)

    deadline = time.monotonic() + 900
    days = (LAST - FIRST).days + 1
    while True:
        runs = [
            r
            for r in client.dag_runs(DAG_ID, FIRST.isoformat(), LAST.isoformat())
            if r["run_type"] == "backfill"
        ]
        if len(runs) == days and all(r["state"] in TERMINAL_STATES for r in runs):
            break
        if any(r["state"] == "failed" for r in runs):
            break  # later days wait on it (depends_on_past): nothing more will finish
        assert time.monotonic() < deadline, f"backfill not finished: {[r['state'] for r in runs]}"
        time.sleep(5)
    failed = {
        run["logical_date"][:10]: [
            ti["task_id"]
            for ti in client.task_instances(DAG_ID, run["dag_run_id"])
            if ti["state"] == "failed"
        ]
        for run in runs
        if run["state"] != "success"
    }
    assert failed == {}, f"failed days and tasks (task logs under {stack.logs}): {failed}"

    for offset in range((LAST - FIRST).days + 1):
        ds = (FIRST + timedelta(days=offset)).isoformat()
        silver = pd.read_parquet(lake / "silver" / "orders" / f"ds={ds}")
        features = pd.read_parquet(lake / "features" / "customer_features" / f"ds={ds}")
        assert len(silver) > 0 and silver["order_id"].is_unique
        assert len(features) > 0 and features["customer_id"].is_unique
        assert (features["days_since_last_order"] <= 89).all()
    for suite in ("silver_orders", "customer_features"):
        assert (lake / "reports" / "gx" / suite / "index.html").exists()
    # Every step was forked from the step server, none started as a fresh process.
    served = (stack.logs / "steps.log").read_text()
    for offset in range(days):
        ds = (FIRST + timedelta(days=offset)).isoformat()
        for command in ("ingest", "features", "validate"):
            assert f"churnflow {command} --ds {ds}" in served, (command, ds)
