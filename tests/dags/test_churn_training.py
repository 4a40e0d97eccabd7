"""churn_training: when it runs, which as-of day each kind of run trains on, and the argv its
steps get, rendered in the context an Airflow 3.3 worker builds for the run."""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import ParamValidationError
from airflow.serialization.encoders import coerce_to_core_timetable
from airflow.timetables.base import DataInterval, TimeRestriction

from churnflow.lake import CUSTOMER_FEATURES
from churnflow_airflow.assets import CHURN_MODEL
from churnflow_airflow.local_runner import LocalStepOperator
from churnflow_airflow.policy import START_DATE
from tests.dags.conftest import load_dagbag, worker_context

DAG_ID = "churn_training"
DAG_: DAG = load_dagbag().dags[DAG_ID]
TIMETABLE = coerce_to_core_timetable(DAG_.timetable)  # what the scheduler and API server use
STEPS = ("build_training_set", "train_models", "promote_challenger")


def rendered(task_id: str, **run: Any) -> Any:
    """A copy of the task with its templates rendered for a run of this shape."""
    task = fresh(task_id)
    task.render_template_fields(worker_context(task, **run))
    return task


def fresh(task_id: str) -> Any:
    """A copy of the task and its params, as a worker parses its own: merging a run's conf
    into the params sets the values of the Param objects, which copies of a task share."""
    task = copy.deepcopy(DAG_).get_task(task_id)
    task.params = copy.deepcopy(task.params)
    return task


def argvs(**run: Any) -> dict[str, list[str]]:
    return {task_id: rendered(task_id, **run).argv for task_id in STEPS}


def expected(as_of: str, reason: str, model_type: str = "auto") -> dict[str, list[str]]:
    return {
        "build_training_set": ["churnflow", "training-set", "--as-of", as_of],
        "train_models": [
            "churnflow",
            "train",
            "--as-of",
            as_of,
            "--model-type",
            model_type,
            f"--reason={reason}",
        ],
        "promote_challenger": ["churnflow", "promote", "--as-of", as_of],
    }


def scheduled_run_after(week_start: datetime) -> dict[str, Any]:
    """The run the scheduler creates for the week that starts on `week_start`."""
    info = TIMETABLE.next_dagrun_info(
        last_automated_data_interval=DataInterval(
            week_start - pendulum.duration(weeks=1), week_start
        ),
        restriction=TimeRestriction(earliest=START_DATE, latest=None, catchup=True),
    )
    assert info is not None
    return {
        "run_type": "scheduled",
        "run_after": info.run_after,
        "logical_date": info.logical_date,
        "data_interval": (info.data_interval.start, info.data_interval.end),
    }


def manual_run(
    run_after: datetime, logical_date: datetime | None = None, conf: dict | None = None
) -> dict[str, Any]:
    """A run triggered from the UI or the API (with or without a logical date) or by a DAG."""
    interval = None
    if logical_date is not None:  # what the API server infers for it
        inferred = TIMETABLE.infer_manual_data_interval(run_after=logical_date)
        interval = (inferred.start, inferred.end)
    return {
        "run_type": "manual",
        "run_after": run_after,
        "logical_date": logical_date,
        "data_interval": interval,
        "conf": conf,
    }


def test_training_runs_weekly_after_the_week_one_run_at_a_time_and_starts_paused() -> None:
    assert TIMETABLE.summary == "0 0 * * 1"
    assert DAG_.catchup is False
    assert DAG_.max_active_runs == 1
    assert DAG_.is_paused_upon_creation is True
    assert DAG_.params.dump() == {"as_of": None, "model_type": "auto", "reason": None}


def test_steps_wait_for_silver_then_train_then_gate_then_announce() -> None:
    order = [task.task_id for task in DAG_.topological_sort()]
    assert order == [
        "wait_for_features",
        *STEPS,
        "report_promotion",
        "publish_model_decision",
    ]
    for upstream, downstream in itertools.pairwise(order):
        assert DAG_.get_task(downstream).upstream_task_ids == {upstream}


def test_a_scheduled_run_trains_as_of_the_sunday_that_ends_its_week() -> None:
    run = scheduled_run_after(pendulum.datetime(2026, 3, 2, tz="UTC"))  # a Monday
    assert run["run_after"] == pendulum.datetime(2026, 3, 9, tz="UTC")
    assert argvs(**run) == expected("2026-03-08", reason="schedule")


