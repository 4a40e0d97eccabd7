"""What a step's exit code means to Airflow: the one rule both runners apply.

A step exits 0 on success. EX_DATAERR (65: the input breaks a contract) and EX_CONFIG (78: a
setting cannot work) fail the task at once: a retry would meet the same input or the same
settings. Any other code (engine or network trouble, EX_TEMPFAIL, a crash, a kill) is retried
with the policy's backoff. The task side picks the code (`churnflow.failures`); the local
runner reads it from the process, the kubernetes runner from the pod's base container.
"""

from __future__ import annotations

import os

from airflow.sdk.exceptions import AirflowException, AirflowFailException

NO_RETRY_EXIT_CODES: dict[int, str] = {
    os.EX_DATAERR: "the input breaks a contract; fix the data, then clear the task",
    os.EX_CONFIG: "a setting cannot work; fix the configuration, then clear the task",
}


def step_failure(code: int | None, message: str) -> AirflowException:
    """The exception a step that exited with `code` fails its task with.

    `code` is None when no exit code could be read (a pod that never started its container):
    retried, like any failure that is not known to be permanent.
    """
    reason = NO_RETRY_EXIT_CODES.get(code) if code is not None else None
    if reason is not None:
        return AirflowFailException(f"{message}\nNot retried (exit code {code}): {reason}.")
    return AirflowException(message)
