"""The `churnflow` command: the only entry point the pipeline steps call.

Expected failures (ChurnflowError) print one paragraph to stderr and exit with the error's
code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from err


def _generate(args: argparse.Namespace) -> None:
    from churnflow.generate import Defect, GenerateRequest, generate
    from churnflow.lake import Lake

    request = GenerateRequest(
        start=args.start,
        end=args.end,
        customers=args.customers,
        seed=args.seed,
        drift_from=args.drift_from,
        defect=Defect(args.defect) if args.defect else None,
        defect_ds=args.defect_ds,
        file_format=args.format,
        volume_from=args.volume_from,
        volume_factor=args.volume_factor,
    )
    lake = Lake.from_settings()
    counts = generate(request, lake, progress=not args.quiet)
    print(
        f"wrote {counts['days']} day(s) of raw orders ({counts['orders']} orders, "
        f"{counts['customers']} customer rows) under {lake.shown}"
    )


def _check_landing(args: argparse.Namespace) -> None:
    from churnflow.lake import Lake
    from churnflow.landing import check_landing

    summary = check_landing(Lake.from_settings(), args.ds)
    for item in summary.files:
        print(f"{item.file.name}: {item.rows} rows")
    files = len(summary.files)
    print(f"ds={args.ds}: {summary.rows} orders in {files} file(s) at {summary.partition}")


def _ingest(args: argparse.Namespace) -> None:
    """One day, or with `--through` every day of a range in order in this one process (a
    load of history): each day checked and published as its own step would publish it (the
    Spark work shared by up to a month of days); the first day that fails stops the range
    with its error, the days before it stay published."""
    from rich.console import Console
    from rich.progress import track

    from churnflow.errors import ConfigError
    from churnflow.ingest import run_ingest

    last = args.through or args.ds
    if last < args.ds:
        raise ConfigError(f"ingest: --through {last} is before --ds {args.ds}")
    days = (last - args.ds).days + 1
    progress = Console(stderr=True)
    lines = run_ingest(args.ds, last)
    for line in track(lines, "ingesting raw orders", total=days, console=progress,
                      disable=days == 1):  # fmt: skip
        print(line, flush=True)


def _features(args: argparse.Namespace) -> None:
    from churnflow.features import run_features

    print(run_features(args.ds))


def _validate(args: argparse.Namespace) -> None:
    from churnflow.validate import run_validate

    print(run_validate(args.ds, args.suite))


def _training_set(args: argparse.Namespace) -> None:
    from churnflow.training_set import run_training_set

    print(run_training_set(args.as_of))


def _train(args: argparse.Namespace) -> None:
    from churnflow.train import run_train

    print(run_train(args.as_of, args.model_type, args.reason))


def _promote(args: argparse.Namespace) -> None:
    from churnflow.promote import run_promote

    print(run_promote(args.as_of, rollback_champion=args.rollback))


def _score(args: argparse.Namespace) -> None:
    from churnflow.scoring import run_score

    print(run_score(args.ds, rescore_with_champion=args.rescore_with_champion or None))


def _drift(args: argparse.Namespace) -> None:
    from churnflow.drift import run_drift

    print(run_drift(args.ds))


def _retraining_decision(args: argparse.Namespace) -> None:
    from churnflow.retraining import run_decision

    print(run_decision(args.ds, training_active=args.training_active == "true"))


def _step_server(args: argparse.Namespace) -> None:
    from churnflow.step_server import run_server

    run_server(args.socket)


def _model_commands(commands: Any) -> None:
    """The model half's commands: training set, training, gate, scoring, monitoring."""
    training = commands.add_parser(
        "training-set",
        help="point-in-time training set of the churn model as of a day",
        description=(
            "Labelled examples (churned: no order within the horizon after the snapshot) "
            "from the customer_features snapshots whose label has matured by the as-of date "
            "(horizon and window: CHURNFLOW_LABEL_HORIZON_DAYS, "
            "CHURNFLOW_TRAINING_*), split by time into train, validation and holdout, written "
            "with a manifest to training/churn/as_of=D/."
        ),
    )
    training.add_argument(
        "--as-of",
        type=_day,
        required=True,
        help="newest day whose orders the labels may read; snapshots up to as-of minus the horizon",
    )
    training.set_defaults(handler=_training_set)
    fit = commands.add_parser(
        "train",
        help="train the churn models on a published training set, register the challenger",
        description=(
            "Fits the scikit-learn and Lightning models on training/churn/as_of=D (built by "
            "`training-set`), logs an MLflow parent run with one child run per model type "
            "(metrics per split and slice, curves, plots, the dataset, the model), and "
            "registers the one with the better validation PR AUC as churn@challenger."
        ),
    )
    fit.add_argument("--as-of", type=_day, required=True, help="the training set's as-of date")
    fit.add_argument(
        "--model-type",
        choices=["auto", "sklearn", "lightning"],
        default="auto",
        help="train only this type and register it (default: both, the better one)",
    )
    fit.add_argument(
        "--reason", help="why this training runs (schedule, manual, drift: ...); a run tag"
    )
    fit.set_defaults(handler=_train)
    gate = commands.add_parser(
        "promote",
        help="gate: challenger vs champion on the same holdout; moves champion or says why not",
        description=(
            "Scores churn@challenger and churn@champion (or, with no champion, the recency "
            "baseline) on the holdout of the challenger's training set and moves @champion only "
            "if the challenger wins by CHURNFLOW_PROMOTION_MARGIN, loses no slice by more than "
            "CHURNFLOW_PROMOTION_SLICE_TOLERANCE and is calibrated within "
            "CHURNFLOW_PROMOTION_MAX_ECE. The decision and its reasons are tags on the version. "
            "Exits 0 whether or not it promotes."
        ),
    )
    gate.add_argument(
        "--as-of",
        type=_day,
        help="the training set whose holdout to compare on (default: the challenger's)",
    )
    gate.add_argument(
        "--rollback",
        action="store_true",
        help="point @champion back at the version it replaced (operator action)",
    )
    gate.set_defaults(handler=_promote)
    scoring = commands.add_parser(
        "score",
        help="batch predictions of a day's active customers with churn@champion, on Spark",
        description=(
            "Scores features/customer_features/ds=D and publishes predictions/churn/ds=D "
            "(customer_id, score, risk_decile, model_name, model_version). A day scored before "
            "is scored with the version its ledger entry (predictions/churn_ledger) records, so "
            "reruns and backfills give the same bytes; a new day uses churn@champion. When "
            "churn@challenger is another version it also scores the day into "
            "predictions/churn_shadow/ds=D."
        ),
    )
    scoring.add_argument("--ds", type=_day, required=True, help="the day to score")
    scoring.add_argument(
        "--rescore-with-champion",
        action="store_true",
        help="use the current champion even if the day was scored with another version "
        "(default: CHURNFLOW_RESCORE_WITH_CHAMPION, off)",
    )
    scoring.set_defaults(handler=_score)
    watch = commands.add_parser(
        "drift",
        help="Evidently drift, data quality and realised performance of a scored day",
        description=(
            "Compares features/customer_features/ds=D with the training set of the version that "
            "scored D, the day's scores with the days before, checks data quality, and, once the "
            "labels of D minus the horizon matured, measures the champion's (and a shadow "
            "challenger's) realised performance. Publishes monitoring/drift/ds=D (report.html, "
            "metrics.json). Exits 0 whether or not it finds drift."
        ),
    )
    watch.add_argument("--ds", type=_day, required=True, help="the scored day to judge")
    watch.set_defaults(handler=_drift)
    decide = commands.add_parser(
        "retraining-decision",
        help="whether a judged day calls for retraining (once per drift episode); recorded",
        description=(
            "Reads monitoring/drift/ds=D/metrics.json and the decisions of the days before, and "
            "records monitoring/decisions/ds=D/decision.json: trigger when the drift share or the "
            "realised PR AUC drop crosses its threshold (CHURNFLOW_DRIFT_SHARE, "
            "CHURNFLOW_MAX_PR_AUC_DROP), skip while a retraining runs or within "
            "CHURNFLOW_RETRAINING_COOLDOWN_DAYS of the episode's trigger, none otherwise."
        ),
    )
    decide.add_argument("--ds", type=_day, required=True, help="the judged day")
    decide.add_argument(
        "--training-active",
        choices=["true", "false"],
        default="false",
        help="whether a churn_training run is queued or running (the DAG asks Airflow)",
    )
    decide.set_defaults(handler=_retraining_decision)


