"""The whole daily chain backfilled through the real scheduler, at demo scale: per-day wall
time, each step's median, the critical path and where the rest of the time (and CPU) goes.

Starts a throw-away local stack (its own state folder and ports, MLflow included), generates
demo-scale raw data and loads its history into silver as `make demo` does, backfills
churn_landing_check and churn_features up to the first model's day and trains that model
(warm-up, not measured). Then it backfills the four daily DAGs (churn_landing_check,
churn_features, churn_scoring, churn_drift_monitor) together over `--days` days, the way a
catch-up runs, and reports. Last, the fixed cost a step pays (process start and imports, a
Spark Connect session) measured side by side in fresh processes.

    .venv/bin/python bench/backfill.py [--days 10]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from churnflow.step_server import STEP_ENDED  # noqa: E402
from devstack.api import AirflowClient, count_states  # noqa: E402
from devstack.demo import (  # noqa: E402
    DEMO_DAGS,
    HISTORY_DAYS,
    MONITOR_DAG,
    SCORING_DAG,
    DemoPlan,
    ingest_history,
    paused_at_creation,
    run_backfills,
    train_first_model,
    training_window_days,
)
from devstack.services import (  # noqa: E402
    ALL_SERVICES,
    StackConfig,
    admin_password,
    down,
    running_pid,
    throwaway_config,
    up,
)

DAILY_DAGS = (*DEMO_DAGS, SCORING_DAG, MONITOR_DAG)
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


@dataclass(frozen=True)
class TaskRun:
    dag_id: str
    task_id: str
    day: date
    start: datetime
    end: datetime
    queued: datetime | None

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def task_runs(client: AirflowClient, runs: dict[str, list[dict[str, Any]]]) -> list[TaskRun]:
    """Every task that ran in the measured days' DAG runs (skipped branches left out)."""
    found = []
    for dag_id, dag_runs in runs.items():
        for run in dag_runs:
            day = date.fromisoformat(run["logical_date"][:10])
            for ti in client.task_instances(dag_id, run["dag_run_id"]):
                start, end = _time(ti.get("start_date")), _time(ti.get("end_date"))
                if start and end and ti["state"] != "skipped":
                    queued = _time(ti.get("queued_when"))
                    found.append(TaskRun(dag_id, ti["task_id"], day, start, end, queued))
    return found


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def step_medians(tasks: list[TaskRun]) -> None:
    """Each task's run time (a sensor's `wait_for_*` includes its wait), how long it sat
    queued, and its pace: the median gap between consecutive days' ends."""
    by_task: dict[tuple[str, str], list[TaskRun]] = {}
    for task in tasks:
        by_task.setdefault((task.dag_id, task.task_id), []).append(task)
    print("\neach step (median over the measured days):")
    print(f"  {'DAG.task':58} {'run s':>7} {'queued->run s':>14} {'pace s/day':>11}")
    for key, runs in by_task.items():
        runs.sort(key=lambda t: t.day)
        ends = [(b.end - a.end).total_seconds() for a, b in itertools.pairwise(runs)]
        # A deferred sensor is queued again when its trigger fires, after its start.
        waits = [
            (t.start - t.queued).total_seconds() for t in runs if t.queued and t.queued <= t.start
        ]
        label = ".".join(key)
        print(
            f"  {label:58} {_median([t.seconds for t in runs]):7.2f} "
            f"{_median(waits):14.2f} {_median(ends):11.2f}"
        )


# What a sensor of day N waits for: (DAG, task, day offset), the first that ran.
WAITS_ON: dict[tuple[str, str], list[tuple[str, str, int]]] = {
    ("churn_features", "wait_for_previous_ingest"): [("churn_features", "ingest_orders", -1)],
    ("churn_features", "wait_for_previous_features"): [("churn_features", "build_features", -1)],
    ("churn_scoring", "wait_for_features"): [("churn_features", "build_features", 0)],
    ("churn_drift_monitor", "wait_for_predictions"): [("churn_scoring", "score_customers", 0)],
    ("churn_drift_monitor", "wait_for_previous_decision"): [
        ("churn_drift_monitor", "trigger_retraining", -1),
        ("churn_drift_monitor", "report_decision", -1),
    ],
}


