"""`make demo`: generate raw data, backfill the pipeline DAGs through the real scheduler, report.

The story, in days of the backfilled range (it ends yesterday, UTC, so the scheduler's own
latest daily run finds its data too):

1. Raw orders from 91 days before the range are loaded into silver first (`churnflow ingest
   --through`): every feature window up to 90 days then holds full history, as it would in a
   deployment that loaded its history before its first scheduled day. Without it the lake is
   young, each day's 30- and 90-day windows hold more history than the training set's did,
   and drift monitoring sees most feature columns drift every day.
2. churn_landing_check and churn_features over the range.
3. The first model, as of the first day the local training window fits in the range.
4. From a few days later the business shifts (`generate --drift-from`: a new market opens,
   prices rise). churn_scoring and churn_drift_monitor are backfilled from the first model's
   day to the range's end; the monitor triggers one retraining; when the gate promotes its
   challenger, the days after the trigger are rescored with it and judged again.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

from devstack.api import TERMINAL_STATES, AirflowClient, count_states
from devstack.services import LOCAL_TRAINING_WINDOW, StackConfig, admin_password, up

# The daily pipeline DAGs the demo backfills, and over how many days: churn_features audits
# every day before publishing it (dbt tests, GX) and takes about 12 s a day on 2 cores, so 30
# days keep `make demo` from a fresh clone at about 11.5 minutes (README, Performance).
DEMO_DAGS = ("churn_landing_check", "churn_features")
DEMO_DAYS = 30
# The model half: churn_training as of the first day the training window fits in the range
# (train_first_model), and later the run the drift monitor triggers.
TRAINING_DAG = "churn_training"
# Then batch scoring, backfilled from the first champion's as-of day to the range's end (it
# starts paused: with no champion each run would fail), and drift monitoring beside it.
SCORING_DAG = "churn_scoring"
MONITOR_DAG = "churn_drift_monitor"
# Silver history before the range: the longest feature window that defines who is active and
# what most columns count (90 days), plus the day itself.
HISTORY_DAYS = 91
# The drift starts this many days after the first model's as-of day.
DRIFT_AFTER_DAYS = 3


def training_window_days(env: Mapping[str, str]) -> int:
    """Days from a training set's oldest snapshot to its as-of day, under the stack's settings."""

    def setting(name: str) -> int:
        return int(env.get(name, LOCAL_TRAINING_WINDOW[name]))

    horizon = setting("CHURNFLOW_LABEL_HORIZON_DAYS")
    snapshots = setting("CHURNFLOW_TRAINING_SNAPSHOTS")
    every = setting("CHURNFLOW_TRAINING_SNAPSHOT_EVERY_DAYS")
    return horizon + (snapshots - 1) * every


@dataclass(frozen=True)
class DemoPlan:
    first_day: date
    last_day: date
    history_days: int
    customers: int
    seed: int
    window_days: int  # training_window_days of the stack
    drift_after_days: int = DRIFT_AFTER_DAYS

    @property
    def days(self) -> int:
        return (self.last_day - self.first_day).days + 1

    @property
    def raw_start(self) -> date:
        return self.first_day - timedelta(days=self.history_days)

    @property
    def first_model_as_of(self) -> date:
        """The first day whose training window (snapshots and label horizon) fits the range."""
        return min(self.first_day + timedelta(days=self.window_days), self.last_day)

    @property
    def drift_from(self) -> date:
        return self.first_model_as_of + timedelta(days=self.drift_after_days)

    @classmethod
    def ending_yesterday(
        cls, days: int, history_days: int, customers: int, seed: int, window_days: int
    ) -> DemoPlan:
        last = datetime.now(UTC).date() - timedelta(days=1)
        first = last - timedelta(days=days - 1)
        return cls(first, last, history_days, customers, seed, window_days)


def paused_at_creation(config: StackConfig) -> StackConfig:
    """The stack, creating its DAGs paused when it starts them.

    Unpaused, the scheduler runs yesterday at once: before the history is loaded, ahead of the
    backfill of the days it chains on, and the backfill then skips that day's finished run.
    `run_backfills` unpauses each DAG once its backfill exists.
    """
    paused = {"AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True"}
    return replace(config, extra_env={**config.extra_env, **paused})


def generate_raw(plan: DemoPlan, env: Mapping[str, str]) -> None:
    argv = [
        "churnflow", "generate",
        "--start", plan.raw_start.isoformat(), "--end", plan.last_day.isoformat(),
        "--customers", str(plan.customers), "--seed", str(plan.seed),
        "--drift-from", plan.drift_from.isoformat(),
    ]  # fmt: skip
    subprocess.run(argv, env={**env}, check=True)


def ingest_history(plan: DemoPlan, env: Mapping[str, str], console: Console) -> None:
    """Silver orders of the days before the range, through the ingest step itself (each day
    checked and published as its own run would), on the stack's Spark server."""
    from churnflow.lake import SILVER_ORDERS, Lake

    published = Lake(env["CHURNFLOW_LAKE"]).published(SILVER_ORDERS)
    days = [plan.raw_start + timedelta(days=n) for n in range(plan.history_days)]
    missing = [day for day in days if day not in published]
    if not missing:
        return
    first, last = missing[0], days[-1]
    console.print(f"loading order history {first} .. {last} into silver (churnflow ingest)")
    argv = ["churnflow", "ingest", "--ds", first.isoformat(), "--through", last.isoformat()]
    subprocess.run(argv, env={**env}, check=True, stdout=subprocess.DEVNULL)


