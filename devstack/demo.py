"""`make demo`: generate raw data, backfill the pipeline DAGs through the real scheduler, report.

The range ends yesterday (UTC) so the scheduler's own latest daily run finds its data too;
raw history starts earlier than the backfilled range so that look-back windows have data.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from devstack.api import TERMINAL_STATES, AirflowClient, count_states
from devstack.services import StackConfig, admin_password, up

# The daily pipeline DAGs the demo backfills, and over how many days: churn_features audits
# every day before publishing it (dbt tests, GX) and takes about 25 s a day on 2 cores, so 30
# days keep `make demo` from a fresh clone within about 20 minutes (bench/backfill.py).
DEMO_DAGS = ("churn_landing_check", "churn_features")
DEMO_DAYS = 30
# The model half: the scheduler's own weekly run of churn_training (as of the last Sunday,
# inside the range) starts once the backfill has published that day's features.
TRAINING_DAG = "churn_training"
# Then batch scoring, backfilled from the first champion's as-of day to the range's end (it
# starts paused: with no champion each run would fail).
SCORING_DAG = "churn_scoring"


@dataclass(frozen=True)
class DemoPlan:
    first_day: date
    last_day: date
    history_days: int
    customers: int
    seed: int

    @property
    def days(self) -> int:
        return (self.last_day - self.first_day).days + 1

    @property
    def raw_start(self) -> date:
        return self.first_day - timedelta(days=self.history_days)

    @classmethod
    def ending_yesterday(cls, days: int, history_days: int, customers: int, seed: int) -> DemoPlan:
        last = datetime.now(UTC).date() - timedelta(days=1)
        return cls(last - timedelta(days=days - 1), last, history_days, customers, seed)


def generate_raw(plan: DemoPlan, env: Mapping[str, str]) -> None:
    argv = [
        "churnflow", "generate",
        "--start", plan.raw_start.isoformat(), "--end", plan.last_day.isoformat(),
        "--customers", str(plan.customers), "--seed", str(plan.seed),
    ]  # fmt: skip
    subprocess.run(argv, env={**env}, check=True)


def run_backfills(
    client: AirflowClient,
    dag_ids: Sequence[str],
    first: date,
    last: date,
    *,
    console: Console,
    timeout_s: float,
) -> dict[str, list[dict]]:
    """Backfill each DAG over first..last and wait until every day's run has finished."""
    start, end = first.isoformat(), last.isoformat()
    for dag_id in dag_ids:
        client.wait_for_dag(dag_id)
        client.unpause(dag_id)
        client.create_backfill(dag_id, start, end)
        console.print(f"backfill of [bold]{dag_id}[/] created for {start}..{end}")
    total = ((last - first).days + 1) * len(dag_ids)
    runs: dict[str, list[dict]] = {}
    deadline = time.monotonic() + timeout_s
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task(f"{', '.join(dag_ids)}: runs finished", total=total)
        while True:
            runs = {dag_id: client.dag_runs(dag_id, start, end) for dag_id in dag_ids}
            done = sum(r["state"] in TERMINAL_STATES for rs in runs.values() for r in rs)
            progress.update(bar, completed=done)
            if done >= total or time.monotonic() > deadline:
                return runs
            time.sleep(5)


def run_training(
    client: AirflowClient, plan: DemoPlan, console: Console, timeout_s: float
) -> list[dict]:
    """Wait for the runs of churn_training; trigger one as of the range's last day when none
    succeeded yet (the scheduled run of this week ran in an earlier demo on this stack)."""
    client.wait_for_dag(TRAINING_DAG)
    client.unpause(TRAINING_DAG)
    deadline = time.monotonic() + timeout_s
    triggered = False
    with console.status("training the churn model (churn_training)") as status:
        while True:
            runs = client.all_runs(TRAINING_DAG)
            pending = [r for r in runs if r["state"] not in TERMINAL_STATES]
            if not pending and not triggered and not any(r["state"] == "success" for r in runs):
                conf = {"as_of": plan.last_day.isoformat(), "reason": "demo"}
                client.trigger(TRAINING_DAG, conf)
                console.print(f"triggered {TRAINING_DAG} as of {plan.last_day}")
                triggered = True
                continue
            if not pending or time.monotonic() > deadline:
                return runs
            status.update(f"training the churn model ({TRAINING_DAG}: {len(pending)} run(s) on)")
            time.sleep(5)


