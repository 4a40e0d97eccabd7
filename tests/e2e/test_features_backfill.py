"""A real scheduler backfills churn_features (Spark Connect, dbt, Great Expectations).

One stack, the commands of the README as a user types them, on generator data where the
business changes (a 60% drop in orders when a campaign ends) and one later day is broken:

1. `airflow backfill create` over six days ends: the level shift is published with warnings,
   the broken day fails, the day after it fails at once naming the day to fix, and nothing of
   the broken day is published.
2. After the broken day's raw data is fixed, `airflow tasks clear --only-failed` resumes it.
3. `airflow backfill create --reprocess-behavior completed` rebuilds the last day and gives the
   same features.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator, Mapping
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
FIRST, LAST = date(2026, 2, 1), date(2026, 2, 6)
SHIFT = date(2026, 2, 3)  # orders fall by 60% from here on (a campaign ended)
BROKEN = date(2026, 2, 5)  # 5% negative amounts: ingest refuses the day
DAYS = [FIRST + timedelta(days=n) for n in range((LAST - FIRST).days + 1)]
GENERATE = (
    "--start", (FIRST - timedelta(days=14)).isoformat(), "--end", LAST.isoformat(),
    "--customers", "3000", "--volume-from", SHIFT.isoformat(), "--volume-factor", "0.4", "--quiet",
)  # fmt: skip


@pytest.fixture
def stack(stack_home: Path) -> Iterator[StackConfig]:
    config = throwaway_config(stack_home)
    try:
        yield config
    finally:
        down(config, log=lambda _: None)


def _airflow(env: Mapping[str, str], *args: str) -> str:
    """The stack's `airflow` CLI, as `source .churnflow/env.sh` gives it to a user."""
    for _ in range(20):
        done = subprocess.run(
            ["airflow", *args],
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        # A backfill that just ended blocks a new one for a few seconds (TRAPS.md).
        if "AlreadyRunningBackfill" not in done.stdout + done.stderr:
            break
        time.sleep(5)
    assert done.returncode == 0, f"airflow {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _wait(client: AirflowClient, days: list[date], timeout_s: float = 900) -> dict[str, dict]:
    """Runs of `days` by ds, once every one is finished (success or failed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        runs = {
            r["logical_date"][:10]: r
            for r in client.dag_runs(DAG_ID, days[0].isoformat(), days[-1].isoformat())
        }
        if len(runs) == len(days) and all(r["state"] in TERMINAL_STATES for r in runs.values()):
            return runs
        states = {ds: r["state"] for ds, r in sorted(runs.items())}
        assert time.monotonic() < deadline, f"backfill not finished: {states}"
        time.sleep(5)


def _wait_for_backfills(client: AirflowClient, timeout_s: float = 900) -> None:
    """Until every backfill of the DAG has completed (its runs all finished)."""
    deadline = time.monotonic() + timeout_s
    while True:
        backfills = client.request("GET", "/backfills", params={"dag_id": DAG_ID})["backfills"]
        if backfills and all(b["completed_at"] for b in backfills):
            return
        assert time.monotonic() < deadline, f"backfills not completed: {backfills}"
        time.sleep(5)


def _task_states(client: AirflowClient, run: dict) -> dict[str, str]:
    return {ti["task_id"]: ti["state"] for ti in client.task_instances(DAG_ID, run["dag_run_id"])}


def _task_log(stack: StackConfig, run: dict, task_id: str) -> str:
    folder = stack.logs / "airflow" / f"dag_id={DAG_ID}" / f"run_id={run['dag_run_id']}"
    paths = sorted(folder.glob(f"task_id={task_id}/*.log"))
    assert paths, f"no log of {task_id} under {folder}"
    return paths[-1].read_text()


def _features(lake: Path, day: date) -> pd.DataFrame:
    frame = pd.read_parquet(lake / "features" / "customer_features" / f"ds={day.isoformat()}")
    return frame.sort_values("customer_id", ignore_index=True)


def test_a_backfill_survives_a_level_shift_stops_at_a_broken_day_and_resumes(
    stack: StackConfig,
) -> None:
    lake = stack.lake
    broken = ("--defect", "negative-amounts", "--defect-ds", BROKEN.isoformat())
    generated = run_cli("generate", *GENERATE, *broken, lake=lake)
    assert generated.returncode == 0, generated.stderr
    env = up(stack, PIPELINE_SERVICES, log=lambda _: None)
    client = AirflowClient(stack.airflow_url, "admin", admin_password(stack))
    client.wait_for_dag(DAG_ID)
    client.unpause(DAG_ID)

    # 1. The README's backfill command; it ends, whatever happens to one day.
    _airflow(env, "backfill", "create", "--dag-id", DAG_ID, "--from-date", FIRST.isoformat(),
             "--to-date", LAST.isoformat(), "--max-active-runs", "4")  # fmt: skip
    _wait_for_backfills(client)
    runs = _wait(client, DAYS)
    states = {ds: run["state"] for ds, run in runs.items()}
    good = [day for day in DAYS if day < BROKEN]
    assert states == {
        **{day.isoformat(): "success" for day in good},
        BROKEN.isoformat(): "failed",
        LAST.isoformat(): "failed",
    }, f"task logs under {stack.logs}"
    assert _task_states(client, runs[BROKEN.isoformat()])["ingest_orders"] == "failed"
    after = _task_states(client, runs[LAST.isoformat()])
    assert after["wait_for_previous_ingest"] == "failed" and after["ingest_orders"] in (
        "upstream_failed",
        None,
    )
    waited = _task_log(stack, runs[LAST.isoformat()], "wait_for_previous_ingest")
    assert f"the first failed day is ds={BROKEN.isoformat()}" in waited
    assert "amount >= 0" in _task_log(stack, runs[BROKEN.isoformat()], "ingest_orders")
    assert not (lake / "silver" / "orders" / f"ds={BROKEN.isoformat()}").exists()
    assert (lake / "quarantine" / "orders" / f"ds={BROKEN.isoformat()}").is_dir()

    # The campaign's end is a warning, not a failure: published and recorded.
    shifted = _task_log(stack, runs[SHIFT.isoformat()], "ingest_orders")
    assert f"WARNING silver_orders ds={SHIFT.isoformat()}" in shifted, shifted[-3000:]
    assert (lake / "silver" / "orders" / f"ds={SHIFT.isoformat()}").is_dir()
    for day in good:
        features = _features(lake, day)
        assert len(features) > 0 and features["customer_id"].is_unique
    served = (stack.logs / "steps.log").read_text()
    for command in ("ingest", "features"):
        assert f"churnflow {command} --ds {FIRST.isoformat()}" in served, command

    # One asset event per published day, carrying the day.
    events = client.request(
        "GET", "/assets/events", params={"source_dag_id": DAG_ID, "limit": 100}
    )["asset_events"]
    assert sorted(e["extra"]["ds"] for e in events) == [day.isoformat() for day in good]

    # 2. The broken day's delivery is fixed upstream; the README's resume command.
    fixed = run_cli("generate", *GENERATE, lake=lake)
    assert fixed.returncode == 0, fixed.stderr
    _airflow(env, "tasks", "clear", DAG_ID, "--start-date", BROKEN.isoformat(),
             "--end-date", LAST.isoformat(), "--only-failed", "--yes")  # fmt: skip
    resumed = _wait(client, [BROKEN, LAST])
    assert {ds: r["state"] for ds, r in resumed.items()} == {
        BROKEN.isoformat(): "success",
        LAST.isoformat(): "success",
    }, f"task logs under {stack.logs}"
    last = _features(lake, LAST)

    # 3. Rebuild a range and everything after it: the same features come out.
    _airflow(env, "backfill", "create", "--dag-id", DAG_ID, "--from-date", LAST.isoformat(),
             "--to-date", LAST.isoformat(), "--reprocess-behavior", "completed",
             "--max-active-runs", "4")  # fmt: skip
    _wait_for_backfills(client)
    rebuilt = _wait(client, [LAST])
    assert all(r["state"] == "success" for r in rebuilt.values())
    assert len(list((stack.logs / "airflow").rglob("task_id=build_features/*.log"))) > len(DAYS)
    pd.testing.assert_frame_equal(_features(lake, LAST), last)
