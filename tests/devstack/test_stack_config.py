"""Stack settings that decide how services start, without starting them."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from devstack.services import (
    REPO_ROOT,
    SPARK_JAVA_OPTIONS,
    StackConfig,
    preloaded_airflow,
    service_argv,
    spark_connect_argv,
    stack_env,
    write_env_file,
)


def test_the_step_socket_is_in_the_run_folder(tmp_path: Path) -> None:
    config = StackConfig(home=tmp_path / "stack")
    assert config.step_socket == tmp_path / "stack" / "run" / "steps.sock"
    argv = service_argv(config, "steps")
    assert argv[1:] == ["step-server", "--socket", str(config.step_socket)]


def test_a_socket_path_too_long_for_unix_sockets_moves_to_the_temp_folder(tmp_path: Path) -> None:
    deep, other = StackConfig(home=tmp_path / ("x" * 120)), StackConfig(home=tmp_path / ("y" * 120))
    assert deep.step_socket.parent == Path(tempfile.gettempdir())
    assert len(str(deep.step_socket)) <= 100
    assert deep.step_socket != other.step_socket  # one socket per stack


def test_the_scheduler_runs_airflow_with_every_preloaded_module_importable(
    tmp_path: Path,
) -> None:
    """A preloaded module renamed or gone would stop the local scheduler from starting."""
    config = StackConfig(home=tmp_path)
    assert service_argv(config, "scheduler") == preloaded_airflow("scheduler")
    assert service_argv(config, "dag-processor") == preloaded_airflow("dag-processor")
    env = stack_env(config, f"sqlite:///{tmp_path / 'airflow.db'}")
    done = subprocess.run(
        preloaded_airflow("version"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("3.")


def test_the_preload_leaves_the_children_asset_handlers_and_no_threads(tmp_path: Path) -> None:
    """What the forked task and parse processes inherit: providers' asset URI handlers already
    discovered (else each child discovers them again), and no thread (a fork loses them)."""
    env = stack_env(StackConfig(home=tmp_path), f"sqlite:///{tmp_path / 'airflow.db'}")
    # The private dict, not the `asset_uri_handlers` property: reading that would discover.
    probe = (
        "import importlib, threading\n"
        "import airflow.__main__\n"
        "from devstack.services import AIRFLOW_PRELOAD\n"
        "for name in AIRFLOW_PRELOAD:\n"
        "    importlib.import_module(name)\n"
        "from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime\n"
        "print(sorted(ProvidersManagerTaskRuntime()._asset_uri_handlers))\n"
        "print([thread.name for thread in threading.enumerate()])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={**env, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{env['PYTHONPATH']}"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    handlers, threads = done.stdout.strip().splitlines()[-2:]
    assert "'s3'" in handlers and "'file'" in handlers
    assert threads == "['MainThread']"


def test_the_spark_server_jvm_options_default_and_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = StackConfig(home=tmp_path)
    monkeypatch.delenv("CHURNFLOW_SPARK_JAVA_OPTIONS", raising=False)
    default = " ".join(spark_connect_argv(config))
    assert SPARK_JAVA_OPTIONS in default and "-Dderby.system.home=" in default
    monkeypatch.setenv("CHURNFLOW_SPARK_JAVA_OPTIONS", "-XX:+UseSerialGC")
    custom = " ".join(spark_connect_argv(config))
    assert "-XX:+UseSerialGC" in custom and "TieredStopAtLevel" not in custom


def test_the_stack_uses_the_lake_the_user_set(tmp_path: Path) -> None:
    own = tmp_path / "landing"
    (tmp_path / "home").mkdir()
    for value in (str(own), own.as_uri()):
        config = StackConfig.from_env(
            {"CHURNFLOW_HOME": str(tmp_path / "home"), "CHURNFLOW_LAKE": value}
        )
        assert config.lake == own
        assert stack_env(config, "postgresql://unused")["CHURNFLOW_LAKE"] == str(own)
    default = StackConfig.from_env({"CHURNFLOW_HOME": str(tmp_path / "home")})
    assert default.lake == tmp_path / "home" / "lake"


def test_files_holding_secrets_are_created_private(tmp_path: Path) -> None:
    config = StackConfig(home=tmp_path / "home")
    env = stack_env(config, "postgresql://unused")
    write_env_file(config, env)
    for path in (tmp_path / "home" / "secrets.json", tmp_path / "home" / "env.sh"):
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_the_demo_stack_creates_its_dags_paused(tmp_path: Path) -> None:
    """Unpaused at creation, the scheduler ran yesterday before the demo loaded its history."""
    from devstack.demo import paused_at_creation

    config = StackConfig(home=tmp_path, extra_env={"CHURNFLOW_SEED": "7"})
    plain = stack_env(config, "postgresql://db")
    demo = stack_env(paused_at_creation(config), "postgresql://db")
    assert plain["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"
    assert demo["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "True"
    assert demo["CHURNFLOW_SEED"] == "7"  # the caller's extra settings stay