def run_backfills(
    client: AirflowClient,
    dag_ids: Sequence[str],
    first: date,
    last: date,
    *,
    console: Console,
    timeout_s: float,
) -> dict[str, list[dict]]:
    """Backfill each DAG over first..last and wait until every day's run has finished.

    Each backfill is created before its DAG is unpaused: a paused DAG's runs wait, and the
    scheduler, unpaused, finds the latest day's run there already instead of starting one of
    its own ahead of the backfill's order.
    """
    start, end = first.isoformat(), last.isoformat()
    for dag_id in dag_ids:
        client.wait_for_dag(dag_id)
        ahead = [r for r in client.dag_runs(dag_id, start, end) if r["run_type"] != "backfill"]
        # On a stack started before the demo (DAGs unpaused), the scheduler may have run a day
        # of the range ahead of the days it builds on: the backfill runs every day again.
        reprocess = "completed" if ahead else "failed"
        client.create_backfill(dag_id, start, end, reprocess_behavior=reprocess)
        note = f" ({len(ahead)} ran ahead of it: every day runs again, in order)" if ahead else ""
        console.print(f"backfill of [bold]{dag_id}[/] created for {start}..{end}{note}")
    for dag_id in dag_ids:
        client.unpause(dag_id)
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


def wait_for_training(client: AirflowClient, console: Console, timeout_s: float) -> list[dict]:
    """Every run of churn_training, once none is queued or running."""
    deadline = time.monotonic() + timeout_s
    with console.status(f"waiting for {TRAINING_DAG}") as status:
        while True:
            runs = client.all_runs(TRAINING_DAG)
            pending = [r["dag_run_id"] for r in runs if r["state"] not in TERMINAL_STATES]
            if not pending or time.monotonic() > deadline:
                return runs
            status.update(f"training the churn model ({', '.join(pending)})")
            time.sleep(5)


def train_first_model(
    client: AirflowClient, config: StackConfig, plan: DemoPlan, console: Console, timeout_s: float
) -> list[dict]:
    """churn_training as of the plan's first-model day, unless a champion exists already.

    The run takes the logical date of the latest week, the run the scheduler would create
    itself when the DAG is unpaused (it finds that week taken and waits for the next): the
    weekly schedule stays as in production, and no second model is trained as of the last
    Sunday, after the drift began.
    """
    dag = client.wait_for_dag(TRAINING_DAG)
    if champion_version(config) is None:
        as_of = plan.first_model_as_of.isoformat()
        conf = {"as_of": as_of, "reason": "demo: first model"}
        client.trigger(TRAINING_DAG, conf, logical_date=dag.get("next_dagrun_logical_date"))
        console.print(f"triggered {TRAINING_DAG} as of {as_of} (the first model)")
    client.unpause(TRAINING_DAG)
    return wait_for_training(client, console, timeout_s)