def _gate(task: TaskRun, index: dict[tuple[str, str, date], TaskRun]) -> TaskRun | None:
    """What `task` waited for last: the task of its own run that ended last before it started,
    or for a cross-run sensor the task it watches, whichever ended later."""
    same_run = [
        t
        for (dag_id, _task_id, day), t in index.items()
        if dag_id == task.dag_id and day == task.day and t.end <= task.start
    ]
    candidates = [max(same_run, key=lambda t: t.end)] if same_run else []
    for dag_id, task_id, offset in WAITS_ON.get((task.dag_id, task.task_id), []):
        watched = index.get((dag_id, task_id, task.day + timedelta(days=offset)))
        if watched is not None:
            candidates.append(watched)
            break
    return max(candidates, key=lambda t: t.end) if candidates else None


def critical_path(tasks: list[TaskRun]) -> None:
    """Walk back from the task that ended last to the chain of waits that decided when it
    ended; split that span into the steps' work, sensors noticing what they wait for, and the
    scheduler starting the next task."""
    index = {(t.dag_id, t.task_id, t.day): t for t in tasks}
    current: TaskRun | None = max(tasks, key=lambda t: t.end)
    span_start = span_end = current.end
    spent: dict[str, float] = {}
    path: list[str] = []

    def add(label: str, seconds: float) -> None:
        spent[label] = spent.get(label, 0.0) + max(0.0, seconds)

    while current is not None:
        gate = _gate(current, index)
        watched = gate is not None and (gate.dag_id, gate.day) != (current.dag_id, current.day)
        name = f"{current.dag_id}.{current.task_id}"
        path.append(f"{name}[{current.day:%m-%d}]")
        if current.task_id.startswith("wait_for_"):
            if watched:
                add(
                    "sensors noticing what they wait for (poke interval)",
                    (current.end - gate.end).total_seconds(),
                )
            else:
                add("sensors checking (already satisfied)", current.seconds)
        else:
            add(f"work: {name}", current.seconds)
            if gate is not None:
                add(
                    "scheduler: upstream done -> task running",
                    (current.start - gate.end).total_seconds(),
                )
        span_start = current.start
        current = gate
    total = (span_end - span_start).total_seconds()
    print(f"\ncritical path: {len(path)} tasks, {total:.0f} s from the first task's start")
    print("  " + " <- ".join(path[:8]) + (" <- ..." if len(path) > 8 else ""))
    for label, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        print(f"  {label:58} {seconds:7.1f} s {seconds / total:6.1%}")


