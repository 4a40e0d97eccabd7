"""Shared fixtures: a throw-away lake per test and the real `churnflow` console script."""

from __future__ import annotations

import os
import tempfile

# Airflow reads its home at import: point it at a throw-away folder before anything imports it.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="churnflow-test-airflow-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"

import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from churnflow.settings import get_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
CHURNFLOW = str(Path(sys.executable).parent / "churnflow")


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "lake"
    monkeypatch.setenv("CHURNFLOW_LAKE", str(root))
    get_settings.cache_clear()
    yield root
    get_settings.cache_clear()


def run_cli(
    *args: str, lake: Path | str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed console script as the runners do, in a fresh process (with the
    system's PATH and JAVA_HOME, which a local Spark needs, `env`, and no other setting)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {"PATH": path, "CHURNFLOW_LAKE": str(lake), **(env or {})}
    if "JAVA_HOME" in os.environ:
        env["JAVA_HOME"] = os.environ["JAVA_HOME"]
    return subprocess.run(
        [CHURNFLOW, *args], capture_output=True, text=True, env=env, check=False, timeout=300
    )


@pytest.fixture(scope="session", autouse=True)
def stop_spark_at_the_end() -> Iterator[None]:
    """Stop a local Spark session the tests created, before the interpreter tears down logging."""
    yield
    from churnflow.spark import get_spark

    if get_spark.cache_info().currsize:
        get_spark().stop()