def first_scored_day(config: StackConfig, plan: DemoPlan) -> date | None:
    """The day scoring starts: the first champion's as-of day (no model served the days
    before it), within the demo's range; None without a champion."""
    from churnflow.errors import ChurnflowError
    from churnflow.registry import CHAMPION, TAG_AS_OF, connect, version_by_alias

    try:
        champion = version_by_alias(connect(config.mlflow_url), CHAMPION)
    except ChurnflowError:
        return None
    if champion is None:
        return None
    as_of = date.fromisoformat(champion.tags.get(TAG_AS_OF, plan.last_day.isoformat()))
    return min(max(as_of, plan.first_day), plan.last_day)


def prediction_lines(config: StackConfig, first: date, last: date) -> list[str]:
    """Predicted days, rows and the model version per run of consecutive days."""
    from churnflow.lake import Lake
    from churnflow.scoring import read_ledger

    lake = Lake(str(config.lake))
    spans: list[list] = []  # [first day, last day, version, days, rows]
    day = first
    while day <= last:
        entry = read_ledger(lake, day)
        version = entry.model_version if entry else None
        rows = entry.rows if entry else 0
        if spans and spans[-1][2] == version and spans[-1][1] == day - timedelta(days=1):
            spans[-1][1], spans[-1][3], spans[-1][4] = day, spans[-1][3] + 1, spans[-1][4] + rows
        else:
            spans.append([day, day, version, 1, rows])
        day += timedelta(days=1)
    lines = []
    for start, end, version, days, rows in spans:
        model = f"churn v{version}" if version is not None else "[red]not scored[/]"
        lines.append(f"  {start}..{end}: {model}, {days} day(s), {rows} predictions")
    return lines


def champion_lines(config: StackConfig) -> tuple[bool, list[str]]:
    """The champion's version, its holdout PR AUC beside the recency baseline's, its link."""
    from churnflow.errors import ChurnflowError
    from churnflow.promote import TAG_PR_AUC, TAG_REASONS
    from churnflow.registry import CHALLENGER, CHAMPION, MODEL_NAME, connect, version_by_alias

    try:
        client = connect(config.mlflow_url)
    except ChurnflowError as err:
        return False, [f"[red]no model registry[/]: {err}"]
    champion = version_by_alias(client, CHAMPION)
    if champion is None:
        challenger = version_by_alias(client, CHALLENGER)
        why = challenger.tags.get(TAG_REASONS, "") if challenger else "no challenger trained"
        return False, [f"[red]no @{CHAMPION} in the registry[/]: {why}"]
    tags = champion.tags
    link = f"{config.mlflow_url}/#/models/{MODEL_NAME}/versions/{champion.version}"
    return True, [
        f"  {MODEL_NAME}@{CHAMPION}: version {champion.version} "
        f"({tags.get('churnflow.model_type', '?')}, trained as of {tags.get('churnflow.as_of')})",
        f"  holdout PR AUC: {tags.get(TAG_PR_AUC, '?')}",
        f"  MLflow:     {link}",
    ]