def _tree_cpu_seconds(pid: int | None) -> float:
    """CPU seconds of a process and its children, reaped ones included."""
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        total = 0.0
        for proc in (root, *root.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        return total
    except psutil.Error:
        return 0.0


def service_pids(config: StackConfig) -> dict[str, int | None]:
    pids = {service: running_pid(config, service) for service in ALL_SERVICES}
    postmaster = config.pgdata / "postmaster.pid"
    if postmaster.exists():
        pids["postgresql (embedded)"] = int(postmaster.read_text().split()[0])
    return pids


# Per-service CPU seconds, a wall clock, and the machine's idle CPU seconds.
CpuSnapshot = tuple[dict[str, float], float, float]


def cpu_snapshot(pids: dict[str, int | None]) -> CpuSnapshot:
    times = psutil.cpu_times()
    return (
        {name: _tree_cpu_seconds(pid) for name, pid in pids.items()},
        time.perf_counter(),
        times.idle + getattr(times, "iowait", 0.0),
    )


def cpu_report(before: CpuSnapshot, after: CpuSnapshot, days: int) -> None:
    """Where the machine's CPU went while the measured days ran: busy share, and each
    service's CPU seconds per day (steps run as children of the step server)."""
    (per_before, t0, idle0), (per_after, t1, idle1) = before, after
    wall, cores = t1 - t0, psutil.cpu_count() or 1
    busy = 1 - (idle1 - idle0) / (wall * cores)
    print(f"\nwhere the CPU went ({cores} cores busy {busy:.0%} of the measured wall time):")
    total = 0.0
    for name in per_after:
        seconds = per_after[name] - per_before.get(name, 0.0)
        total += seconds
        print(f"  {name:58} {seconds / days:7.2f} CPU s per day")
    print(
        f"  {'all of them':58} {total / days:7.2f} CPU s per day: on {cores} cores no schedule "
        f"runs a day in under {total / days / cores:.1f} s"
    )


def step_cpu_report(log: Path, offset: int, days: int) -> None:
    """Each churnflow command's CPU per day, from the step server's line for every step that
    ended while the measured days ran (the forked step's own CPU, not the Spark server's)."""
    per_command: dict[str, list[float]] = {}
    with log.open("rb") as lines:
        lines.seek(offset)
        for match in STEP_ENDED.finditer(lines.read().decode(errors="replace")):
            per_command.setdefault(match["command"], []).append(float(match["cpu"]))
    print("\nthe steps' own CPU (step server's log; Spark's share is under spark-connect):")
    print(f"  {'churnflow command':58} {'steps':>6} {'median CPU s':>13} {'CPU s per day':>14}")
    for command, cpu in sorted(per_command.items(), key=lambda item: -sum(item[1])):
        print(
            f"  {command:58} {len(cpu):6d} {statistics.median(cpu):13.2f} {sum(cpu) / days:14.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=10, help="measured days of the whole chain")
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="churnflow-bench-") as home:
        config = paused_at_creation(throwaway_config(Path(home)))
        try:
            env = up(config, log=console.print)
            window = training_window_days(env)
            last = datetime.now(UTC).date() - timedelta(days=1)
            first = last - timedelta(days=window + args.days)
            plan = DemoPlan(first, last, HISTORY_DAYS, args.customers, 7, window)
            measured = plan.first_model_as_of + timedelta(days=1)
            # No --drift-from: a retraining triggered mid-measure would share the cores.
            subprocess.run(
                ["churnflow", "generate", "--start", plan.raw_start.isoformat(),
                 "--end", last.isoformat(), "--customers", str(args.customers), "--quiet"],
                env=env, check=True,
            )  # fmt: skip
            ingest_history(plan, env, console)
            client = AirflowClient(config.airflow_url, "admin", admin_password(config))
            console.print(f"warm-up: features and the first model as of {plan.first_model_as_of}")
            run_backfills(
                client, DEMO_DAGS, first, plan.first_model_as_of, console=console, timeout_s=3600
            )
            train_first_model(client, config, plan, console, timeout_s=1800)
            pids = service_pids(config)
            before = cpu_snapshot(pids)
            steps_log = config.logs / "steps.log"
            steps_log_offset = steps_log.stat().st_size
            started = time.perf_counter()
            runs = run_backfills(
                client, DAILY_DAGS, measured, last, console=console, timeout_s=3600
            )
            wall = time.perf_counter() - started
            after = cpu_snapshot(pids)
            states = {dag_id: count_states(dag_runs) for dag_id, dag_runs in runs.items()}
            print(
                f"\nwhole daily chain ({', '.join(DAILY_DAGS)}) backfilled together over "
                f"{args.days} days, {args.customers} customers, {psutil.cpu_count()} cores: "
                f"{wall:.0f} s wall, {wall / args.days:.1f} s per day (target 6 s: "
                f"{wall / args.days / 6:.1f}x); run states {states}"
            )
            tasks = task_runs(client, runs)
            step_medians(tasks)
            critical_path(tasks)
            cpu_report(before, after, args.days)
            step_cpu_report(steps_log, steps_log_offset, args.days)
            fixed_costs({**env, "PATH": env["PATH"]}, args.repeats)
        finally:
            down(config, log=lambda _: None)


if __name__ == "__main__":
    main()