def run_monitoring(
    client: AirflowClient,
    config: StackConfig,
    first: date,
    last: date,
    *,
    console: Console,
    timeout_s: float,
) -> dict[str, list[dict]]:
    """churn_scoring and churn_drift_monitor over first..last, one backfill each, as a catch-up
    after a pause runs them; then the retraining the monitor triggered. A backfill scores every
    day within minutes, before that retraining ends: when the gate promoted its challenger,
    the days after the trigger are rescored with the new champion and judged again, as the
    README's rescoring of a range does (the days up to the trigger keep their version)."""
    from churnflow.lake import Lake
    from churnflow.retraining import TRIGGER, read_decisions

    dag_ids = (SCORING_DAG, MONITOR_DAG)
    started = time.monotonic()

    def left() -> float:
        return max(60.0, timeout_s - (time.monotonic() - started))

    run_backfills(client, dag_ids, first, last, console=console, timeout_s=left())
    wait_for_training(client, console, left())
    decisions = read_decisions(Lake(str(config.lake)), last + timedelta(days=1))
    trigger = next((d for d in decisions if d.action == TRIGGER), None)
    if trigger is not None and date.fromisoformat(trigger.ds) < last:
        after = date.fromisoformat(trigger.ds) + timedelta(days=1)
        if champion_version(config) != trigger.champion_version:
            console.print(f"the gate promoted a new champion: rescoring {after}..{last} with it")
            rescore = {"rescore_with_champion": True}
            for dag_id, conf in ((SCORING_DAG, rescore), (MONITOR_DAG, None)):
                backfill = client.create_backfill(
                    dag_id, after.isoformat(), last.isoformat(),
                    reprocess_behavior="completed", dag_run_conf=conf,
                )  # fmt: skip
                client.wait_for_backfill(backfill["id"], timeout_s=left())
    start, end = first.isoformat(), last.isoformat()
    return {dag_id: client.dag_runs(dag_id, start, end) for dag_id in dag_ids}


def champion_of(config: StackConfig) -> ModelVersion | None:
    """The registry's @champion; None without one or when the registry does not answer."""
    from churnflow.errors import ChurnflowError
    from churnflow.registry import CHAMPION, connect, version_by_alias

    try:
        return version_by_alias(connect(config.mlflow_url), CHAMPION)
    except ChurnflowError:
        return None


def champion_version(config: StackConfig) -> int | None:
    champion = champion_of(config)
    return int(champion.version) if champion is not None else None


def first_scored_day(config: StackConfig, plan: DemoPlan) -> date | None:
    """The day scoring starts: the first champion's as-of day (no model served the days
    before it), within the demo's range; None without a champion."""
    from churnflow.registry import TAG_AS_OF

    champion = champion_of(config)
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


def drift_lines(
    config: StackConfig, plan: DemoPlan, first: date, training: list[dict]
) -> tuple[bool, list[str]]:
    """Each monitored day's drift and decision, then the retraining the monitor triggered and
    the gate's decision on it; ok when exactly one retraining ran for the episode."""
    import json

    from churnflow.drift import read_series
    from churnflow.lake import PROMOTIONS, Lake, partition_relative
    from churnflow.promote import OUTCOME_FILE
    from churnflow.retraining import TRIGGER, read_decisions
    from churnflow.training_set import AS_OF_KEY
    from churnflow.trend import TREND_PAGE

    lake = Lake(str(config.lake))
    series = {metrics["ds"]: metrics for metrics in read_series(lake)}
    decisions = {d.ds: d for d in read_decisions(lake, plan.last_day + timedelta(days=1))}
    lines = [
        f"\n[bold]Drift monitoring[/] (behaviour shifts from {plan.drift_from}; reports under "
        f"{config.lake / 'monitoring' / 'drift'}/ds=…, trend {config.lake / TREND_PAGE})"
    ]
    ok = True
    day = first
    while day <= plan.last_day:
        metrics, decision = series.get(day.isoformat()), decisions.get(day.isoformat())
        if metrics is None or decision is None:
            lines.append(f"  {day}: [red]not judged[/]")
            ok = False
        else:
            features = metrics["features"]
            lines.append(
                f"  {day}: {len(features['drifted_columns']):>2} of {len(features['columns'])} "
                f"feature columns drifted (share {features['share']:.2f}), scored by "
                f"v{metrics['model_version']}: {decision.action}: {'; '.join(decision.reasons)}"
            )
        day += timedelta(days=1)
    triggers = [d for d in decisions.values() if d.action == TRIGGER]
    retrainings = [r for r in training if r["dag_run_id"].startswith("drift__")]
    lines.append("\n[bold]Retraining[/] (triggered by churn_drift_monitor)")
    for run in retrainings:
        as_of = date.fromisoformat(run["dag_run_id"].removeprefix("drift__"))
        record = lake.read_bytes(
            f"{partition_relative(PROMOTIONS, as_of, AS_OF_KEY)}/{OUTCOME_FILE}"
        )
        gate = json.loads(record)["lines"] if record else ["[red]no gate decision recorded[/]"]
        lines.append(f"  {TRAINING_DAG} {run['dag_run_id']}: {run['state']}; gate: {gate[0]}")
        lines.extend(f"    {line}" for line in gate[1:])
    if plan.drift_from > plan.last_day:  # a range too short for the episode (DAYS=…)
        lines.append(f"  none: the range ends before the drift ({plan.drift_from})")
        return ok and not triggers, lines
    if not retrainings:
        lines.append("  [red]the monitor triggered no retraining[/]")
    ok &= len(triggers) == 1 and len(retrainings) == 1 and retrainings[0]["state"] == "success"
    return ok, lines


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


