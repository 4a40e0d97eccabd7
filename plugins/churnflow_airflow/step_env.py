"""What a local step may see of the worker's environment: the one rule, stdlib only.

A worker process holds Airflow's own secrets (Fernet key, JWT secret, the metadata database
URL) in its environment. A step is task code and gets only what it needs, the same as a pod:

- the process basics below (so Python, Java and locale behave as on the worker),
- the task side's settings: `CHURNFLOW_*`, `SPARK_*`, `PYSPARK_*` and `MLFLOW_*`,
- the step's declared env (templated by the factory),
- its secret references, read from the worker's environment by name.

Anything else, `AIRFLOW_*` and `AIRFLOW__*` included, stays with the worker. PYTHONPATH passes
because a step's interpreter may need it to find the task package; it holds paths, not secrets.

The declared env wins over the worker's: `SPARK_REMOTE` reaches a step from the worker (the
local stack sets it for every step), but a `spark` step of a deployment with
CHURNFLOW_SPARK_REMOTE gets that value instead, as its pod would. `AWS_*` variables are not
task settings and do not pass by name: an object-store lake's region and endpoint come in the
declared env, its keys as the secret references `AWS_ACCESS_KEY_ID` and
`AWS_SECRET_ACCESS_KEY` (`churnflow_airflow.steps.OBJECT_STORE_SECRETS`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

BASICS = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "XDG_RUNTIME_DIR",
        "JAVA_HOME",
        "PYTHONPATH",
    }
)
PREFIXES = ("LC_", "CHURNFLOW_", "SPARK_", "PYSPARK_", "MLFLOW_")


class MissingSecretError(KeyError):
    """A step's secret reference names a variable the worker does not have."""


def passes(name: str) -> bool:
    """True when a worker variable of this name may reach a step."""
    return name in BASICS or name.startswith(PREFIXES)


def step_environment(
    worker_env: Mapping[str, str],
    declared: Mapping[str, str] | None = None,
    secret_vars: Iterable[str] = (),
) -> dict[str, str]:
    """The whole environment of a local step; raise MissingSecretError for an absent secret."""
    env = {name: value for name, value in worker_env.items() if passes(name)}
    env.update(declared or {})
    for name in secret_vars:
        if name not in worker_env:
            raise MissingSecretError(name)
        env[name] = worker_env[name]
    return env
