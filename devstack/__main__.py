"""`python -m devstack up|down|status|demo` — what the Makefile targets call."""

from __future__ import annotations

import argparse
import sys

from devstack.demo import DEMO_DAYS
from devstack.services import ALL_SERVICES, StackConfig, StackError, down, java_version, status, up

MIN_JAVA = 17


def _check_java() -> None:
    version = java_version()
    if version is None or version < MIN_JAVA:
        found = "no java on PATH" if version is None else f"java {version}"
        raise StackError(
            f"Spark 4 needs Java {MIN_JAVA}+ and this machine has {found}. Install one, e.g. "
            "`sudo apt-get install openjdk-17-jre-headless` (Debian/Ubuntu), "
            "`brew install openjdk@17` (macOS), then put it on PATH or set JAVA_HOME."
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the local stack (reuses what runs)")
    start.add_argument("--services", nargs="+", default=list(ALL_SERVICES), choices=ALL_SERVICES)
    commands.add_parser("down", help="stop everything `up` started")
    commands.add_parser("status", help="which services run")
    demo = commands.add_parser("demo", help="start, generate data, backfill, print a summary")
    demo.add_argument("--days", type=int, default=DEMO_DAYS)
    demo.add_argument("--customers", type=int, default=3000)
    demo.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    config = StackConfig.from_env()
    try:
        if args.command == "up":
            _check_java()
            up(config, args.services)
        elif args.command == "down":
            down(config)
        elif args.command == "status":
            for service, pid in status(config).items():
                print(f"{service:14} {'running, pid ' + str(pid) if pid else 'stopped'}")
        else:
            _check_java()
            from devstack.demo import run_demo

            return run_demo(days=args.days, customers=args.customers, seed=args.seed)
    except StackError as err:
        print(f"devstack {args.command}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