def failed_tasks(client: AirflowClient, dag_id: str, runs: list[dict]) -> list[str]:
    """`<dag> <day>: <failed tasks>` for each failed run."""
    lines = []
    for run in runs:
        if run["state"] == "failed":
            failed = [
                ti["task_id"]
                for ti in client.task_instances(dag_id, run["dag_run_id"])
                if ti["state"] == "failed"
            ]
            which = (run.get("logical_date") or "")[:10] or run["dag_run_id"]
            lines.append(f"{dag_id} {which}: {', '.join(failed)}")
    return lines


def print_summary(
    console: Console,
    config: StackConfig,
    plan: DemoPlan,
    runs: Mapping[str, list[dict]],
    client: AirflowClient,
    *,
    training: list[dict],
    monitoring: tuple[date, dict[str, list[dict]]] | None,
) -> bool:
    table = Table(title=f"DAG runs {plan.first_day} .. {plan.last_day} ({plan.days} days)")
    for column in ("DAG", "runs", "success", "failed", "other"):
        table.add_column(column)
    all_ok = True
    failures: list[str] = []
    # The daily DAGs must succeed on every day; churn_training at least once, never failing.
    expected = {dag_id: plan.days for dag_id in runs}
    everything = {**runs, TRAINING_DAG: training}
    if monitoring is not None:
        first, monitoring_runs = monitoring
        for dag_id, dag_runs in monitoring_runs.items():
            expected[dag_id] = (plan.last_day - first).days + 1
            everything[dag_id] = dag_runs
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
        failures.extend(failed_tasks(client, dag_id, dag_runs))
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
    all_ok &= monitoring is not None
    if monitoring is not None:
        console.print(f"\n[bold]Predictions[/] ({config.lake / 'predictions' / 'churn'}/ds=…)")
        for line in prediction_lines(config, monitoring[0], plan.last_day):
            console.print(line)
        ok, lines = drift_lines(config, plan, monitoring[0], training)
        all_ok &= ok
        for line in lines:
            console.print(line)
    verdict = (
        "[green]every DAG run succeeded[/]" if all_ok else "[red]some DAG runs did not succeed[/]"
    )
    console.print(verdict)
    return all_ok


def run_demo(
    days: int = DEMO_DAYS, history_days: int = HISTORY_DAYS, customers: int = 3000, seed: int = 7,
    timeout_s: float = 3600,
) -> int:  # fmt: skip
    console = Console()
    config = paused_at_creation(StackConfig.from_env())
    env = up(config, log=console.print)
    plan = DemoPlan.ending_yesterday(days, history_days, customers, seed, training_window_days(env))
    console.print(
        f"generating raw data {plan.raw_start} .. {plan.last_day} ({customers} customers, "
        f"behaviour shifts from {plan.drift_from})"
    )
    generate_raw(plan, env)
    ingest_history(plan, env, console)
    client = AirflowClient(config.airflow_url, "admin", admin_password(config))
    started = time.monotonic()

    def left() -> float:
        return max(60.0, timeout_s - (time.monotonic() - started))

    runs = run_backfills(
        client, DEMO_DAGS, plan.first_day, plan.last_day, console=console, timeout_s=timeout_s
    )
    train_first_model(client, config, plan, console, left())
    monitoring = None
    first_scored = first_scored_day(config, plan)
    if first_scored is not None:
        monitored = run_monitoring(
            client, config, first_scored, plan.last_day, console=console, timeout_s=left()
        )
        monitoring = (first_scored, monitored)
    training = wait_for_training(client, console, left())
    ok = print_summary(
        console, config, plan, runs, client, training=training, monitoring=monitoring
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run_demo())