def build_parser() -> argparse.ArgumentParser:
    from churnflow import __version__
    from churnflow.generate import Defect

    parser = argparse.ArgumentParser(prog="churnflow", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"churnflow {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = commands.add_parser("generate", help="write synthetic raw partitions")
    gen.add_argument("--start", type=_day, required=True)
    gen.add_argument("--end", type=_day, required=True)
    gen.add_argument("--customers", type=int, default=3000)
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--drift-from", type=_day, help="shift behaviour from this day on")
    gen.add_argument("--defect", choices=[d.value for d in Defect])
    gen.add_argument("--defect-ds", type=_day, help="the day the defect is written to")
    gen.add_argument(
        "--volume-from", type=_day, help="a level shift: order rates change from this day on"
    )
    gen.add_argument(
        "--volume-factor",
        type=float,
        default=1.0,
        help="order rate from --volume-from on, relative to before (0.4: a 60%% drop)",
    )
    gen.add_argument("--format", choices=["csv", "parquet"], default="csv")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(handler=_generate)

    daily = (
        ("check-landing", "check a day's raw orders arrived whole", _check_landing),
        ("ingest", "raw orders -> silver orders, rejects quarantined", _ingest),
        ("features", "dbt build of the feature models for a day", _features),
        ("validate", "Great Expectations checkpoint for a day", _validate),
    )
    per_day = {}
    for name, help_text, handler in daily:
        per_day[name] = commands.add_parser(name, help=help_text)
        per_day[name].add_argument("--ds", type=_day, required=True)
        per_day[name].set_defaults(handler=handler)
    _model_commands(commands)
    server = commands.add_parser(
        "step-server", help="run local steps as forks of a preloaded process (`make up`)"
    )
    server.add_argument("--socket", type=Path, required=True, help="Unix socket to listen on")
    server.set_defaults(handler=_step_server)
    per_day["ingest"].add_argument(
        "--through",
        type=_day,
        help="also every day after --ds up to this one, in order, in this one process (a load "
        "of history); stops at the first day that fails",
    )
    suites = ["silver_orders", "customer_features"]
    per_day["validate"].add_argument("--suite", required=True, choices=suites)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code says whether a retry can help (churnflow.failures)."""
    from churnflow.failures import run_command

    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], None] = args.handler
    return run_command(args.command, lambda: handler(args))


if __name__ == "__main__":
    sys.exit(main())
