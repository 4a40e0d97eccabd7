"""Parsing the DAGs must not import the heavy task-side libraries (STYLE.md, DESIGN.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.dags.conftest import KUBERNETES_ENV

FORBIDDEN = ("pyspark", "mlflow", "torch", "great_expectations", "evidently", "dbt", "churnflow")

PROBE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
roots = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"dags": sorted(bag.dag_ids), "modules": roots}))
"""


@pytest.mark.parametrize(
    "env", [{"CHURNFLOW_RUNNER": "local"}, KUBERNETES_ENV], ids=["local", "kubernetes"]
)
def test_parsing_the_dags_imports_no_heavy_library(env: dict[str, str], tmp_path) -> None:
    import os

    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO_ROOT / "dags")],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={
            **os.environ,
            **env,
            "AIRFLOW_HOME": str(tmp_path),
            "PYTHONPATH": str(REPO_ROOT / "plugins"),
        },
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["dags"], "no DAGs parsed"
    imported = [name for name in FORBIDDEN if name in report["modules"]]
    assert imported == [], f"DAG parsing imported {imported}"
