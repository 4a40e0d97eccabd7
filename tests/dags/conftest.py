"""Load the DAG folder the way the dag-processor does, once per runner configuration."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