def test_a_manual_run_without_a_logical_date_trains_as_of_the_day_before_it() -> None:
    run = manual_run(run_after=pendulum.datetime(2026, 3, 4, 14, 30, tz="UTC"))
    assert "ds" not in worker_context(DAG_.get_task("train_models"), **run)
    assert argvs(**run) == expected("2026-03-03", reason="manual")


def test_a_manual_run_with_a_logical_date_trains_as_of_the_last_week_it_closes() -> None:
    run = manual_run(
        run_after=pendulum.datetime(2026, 3, 20, 9, tz="UTC"),
        logical_date=pendulum.datetime(2026, 3, 4, tz="UTC"),  # a Wednesday
    )
    assert argvs(**run) == expected("2026-03-01", reason="manual")


def test_params_of_a_manual_run_reach_the_steps() -> None:
    run = manual_run(
        run_after=pendulum.datetime(2026, 3, 4, 14, tz="UTC"),
        conf={"as_of": "2026-02-15", "model_type": "lightning", "reason": "new features"},
    )
    assert argvs(**run) == expected("2026-02-15", reason="new features", model_type="lightning")


def test_the_drift_dags_conf_sets_as_of_and_reason() -> None:
    conf = {"as_of": "2026-03-03", "reason": "drift: 4 of 12 features drifted since 2026-02-28"}
    run = {**manual_run(run_after=pendulum.datetime(2026, 3, 4, 1, tz="UTC"), conf=conf)}
    run["run_type"] = "operator_triggered"  # TriggerDagRunOperator's run type
    assert argvs(**run) == expected("2026-03-03", reason=conf["reason"])


@pytest.mark.parametrize(
    "conf",
    [{"as_of": "last sunday"}, {"as_of": "2026-02-30"}, {"model_type": "xgboost"}],
    ids=["as_of-not-a-date", "as_of-no-such-day", "unknown-model-type"],
)
def test_conf_that_breaks_the_params_is_refused(conf: dict[str, str]) -> None:
    run = manual_run(run_after=pendulum.datetime(2026, 3, 4, tz="UTC"), conf=conf)
    with pytest.raises(ParamValidationError):
        argvs(**run)


# The argv contract of `churnflow train`, as argparse reads it.
TRAIN = argparse.ArgumentParser(prog="churnflow train", exit_on_error=False)
TRAIN.add_argument("--as-of", required=True)
TRAIN.add_argument("--model-type", choices=["auto", "sklearn", "lightning"], default="auto")
TRAIN.add_argument("--reason")

AWKWARD_REASON = "-h --model-type sklearn; $(touch /tmp/x) 'quoted' \"dq\" {{ ds }} ünï"


def test_a_reason_is_one_argument_whatever_it_holds() -> None:
    run = manual_run(
        run_after=pendulum.datetime(2026, 3, 4, tz="UTC"), conf={"reason": AWKWARD_REASON}
    )
    argv = rendered("train_models", **run).argv
    parsed = TRAIN.parse_args(argv[2:])
    assert (parsed.as_of, parsed.model_type, parsed.reason) == (
        "2026-03-03",
        "auto",
        AWKWARD_REASON,
    )


def test_the_local_runner_hands_the_rendered_argv_over_without_a_shell(tmp_path: Path) -> None:
    run = manual_run(
        run_after=pendulum.datetime(2026, 3, 4, tz="UTC"), conf={"reason": AWKWARD_REASON}
    )
    argv = rendered("train_models", **run).argv
    seen = tmp_path / "argv.json"
    script = f"import json, sys; open({str(seen)!r}, 'w').write(json.dumps(sys.argv[1:]))"
    LocalStepOperator(task_id="probe_argv", argv=[sys.executable, "-c", script, *argv[1:]]).execute(
        {}
    )
    assert json.loads(seen.read_text()) == argv[1:]


def test_the_sensor_waits_for_the_customer_features_partition_of_as_of() -> None:
    sensor = rendered("wait_for_features", **manual_run(pendulum.datetime(2026, 3, 4, tz="UTC")))
    assert sensor.dataset == CUSTOMER_FEATURES  # the task side's lake path
    assert sensor.timeout == 12 * 3600
    assert sensor.ds == "2026-03-03"
    assert str(sensor.partition).endswith("features/customer_features/ds=2026-03-03")


def test_the_model_decision_event_carries_as_of() -> None:
    run = scheduled_run_after(pendulum.datetime(2026, 3, 2, tz="UTC"))
    task = fresh("publish_model_decision")
    context = worker_context(task, **run)
    task.render_template_fields(context)
    task.execute(context)
    assert context["outlet_events"][CHURN_MODEL].extra == {"as_of": "2026-03-08"}
