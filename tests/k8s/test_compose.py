"""The docker-compose stack, checked as data and by `docker-compose config` where that binary
exists; nothing here needs a Docker engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.k8s.deploy_files import (
    AIRFLOW_SERVICES,
    COMPOSE_FILE,
    COMPOSE_TOP_LEVEL_KEYS,
    ONE_SHOT_SERVICES,
    REFERENCE,
    REPO,
    SECRET_NAME,
    URL_PASSWORD,
    WHOLE_REFERENCE,
    composed_mapping_get,
    depends_on_of,
    env_example,
    environment_of,
    load_compose,
    merged_nodes,
    resolve_defaults,
)

# --- docker-compose ------------------------------------------------------------------------


def test_compose_file_uses_only_top_level_keys_docker_compose_1_29_accepts() -> None:
    compose = load_compose()
    unknown = {key for key in compose if key not in COMPOSE_TOP_LEVEL_KEYS}
    unknown = {key for key in unknown if not key.startswith("x-")}
    assert not unknown, f"docker-compose 1.29 rejects top-level keys {sorted(unknown)}"
    assert set(compose["services"]) >= {"postgres", "mlflow", *AIRFLOW_SERVICES}


def test_every_compose_image_is_pinned_to_an_explicit_non_latest_tag() -> None:
    for name, service in load_compose()["services"].items():
        image = resolve_defaults(service["image"])
        assert "$" not in image, f"{name}: image {image!r} has a variable without a default"
        if "@sha256:" in image:
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} uses the latest tag"
    assert env_example().get("CHURNFLOW_IMAGE_TAG", "0") != "latest"


def test_every_airflow_service_merges_the_shared_x_airflow_common_anchor() -> None:
    root = yaml.compose(COMPOSE_FILE.read_text())
    common = composed_mapping_get(root, "x-airflow-common")
    services = composed_mapping_get(root, "services")
    users = set()
    for key_node, service_node in services.value:
        if any(node is common for node in merged_nodes(service_node)):
            users.add(key_node.value)
    assert users == set(AIRFLOW_SERVICES)


def test_airflow_services_override_none_of_the_shared_settings() -> None:
    compose = load_compose()
    common = compose["x-airflow-common"]
    for name in AIRFLOW_SERVICES:
        service = compose["services"][name]
        for key, value in common.items():
            assert service[key] == value, f"{name} overrides the shared {key!r}"


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
    lake_mounts = [
        volume
        for volume in compose["x-airflow-common"]["volumes"]
        if volume.split(":")[1] == env["CHURNFLOW_LAKE"]
    ]
    assert lake_mounts, "CHURNFLOW_LAKE is not on a volume"
    assert lake_mounts[0].split(":")[0] in compose["volumes"]


def test_every_long_running_compose_service_has_a_healthcheck() -> None:
    for name, service in load_compose()["services"].items():
        if name in ONE_SHOT_SERVICES:
            assert service.get("restart") == "no", f"{name} is one-shot but restarts"
            continue
        healthcheck = service.get("healthcheck") or {}
        assert healthcheck.get("test"), f"{name} runs for good but has no healthcheck"
        assert not healthcheck.get("disable"), f"{name} disables its healthcheck"


def test_compose_holds_no_literal_secret_values() -> None:
    urls_with_password = 0
    for name, service in load_compose()["services"].items():
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


def test_compose_depends_on_targets_exist_and_can_meet_their_condition() -> None:
    services = load_compose()["services"]
    for name, service in services.items():
        for target, condition in depends_on_of(service).items():
            assert target in services, f"{name} depends on unknown service {target!r}"
            if condition == "service_healthy":
                assert services[target].get("healthcheck"), (
                    f"{name} waits for {target} to be healthy but it has no healthcheck"
                )
            if condition == "service_completed_successfully":
                assert target in ONE_SHOT_SERVICES, f"{name} waits for {target} to exit"


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
