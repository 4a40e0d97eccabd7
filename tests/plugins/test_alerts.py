from __future__ import annotations

from types import SimpleNamespace

from churnflow_airflow.alerts import failure_message


def test_failure_message_names_dag_task_day_and_reason() -> None:
    ti = SimpleNamespace(dag_id="churn_landing_check", task_id="check_landing", try_number=2)
    message = failure_message(
        {"ti": ti, "ds": "2026-03-01", "run_id": "backfill__x", "exception": ValueError("no rows")}
    )
    assert "churn_landing_check.check_landing" in message
    assert "ds=2026-03-01" in message and "try 2" in message and "no rows" in message
