"""The `churnflow` command: the only entry point the pipeline steps call.

Expected failures (ChurnflowError) print one paragraph to stderr and exit with the error's
code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import date

from churnflow.errors import ChurnflowError, ConfigError


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from err


def _generate(args: argparse.Namespace) -> None:
    from churnflow.generate import Defect, GenerateRequest, generate
    from churnflow.settings import get_settings

    request = GenerateRequest(
        start=args.start,
        end=args.end,
        customers=args.customers,
        seed=args.seed,
        drift_from=args.drift_from,
        defect=Defect(args.defect) if args.defect else None,
        defect_ds=args.defect_ds,
        file_format=args.format,
    )
    lake = get_settings().lake_path()
    counts = generate(request, lake, progress=not args.quiet)
    print(
        f"wrote {counts['days']} day(s) of raw orders ({counts['orders']} orders, "
        f"{counts['customers']} customer rows) under {lake}"
    )


def _check_landing(args: argparse.Namespace) -> None:
    from churnflow.landing import check_landing
    from churnflow.settings import get_settings

    summary = check_landing(get_settings().lake_path(), args.ds)
    for item in summary.files:
        print(f"{item.path.name}: {item.rows} rows")
    files = len(summary.files)
    print(f"ds={args.ds}: {summary.rows} orders in {files} file(s) at {summary.partition}")


def _ingest(args: argparse.Namespace) -> None:
    from churnflow.ingest import run_ingest

    print(run_ingest(args.ds))


def _features(args: argparse.Namespace) -> None:
    from churnflow.features import run_features

    print(run_features(args.ds))


def _validate(args: argparse.Namespace) -> None:
    from churnflow.validate import run_validate

    print(run_validate(args.ds, args.suite))


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
    gen.add_argument("--format", choices=["csv", "parquet"], default="csv")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(handler=_generate)

    landing = commands.add_parser("check-landing", help="check a day's raw orders arrived whole")
    landing.add_argument("--ds", type=_day, required=True)
    landing.set_defaults(handler=_check_landing)

    ingest = commands.add_parser("ingest", help="raw orders -> silver orders, rejects quarantined")
    ingest.add_argument("--ds", type=_day, required=True)
    ingest.set_defaults(handler=_ingest)

    features = commands.add_parser("features", help="dbt build of the feature models for a day")
    features.add_argument("--ds", type=_day, required=True)
    features.set_defaults(handler=_features)

    validate = commands.add_parser("validate", help="Great Expectations checkpoint for a day")
    validate.add_argument("--ds", type=_day, required=True)
    validate.add_argument("--suite", required=True, choices=["silver_orders", "customer_features"])
    validate.set_defaults(handler=_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], None] = args.handler
    try:
        handler(args)
    except ChurnflowError as err:
        print(f"churnflow {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except ValueError as err:  # settings validation and the like
        print(f"churnflow {args.command}: error: {err}", file=sys.stderr)
        return ConfigError.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
