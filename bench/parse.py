"""DAG parse time, per file and for the whole folder, next to a bare `import airflow`.

Every figure is the median of several fresh processes, as the dag-processor parses each file
in a fresh interpreter. Both runner configurations are measured: the kubernetes runner also
imports the cncf-kubernetes provider. Run: `make bench` or `.venv/bin/python bench/parse.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DAGS = REPO_ROOT / "dags"

PROBE = """
import json, sys, time
t0 = time.perf_counter()
import airflow
t1 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
if sys.argv[1] != "-":
    bag = DagBag(dag_folder=sys.argv[1])
    assert not bag.import_errors, bag.import_errors
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "parse_s": t2 - t1}))
"""

RUNNERS = {
    "local": {"CHURNFLOW_RUNNER": "local"},
    "kubernetes": {
        "CHURNFLOW_RUNNER": "kubernetes",
        "CHURNFLOW_IMAGE_TAG": "0.1.0",
        "CHURNFLOW_LAKE": "s3a://bench/lake",
    },
}


def measure(target: str, env: dict[str, str], repeats: int) -> tuple[float, float]:
    """Median (import seconds, parse seconds) of `repeats` fresh processes."""
    imports, parses = [], []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", PROBE, target],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout
        figures = json.loads(out.strip().splitlines()[-1])
        imports.append(figures["import_s"])
        parses.append(figures["parse_s"])
    return statistics.median(imports), statistics.median(parses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        base_env = {
            **os.environ,
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PYTHONPATH": str(REPO_ROOT / "plugins"),
        }
        bare_import, _ = measure("-", base_env, args.repeats)
        print(
            f"reference: bare `import airflow` {bare_import:6.2f} s "
            f"(median of {args.repeats} fresh processes)\n"
            "parse = importing DagBag and filling it from the target, after `import airflow`\n"
        )
        print(f"{'runner':11} {'target':32} {'parse s':>8} {'parse/import':>13}")
        targets = [*sorted(DAGS.glob("*.py")), DAGS]
        for runner, runner_env in RUNNERS.items():
            for target in targets:
                _, parse_s = measure(str(target), {**base_env, **runner_env}, args.repeats)
                name = "dags/ (whole folder)" if target == DAGS else f"dags/{target.name}"
                print(f"{runner:11} {name:32} {parse_s:8.2f} {parse_s / bare_import:12.2f}x")


if __name__ == "__main__":
    main()
