"""Wall time of a backfill of `churn_features` through the real scheduler, at demo scale.

Starts a throw-away local stack (its own state folder and ports), generates demo-scale raw
data, backfills N days and reports the wall time per day, then the fixed cost a step pays
(process start and imports, a Spark Connect session) measured side by side in fresh
processes. Run: `.venv/bin/python bench/backfill.py [--days 30]`.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from devstack.api import TERMINAL_STATES, AirflowClient, count_states  # noqa: E402
from devstack.services import PIPELINE_SERVICES, admin_password, down, throwaway_config, up  # noqa: E402

DAG_ID = "churn_features"
CHAIN_TASK = "build_features"
FIXED_COSTS = {
    "python + churnflow CLI (--version)": "import churnflow.cli",
    "import pyspark.sql (Connect client)": "import pyspark.sql.connect.session",
    "Spark Connect session + first query": (
        "import os; from pyspark.sql import SparkSession; "
        "SparkSession.builder.remote(os.environ['SPARK_REMOTE']).getOrCreate()"
        ".sql('select 1').collect()"
    ),
    "import dbt (dbtRunner)": "from dbt.cli.main import dbtRunner",
    "import great_expectations": "import great_expectations",
    "classic local SparkSession + first query": (
        "import os; os.environ.pop('SPARK_REMOTE'); from churnflow.spark import get_spark; "
        "get_spark().sql('select 1').collect()"
    ),
}


def fixed_costs(env: dict[str, str], repeats: int) -> None:
    print(f"\nfixed cost per step (median of {repeats} fresh processes):")
    for label, code in FIXED_COSTS.items():
        # From a file, not `-c`: pyspark's connect module exits early when __main__ has none.
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as probe:
            probe.write(f"{code}\nprint('probe-done')\n")
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            out = subprocess.run(
                [sys.executable, probe.name], env=env, check=True, capture_output=True, text=True
            ).stdout
            times.append(time.perf_counter() - started)
            if "probe-done" not in out:
                raise RuntimeError(f"probe {label!r} exited before its end")
        Path(probe.name).unlink()
        print(f"  {label:44} {statistics.median(times):6.2f} s")
    forked = [served_version(env) for _ in range(repeats)]
    label = "step forked from the step server (--version)"
    print(f"  {label:44} {statistics.median(forked):6.2f} s")


def served_version(env: dict[str, str]) -> float:
    """Request to exit of the smallest step the step server can run: what a task pays to start."""
    from churnflow.step_server import start_step

    started = time.perf_counter()
    with Path(os.devnull).open("rb+") as devnull:
        fd = devnull.fileno()
        step = start_step(env["CHURNFLOW_STEP_SERVER"], ["--version"], env, REPO_ROOT, (fd,) * 3)
        if step.wait() != 0:
            raise RuntimeError("churnflow --version failed on the step server")
    return time.perf_counter() - started


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def task_durations(client: AirflowClient, runs: list[dict[str, Any]]) -> None:
    """Where a day's time goes: each task's run time, and the waits around the daily chain.

    `build_features` of day N waits for day N-1's (`wait_for_previous_features`), so the
    backfill's pace is its run time plus the gap between one day's end and the next day's
    start: the scheduler noticing, queueing, and the task process starting.
    """
    seconds: dict[str, list[float]] = {}
    chain: list[tuple[datetime, datetime, datetime | None]] = []
    for run in sorted(runs, key=lambda r: r["logical_date"]):
        for ti in client.task_instances(DAG_ID, run["dag_run_id"]):
            if ti.get("duration") is not None:
                seconds.setdefault(ti["task_id"], []).append(float(ti["duration"]))
            start, end = _time(ti.get("start_date")), _time(ti.get("end_date"))
            if ti["task_id"] == CHAIN_TASK and start and end:
                chain.append((start, end, _time(ti.get("queued_when"))))
    print("\ntask run time (median over days):")
    for task_id, values in seconds.items():
        print(f"  {task_id:44} {statistics.median(values):6.2f} s")
    print(f"  {'sum of medians per day':44} {sum(map(statistics.median, seconds.values())):6.2f} s")
    gaps = [(nxt[0] - prev[1]).total_seconds() for prev, nxt in itertools.pairwise(chain)]
    queued = [(start - q).total_seconds() for start, _end, q in chain if q is not None]
    if gaps:
        label = f"{CHAIN_TASK}: day N ends -> day N+1 starts"
        print(f"  {label:44} {statistics.median(gaps):6.2f} s")
    if queued:
        label = f"{CHAIN_TASK}: queued -> running"
        print(f"  {label:44} {statistics.median(queued):6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--history-days", type=int, default=180)
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--max-active-runs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="churnflow-bench-") as home:
        config = throwaway_config(Path(home))
        try:
            env = up(config, PIPELINE_SERVICES)
            last = date.today() - timedelta(days=1)
            first = last - timedelta(days=args.days - 1)
            raw_start = first - timedelta(days=args.history_days)
            subprocess.run(
                ["churnflow", "generate", "--start", raw_start.isoformat(),
                 "--end", last.isoformat(), "--customers", str(args.customers), "--quiet"],
                env=env, check=True,
            )  # fmt: skip
            client = AirflowClient(config.airflow_url, "admin", admin_password(config))
            client.wait_for_dag(DAG_ID)
            client.unpause(DAG_ID)
            started = time.perf_counter()
            client.create_backfill(
                DAG_ID, first.isoformat(), last.isoformat(), max_active_runs=args.max_active_runs
            )
            while True:
                runs = client.dag_runs(DAG_ID, first.isoformat(), last.isoformat())
                done = [r for r in runs if r["state"] in TERMINAL_STATES]
                if len(done) >= args.days:
                    break
                time.sleep(5)
            wall = time.perf_counter() - started
            print(
                f"backfill of {DAG_ID}: {args.days} days, {args.customers} customers, "
                f"max_active_runs {args.max_active_runs}: {wall:.0f} s wall, "
                f"{wall / args.days:.1f} s per day; states {count_states(runs)}"
            )
            task_durations(client, runs)
            fixed_costs({**env, "PATH": env["PATH"]}, args.repeats)
        finally:
            down(config, log=lambda _: None)


if __name__ == "__main__":
    main()
