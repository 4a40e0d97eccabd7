"""Failures are classified by cause: data (65), configuration (78), engine or network (75).

Every error here is a real one: raised by a gRPC channel, a Spark Connect client, a socket,
the settings object or the task package's own checks, not built to look like one.
"""

from __future__ import annotations

import os
import socket
from datetime import date

import grpc
import pytest
from dbt_common.exceptions import DbtRuntimeError
from pydantic import ValidationError

from churnflow.cli import build_parser
from churnflow.errors import ConfigError, DataError
from churnflow.failures import EX_TEMPFAIL, describe, exit_code, is_transient, run_command
from churnflow.settings import Settings, get_settings
from churnflow.spark import _check_remote
from tests.conftest import run_cli

DAY = "2026-03-02"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _raised(work) -> BaseException:
    try:
        work()
    except Exception as err:
        return err
    raise AssertionError("expected an error")


def test_a_refused_connection_is_transient() -> None:
    err = _raised(lambda: socket.create_connection(("127.0.0.1", _closed_port()), timeout=3))
    assert isinstance(err, ConnectionRefusedError)
    assert exit_code(err) == EX_TEMPFAIL


def test_an_unavailable_grpc_server_is_transient() -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{_closed_port()}")
    call = channel.unary_unary("/spark.connect.SparkConnectService/AnalyzePlan")
    err = _raised(lambda: call(b"", timeout=5))
    assert isinstance(err, grpc.RpcError)
    assert exit_code(err) == EX_TEMPFAIL


def test_a_spark_connect_client_that_cannot_reach_its_server_is_transient() -> None:
    from pyspark.errors.exceptions.connect import SparkConnectGrpcException
    from pyspark.sql.connect.client.core import SparkConnectClient

    client = SparkConnectClient(f"sc://127.0.0.1:{_closed_port()}", retry_policy={"max_retries": 0})
    try:
        with pytest.warns(UserWarning, match="RETRIES_EXCEEDED"):
            err = _raised(lambda: client._analyze(method="spark_version"))
    finally:
        client.close()  # else its exit hook calls the closed port again when pytest ends
    assert isinstance(err, SparkConnectGrpcException)
    assert exit_code(err) == EX_TEMPFAIL
    assert "the runner retries" in describe(err)


def test_a_missing_spark_server_is_transient_although_raised_as_a_config_error() -> None:
    err = _raised(lambda: _check_remote(f"sc://127.0.0.1:{_closed_port()}"))
    assert isinstance(err, ConfigError)
    assert exit_code(err) == EX_TEMPFAIL


@pytest.mark.parametrize(
    "symptom",
    [
        "org.apache.spark.SparkException: Job aborted: ExecutorLostFailure (executor 3 exited)",
        "java.lang.OutOfMemoryError: Java heap space",
        "Container killed by YARN for exceeding memory limits",
        "[CONNECT] StatusCode.UNAVAILABLE: Connection reset by peer",
    ],
)
def test_a_dbt_runtime_error_caused_by_the_engine_is_transient(symptom: str) -> None:
    err = _raised(lambda: _raise_chained(DataError("features: dbt build failed"), symptom))
    assert exit_code(err) == EX_TEMPFAIL


def _raise_chained(outer: Exception, engine_message: str) -> None:
    try:
        raise DbtRuntimeError(f"Runtime Error in model customer_state: {engine_message}")
    except DbtRuntimeError as inner:
        raise outer from inner


def test_a_dbt_test_or_rule_failure_is_a_data_error() -> None:
    from churnflow.features import FeaturesError

    err = FeaturesError("features ds=2026-03-02: test row_rules on customer_state failed: 3 rows")
    assert not is_transient(err)
    assert exit_code(err) == os.EX_DATAERR


def test_a_landing_contract_breach_is_a_data_error(lake) -> None:
    args = build_parser().parse_args(["check-landing", "--ds", DAY])
    assert run_command("check-landing", lambda: args.handler(args)) == os.EX_DATAERR


def test_a_bad_setting_is_a_config_error_that_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHURNFLOW_MAX_REJECT_SHARE", "2")
    err = _raised(Settings)
    assert isinstance(err, ValidationError)
    assert exit_code(err) == os.EX_CONFIG
    assert "CHURNFLOW_MAX_REJECT_SHARE=" in describe(err)


def test_a_bug_keeps_its_traceback() -> None:
    err = _raised(lambda: {}["missing"])
    assert exit_code(err) is None
    with pytest.raises(KeyError):
        run_command("ingest", lambda: {}["missing"])


def test_a_step_whose_spark_server_is_down_exits_to_be_retried(
    lake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real ingest handler, through the function the CLI's main runs it with."""
    day = date.fromisoformat(DAY)
    assert run_cli("generate", "--start", DAY, "--end", DAY, "--quiet", lake=lake).returncode == 0
    monkeypatch.setenv("SPARK_REMOTE", f"sc://127.0.0.1:{_closed_port()}")
    get_settings.cache_clear()
    args = build_parser().parse_args(["ingest", "--ds", day.isoformat()])
    assert run_command("ingest", lambda: args.handler(args)) == EX_TEMPFAIL
    assert "churnflow ingest: error: SPARK_REMOTE=" in capsys.readouterr().err
