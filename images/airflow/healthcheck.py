"""The Airflow image's HEALTHCHECK: one command for every component the image runs.

The container's own command line (PID 1, or what an init such as tini started) says which
component this is. The api-server answers its public health endpoint; the scheduler, the
dag-processor and the triggerer have a live job of their own on this host (`airflow jobs
check --local`). Anything else (`airflow version`, `airflow db migrate`) runs to completion
and has nothing to check. Python only, so the image needs no curl.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path

JOB_TYPES = {
    "scheduler": "SchedulerJob",
    "dag-processor": "DagProcessorJob",
    "triggerer": "TriggererJob",
}
DEFAULT_API_PORT = "8080"


def airflow_argv(cmdline: Sequence[str]) -> list[str]:
    """The arguments after the `airflow` executable, e.g. ["scheduler"]; [] if none."""
    for index, arg in enumerate(cmdline):
        if Path(arg).name == "airflow":
            return list(cmdline[index + 1 :])
    return []


def api_port(args: Sequence[str], env: dict[str, str]) -> str:
    """`--port N`, `--port=N` or `-p N` of `airflow api-server`, else AIRFLOW__API__PORT."""
    for index, arg in enumerate(args):
        if arg.startswith("--port="):
            return arg.split("=", 1)[1]
        if arg in ("--port", "-p") and index + 1 < len(args):
            return args[index + 1]
    return env.get("AIRFLOW__API__PORT", DEFAULT_API_PORT)


def check_for(cmdline: Sequence[str], env: dict[str, str]) -> list[str] | str | None:
    """What proves the component alive: an argv to run, a URL to GET, or None (nothing)."""
    args = airflow_argv(cmdline)
    role = args[0] if args else ""
    if role == "api-server":
        return f"http://127.0.0.1:{api_port(args, env)}/api/v2/monitor/health"
    if role in JOB_TYPES:
        return ["airflow", "jobs", "check", "--job-type", JOB_TYPES[role], "--local"]
    return None


def container_cmdline() -> list[str]:
    """PID 1's argv; when PID 1 is an init (docker-init, tini), the argv it was given."""
    raw = Path("/proc/1/cmdline").read_bytes()
    return [part.decode() for part in raw.split(b"\0") if part]


def main() -> int:
    check = check_for(container_cmdline(), dict(os.environ))
    if check is None:
        return 0
    if isinstance(check, str):
        try:
            with urllib.request.urlopen(check, timeout=10) as response:
                return 0 if response.status == 200 else 1
        except OSError as err:
            print(f"{check}: {err}", file=sys.stderr)
            return 1
    os.execvp(check[0], check)
    return 1  # not reached: execvp replaces this process


if __name__ == "__main__":
    sys.exit(main())
