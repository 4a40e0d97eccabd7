"""Load the DAG folder the way the dag-processor does, once per runner configuration."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.conftest import REPO_ROOT

DAGS_FOLDER = REPO_ROOT / "dags"

KUBERNETES_ENV = {
    "CHURNFLOW_RUNNER": "kubernetes",
    "CHURNFLOW_IMAGE_REGISTRY": "registry.example.com/ml",
    "CHURNFLOW_IMAGE_TAG": "0.1.0",
    "CHURNFLOW_LAKE": "s3a://churn-lake/prod",
    "MLFLOW_TRACKING_URI": "http://mlflow.churnflow.svc:5000",
}


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def load_dagbag(env: dict[str, str] | None = None):  # -> DagBag
    from airflow.dag_processing.dagbag import DagBag

    with environment(env or {"CHURNFLOW_RUNNER": "local"}):
        return DagBag(dag_folder=str(DAGS_FOLDER))


def dag_files() -> list[Path]:
    return sorted(p for p in DAGS_FOLDER.glob("*.py") if not p.name.startswith("_"))


def worker_context(
    task: Any,
    *,
    run_type: str,
    run_after: datetime,
    logical_date: datetime | None = None,
    data_interval: tuple[datetime, datetime] | None = None,
    conf: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The template context an Airflow worker builds for `task` in a run of this shape.

    Airflow's own code builds it (`RuntimeTaskInstance.get_template_context` with the run the
    API server sends), so keys a run lacks are missing here too (no `ds` without a logical
    date) and `conf` is merged into the params and validated as on a worker.
    """
    from airflow.sdk.api.datamodels._generated import (
        DagRun,
        DagRunState,
        DagRunType,
        TIRunContext,
    )
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    start, end = data_interval or (None, None)
    dag_run = DagRun(
        dag_id=task.dag_id,
        run_id=f"{run_type}__{(logical_date or run_after).isoformat()}",
        logical_date=logical_date,
        data_interval_start=start,
        data_interval_end=end,
        run_after=run_after,
        start_date=run_after,
        end_date=None,
        run_type=DagRunType(run_type),
        state=DagRunState.RUNNING,
        conf=conf,
        consumed_asset_events=[],
        partition_key=None,
    )
    ti = RuntimeTaskInstance.model_construct(
        id=uuid.uuid4(),
        task_id=task.task_id,
        dag_id=task.dag_id,
        run_id=dag_run.run_id,
        try_number=1,
        dag_version_id=uuid.uuid4(),
        map_index=-1,
        task=task,
        max_tries=task.retries,
        start_date=run_after,
    )
    ti._ti_context_from_server = TIRunContext(dag_run=dag_run, max_tries=task.retries)
    return dict(ti.get_template_context())
