"""Which exit code a failed command ends with: the failure's cause decides.

The runners (local process or pod) read the exit code and nothing else, so the code carries
the one thing they must know, whether a retry can help:

- 65 `EX_DATAERR`: the input breaks a contract (a rule, a dbt test, a GX expectation).
  The same input fails the same way: no retry.
- 78 `EX_CONFIG`: a setting cannot work; the message names the variable. No retry.
- 75 `EX_TEMPFAIL`: the engine or the network failed (Spark Connect unreachable, an executor
  lost, out of memory, a connection reset), whatever class the error was raised as: a dbt
  model that failed because Spark went away is not a data error. Retried with backoff.
- anything unexpected is a bug: the traceback is kept and the exit code is 1 (retried).

Pure functions of the exception (its type, gRPC status, message and cause chain); no Spark,
dbt or gRPC import.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator

from churnflow.errors import ChurnflowError

EX_TEMPFAIL = os.EX_TEMPFAIL
# gRPC statuses (Spark Connect) that say the server or the network, not the request, failed.
TRANSIENT_GRPC_STATUSES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"})
# What engine trouble looks like in a message that crossed a process boundary as text (a
# Spark server-side error, a dbt node's runtime error). Lower case.
ENGINE_SYMPTOMS = (
    "connection refused",
    "connection reset",
    "broken pipe",
    "failed to connect to all addresses",
    "statuscode.unavailable",
    "statuscode.deadline_exceeded",
    "statuscode.resource_exhausted",
    "executorlostfailure",
    "executor lost",
    "lost executor",
    "outofmemoryerror",
    "java heap space",
    "gc overhead limit exceeded",
    "container killed by",
    "temporary failure in name resolution",
)


def causes(err: BaseException) -> Iterator[BaseException]:
    """The error and everything it was raised from or while handling, once each."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [err]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [current.__cause__, current.__context__]


def _grpc_status(err: BaseException) -> str | None:
    """The gRPC status name of a grpc.RpcError or a Spark Connect gRPC exception."""
    for method in ("getGrpcStatusCode", "code"):  # pyspark, grpc
        read = getattr(err, method, None)
        if callable(read):
            try:
                status = read()
            except Exception:
                continue
            name = getattr(status, "name", None)
            if isinstance(name, str):
                return name
    return None


def is_transient(err: BaseException) -> bool:
    """True when the engine or the network failed, anywhere in the cause chain."""
    for cause in causes(err):
        if isinstance(cause, ConnectionError | TimeoutError | MemoryError):
            return True
        if _grpc_status(cause) in TRANSIENT_GRPC_STATUSES:
            return True
        text = str(cause).lower()
        if any(symptom in text for symptom in ENGINE_SYMPTOMS):
            return True
    return False


def _settings_error(err: BaseException) -> str | None:
    """A pydantic settings error, described by the variables it names; None otherwise."""
    errors = getattr(err, "errors", None)
    if type(err).__name__ != "ValidationError" or not callable(errors):
        return None
    problems = []
    for error in errors():
        field = ".".join(str(part) for part in error.get("loc", ())) or "?"
        variable = f"CHURNFLOW_{field.upper()}"
        problems.append(f"{variable}={error.get('input')!r}: {error.get('msg')}")
    return "; ".join(problems)


def exit_code(err: BaseException) -> int | None:
    """The exit code for an expected failure; None for a bug (keep its traceback)."""
    if is_transient(err):
        return EX_TEMPFAIL
    if isinstance(err, ChurnflowError):
        return err.exit_code
    if isinstance(err, ValueError):  # settings validation and the like
        return os.EX_CONFIG
    return None


def describe(err: BaseException) -> str:
    """One paragraph for the task log."""
    message = _settings_error(err) or str(err) or type(err).__name__
    if exit_code(err) == EX_TEMPFAIL:
        return f"{message} (engine or network failure: the runner retries)"
    return message


def run_command(command: str, work: Callable[[], object]) -> int:
    """Run a command's work; turn an expected failure into one paragraph and its exit code."""
    try:
        work()
    except Exception as err:
        code = exit_code(err)
        if code is None:
            raise
        print(f"churnflow {command}: error: {describe(err)}", file=sys.stderr)
        return code
    return 0