def print_summary(
    console: Console,
    config: StackConfig,
    plan: DemoPlan,
    runs: Mapping[str, list[dict]],
    client: AirflowClient,
    *,
    training: list[dict],
    scoring: tuple[date, date, list[dict]] | None,
) -> bool:
    table = Table(title=f"DAG runs {plan.first_day} .. {plan.last_day} ({plan.days} days)")
    for column in ("DAG", "runs", "success", "failed", "other"):
        table.add_column(column)
    all_ok = True
    failures: list[str] = []
    # The daily DAGs must succeed on every day; churn_training at least once, never failing.
    expected = {dag_id: plan.days for dag_id in runs}
    everything = {**runs, TRAINING_DAG: training}
    if scoring is not None:
        first, last, scoring_runs = scoring
        expected[SCORING_DAG] = (last - first).days + 1
        everything[SCORING_DAG] = scoring_runs
    for dag_id, dag_runs in everything.items():
        states = count_states(dag_runs)
        other = sum(n for s, n in states.items() if s not in TERMINAL_STATES)
        success = states.get("success", 0)
        if dag_id in expected:
            all_ok &= success == expected[dag_id]
        else:
            all_ok &= success >= 1 and not states.get("failed")
        table.add_row(
            dag_id,
            str(len(dag_runs)),
            f"[green]{success}[/]",
            f"[red]{states.get('failed', 0)}[/]",
            str(other),
        )
        for run in dag_runs:
            if run["state"] == "failed":
                failed = [
                    ti["task_id"]
                    for ti in client.task_instances(dag_id, run["dag_run_id"])
                    if ti["state"] == "failed"
                ]
                which = (run.get("logical_date") or "")[:10] or run["dag_run_id"]
                failures.append(f"{dag_id} {which}: {', '.join(failed)}")
    console.print(table)
    for line in failures[:20]:
        console.print(f"[red]failed[/] {line}")
    console.print(
        f"\n[bold]Outputs[/]\n  lake:       {config.lake}\n"
        f"  features:   {config.lake / 'features' / 'customer_features'}\n"
        f"  Data Docs:  {config.lake / 'reports' / 'gx'}/<suite>/index.html\n"
        f"  task logs:  {config.logs / 'airflow'}\n  service logs: {config.logs}\n"
        f"\n[bold]Web UIs[/]\n  Airflow:    {config.airflow_url}  (user admin, password "
        f"{admin_password(config)})\n  MLflow:     {config.mlflow_url}\n"
        "\nShell with this stack's Airflow CLI: source .churnflow/env.sh   Stop: make down"
    )
    has_champion, lines = champion_lines(config)
    all_ok &= has_champion
    console.print("\n[bold]Model[/]")
    for line in lines:
        console.print(line)
    all_ok &= scoring is not None
    if scoring is not None:
        console.print(f"\n[bold]Predictions[/] ({config.lake / 'predictions' / 'churn'}/ds=…)")
        for line in prediction_lines(config, scoring[0], scoring[1]):
            console.print(line)
    verdict = (
        "[green]every DAG run succeeded[/]" if all_ok else "[red]some DAG runs did not succeed[/]"
    )
    console.print(verdict)
    return all_ok


def run_demo(
    days: int = DEMO_DAYS, history_days: int = 180, customers: int = 3000, seed: int = 7,
    timeout_s: float = 3600,
) -> int:  # fmt: skip
    console = Console()
    config = StackConfig.from_env()
    plan = DemoPlan.ending_yesterday(days, history_days, customers, seed)
    env = up(config, log=console.print)
    console.print(
        f"generating raw data {plan.raw_start} .. {plan.last_day} ({customers} customers)"
    )
    generate_raw(plan, env)
    client = AirflowClient(config.airflow_url, "admin", admin_password(config))
    started = time.monotonic()

    def left() -> float:
        return max(60.0, timeout_s - (time.monotonic() - started))

    runs = run_backfills(
        client, DEMO_DAGS, plan.first_day, plan.last_day, console=console, timeout_s=timeout_s
    )
    training = run_training(client, plan, console, left())
    scoring = None
    first_scored = first_scored_day(config, plan)
    if first_scored is not None:
        scored = run_backfills(
            client, (SCORING_DAG,), first_scored, plan.last_day, console=console, timeout_s=left()
        )
        scoring = (first_scored, plan.last_day, scored[SCORING_DAG])
    ok = print_summary(console, config, plan, runs, client, training=training, scoring=scoring)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run_demo())
