"""What the model half's daily steps cost at demo scale, forked from the step server vs a
fresh process, on the local stack's own services (Spark Connect, MLflow, the step server).

A throw-away stack on free ports; a synthetic lake of `--customers` customers (the demo's
3000 by default); a scikit-learn champion trained and promoted through the CLI. Then
`churnflow score --ds D` runs `--repeat` times each way, alternating, on days never scored,
and `churnflow drift --ds D` the same on the scored days; medians side by side. The first
served scoring pays for Spark's Python workers loading the model; later ones find it loaded.

    .venv/bin/python bench/daily_steps.py [--customers 3000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "include")]

from churnflow.step_server import start_step  # noqa: E402
from devstack.services import down, throwaway_config, up  # noqa: E402
from tests.churnflow import synthetic  # noqa: E402

START, AS_OF, SNAPSHOTS = synthetic.START, synthetic.AS_OF, synthetic.SNAPSHOTS
_W = synthetic.TRAINING_WINDOW
# The synthetic lake's training window as the CLI reads it, and a gate that promotes.
WINDOW = {
    "CHURNFLOW_LABEL_HORIZON_DAYS": str(_W.horizon_days),
    "CHURNFLOW_TRAINING_SNAPSHOTS": str(_W.snapshots),
    "CHURNFLOW_TRAINING_SNAPSHOT_EVERY_DAYS": str(_W.every_days),
    "CHURNFLOW_TRAINING_VALIDATION_SNAPSHOTS": str(_W.validation_snapshots),
    "CHURNFLOW_TRAINING_MIN_ROWS": str(_W.min_rows),
    "CHURNFLOW_PROMOTION_MAX_ECE": "1",
    "CHURNFLOW_PROMOTION_MARGIN": "0",
}


def churnflow(env: dict[str, str], *args: str) -> None:
    subprocess.run([str(Path(sys.executable).with_name("churnflow")), *args], env=env, check=True)


def fresh(env: dict[str, str], argv: list[str]) -> float:
    """One step as its own process (what a pod does, without the pod)."""
    started = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).with_name("churnflow")), *argv],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - started


def served(env: dict[str, str], argv: list[str]) -> tuple[float, str]:
    """One step forked from the step server, as the local runner asks for it; its seconds and
    the step's own `time:` line (seconds per phase)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as output:
        step = start_step(
            env["CHURNFLOW_STEP_SERVER"], argv, env, REPO,
            (output.fileno(), output.fileno(), output.fileno()),
        )  # fmt: skip
        code = step.wait()
        seconds = time.perf_counter() - started
        output.seek(0)
        text = output.read()
    if code:
        raise SystemExit(f"served step failed with exit {code}:\n{text}")
    phases = [line for line in text.splitlines() if line.startswith("time:")]
    return seconds, phases[-1] if phases else ""


def measure(
    console: Console, env: dict[str, str], command: str, days: list[date], args: Any
) -> None:
    """`churnflow <command> --ds D` on `days`: the first served, then alternating."""
    argv = [[command, "--ds", str(day)] for day in days]
    times: dict[str, list[float]] = {"fresh process": [], "step server": []}
    first_served, first_phases = served(env, argv[0])
    for index in range(args.repeat):
        seconds, phases = served(env, argv[1 + 2 * index])
        console.print(f"{command}: step server {seconds:.2f} s {phases}")
        times["step server"].append(seconds)
        times["fresh process"].append(fresh(env, argv[2 + 2 * index]))
    table = Table(title=f"churnflow {command} --ds D, {args.customers} customers, median of "
                  f"{args.repeat} days each")  # fmt: skip
    for column in ("runner", "median s", "min s", "max s"):
        table.add_column(column)
    for name, values in times.items():
        table.add_row(name, *(f"{f(values):.2f}" for f in (statistics.median, min, max)))
    console.print(table)
    console.print(f"first served {command} step: {first_served:.2f} s {first_phases}")
    ratio = statistics.median(times["fresh process"]) / statistics.median(times["step server"])
    console.print(f"fresh process / step server: {ratio:.1f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    console = Console()
    home = Path(tempfile.mkdtemp(prefix="churnflow-bench-steps-"))
    config = throwaway_config(home / "state")
    try:
        env = {**up(config, ["mlflow", "spark", "steps"], log=console.print), **WINDOW}
        days = [AS_OF - timedelta(days=k) for k in range(args.repeat * 2 + 1)]
        customers = synthetic.population(
            START, AS_OF, seed=7, size=args.customers, lifetime_days=120
        )
        synthetic.write_lake(
            config.lake, customers, first=START, last=AS_OF, snapshots=sorted({*SNAPSHOTS, *days})
        )
        with console.status("training set, sklearn champion"):
            churnflow(env, "training-set", "--as-of", str(AS_OF))
            churnflow(env, "train", "--as-of", str(AS_OF), "--model-type", "sklearn")
            churnflow(env, "promote")
        for command in ("score", "drift"):
            measure(console, env, command, days, args)
    finally:
        down(config, log=lambda _line: None)
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
