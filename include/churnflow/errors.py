"""Failure classes of the task side.

Each expected failure is an exception whose message names the dataset, file, column and rule,
so the CLI can print one paragraph and exit non-zero instead of a traceback. The exit code
tells the runner whether a retry can help: a data error stays an error on the same input.
"""

from __future__ import annotations

import os


class ChurnflowError(Exception):
    """An expected failure: the message is for people, the exit code for the runner."""

    exit_code = 1


class ConfigError(ChurnflowError):
    """Settings or arguments that cannot work (bad lake URI, inverted date range)."""

    exit_code = os.EX_CONFIG


class DataError(ChurnflowError):
    """The input breaks a contract; rerunning on the same input fails the same way."""

    exit_code = os.EX_DATAERR


class LandingError(DataError):
    """A raw partition is missing, empty or unreadable, or lacks a contract column."""


class ServiceUnavailableError(ChurnflowError):
    """A service the step talks to (the MLflow server) does not answer; a retry may find it."""

    exit_code = os.EX_TEMPFAIL
