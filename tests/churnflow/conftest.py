"""Fixtures shared by the task-package tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def classic_spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One classic local session for a test module, with its own Derby folder.

    Modules that need it say `pytestmark = pytest.mark.usefixtures("classic_spark")`; the session
    is stopped when the module ends, so the next module starts from a clean metastore.
    """
    from churnflow.spark import get_spark

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHURNFLOW_SPARK_DIR", str(tmp_path_factory.mktemp("spark")))
        patch.delenv("SPARK_REMOTE", raising=False)
        get_spark.cache_clear()
        session = get_spark()
        yield session
        session.stop()
        get_spark.cache_clear()


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[str]:
    """A real MLflow tracking server (the local stack's, embedded PostgreSQL backend) on a free
    port, for the whole test session; its URL.

    Its state lives outside pytest's temporary root: the embedded PostgreSQL runs as its own
    user when the tests run as root, and pytest makes its root private (tests/e2e/conftest.py).
    """
    from devstack.services import down, throwaway_config, up

    home = Path(tempfile.mkdtemp(prefix="churnflow-mlflow-"))
    config = throwaway_config(home / "state")
    try:
        up(config, ["mlflow"], log=lambda _line: None)
        yield config.mlflow_url
    finally:
        down(config, log=lambda _line: None)
        if not os.environ.get("CHURNFLOW_KEEP_E2E"):
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def registry(mlflow_server: str) -> str:
    """The session's MLflow server with no registered `churn` model: each module that moves
    aliases starts from an empty registry (first champion vs the baseline); its URL."""
    from churnflow.registry import MODEL_NAME, connect

    client = connect(mlflow_server)
    if client.search_registered_models(filter_string=f"name = '{MODEL_NAME}'"):
        client.delete_registered_model(MODEL_NAME)
    return mlflow_server
