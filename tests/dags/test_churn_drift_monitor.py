"""churn_drift_monitor: judged per day, decided in order, retraining only behind the decision."""

from __future__ import annotations

from airflow.sdk import DAG

from tests.dags.conftest import load_dagbag

DAG_: DAG = load_dagbag().dags["churn_drift_monitor"]


def test_days_are_decided_in_order_and_only_a_decision_triggers() -> None:
    assert DAG_.is_paused_upon_creation is True
    task = DAG_.get_task
    assert task("judge_drift").upstream_task_ids == {"wait_for_predictions"}
    assert task("wait_for_previous_decision").step == "trigger_retraining"
    assert task("check_training_active").upstream_task_ids == {"wait_for_previous_decision"}
    assert task("decide_retraining").argv[-1] == "false"
    assert task("decide_while_training").argv[-1] == "true"
    assert task("report_decision").upstream_task_ids == {
        "decide_retraining",
        "decide_while_training",
    }
    trigger = task("trigger_retraining")
    assert trigger.upstream_task_ids == {"report_decision"}
    assert trigger.trigger_dag_id == "churn_training"
    assert trigger.conf == {"as_of": "{{ ds }}", "reason": "drift: ds={{ ds }}"}
    assert trigger.skip_when_already_exists, "a rerun of a triggering day triggers nothing more"
