"""Deployment files: the docker-compose stack, the Kubernetes RBAC and Secret example, and the
Dockerfiles. Nothing here needs Docker or a cluster: the compose file is checked as data (and
by `docker-compose config` where that binary exists), the Kubernetes documents against the
official schemas that kubernetes-validate ships, and the Dockerfiles as text.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
RBAC_FILE = REPO / "include" / "k8s" / "rbac.yaml"
SECRET_EXAMPLE_FILE = REPO / "include" / "k8s" / "secrets.example.yaml"
DOCKERFILES = {
    name: REPO / "images" / name / "Dockerfile" for name in ("airflow", "spark", "train")
}
TASK_IMAGES = ("spark", "train")

AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)
ONE_SHOT_SERVICES = {"airflow-init"}
NAMESPACE = "churnflow"

# Compose top-level keys that Debian's docker-compose 1.29 accepts (it rejects `name:`).
COMPOSE_TOP_LEVEL_KEYS = {"version", "services", "networks", "volumes", "secrets", "configs"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|TOKEN", re.IGNORECASE)
REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>[^}]*)\}")
WHOLE_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*[^}]*\}$")
# The password part may be a `${VAR:?message}` reference, whose message has spaces.
URL_PASSWORD = re.compile(r"://[^:/@\s]+:(?P<password>[^@]+)@")


# --- helpers -------------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def env_example() -> dict[str, str]:
    """The variables that .env.example sets (KEY=VALUE lines, comments skipped)."""
    values = {}
    for raw in ENV_EXAMPLE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def resolve_defaults(text: str) -> str:
    """Replace `${VAR:-default}` / `${VAR-default}` by the default, as compose does when unset."""

    def default(match: re.Match[str]) -> str:
        rest = match["rest"]
        for separator in (":-", "-"):
            if rest.startswith(separator):
                return rest[len(separator) :]
        return match[0]

    return REFERENCE.sub(default, text)


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whichever of the two compose forms it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {name: "" if value is None else str(value) for name, value in env.items()}


def depends_on_of(service: dict[str, Any]) -> dict[str, str]:
    """depends_on as {target: condition}, whichever of the two compose forms it uses."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def composed_mapping_get(node: yaml.MappingNode, key: str) -> yaml.Node:
    for key_node, value_node in node.value:
        if key_node.value == key:
            return value_node
    raise KeyError(key)


def merged_nodes(node: yaml.MappingNode) -> list[yaml.Node]:
    """The nodes a mapping merges in with `<<:` (one alias or a list of them)."""
    merged = [value for key, value in node.value if key.tag == "tag:yaml.org,2002:merge"]
    flat: list[yaml.Node] = []
    for value in merged:
        flat.extend(value.value if isinstance(value, yaml.SequenceNode) else [value])
    return flat


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def env_assignments(arguments: str) -> dict[str, str]:
    """The KEY=VALUE pairs of one ENV instruction (the form every Dockerfile here uses)."""
    return dict(pair.split("=", 1) for pair in arguments.split() if "=" in pair)


def newest_kubernetes_versions(count: int = 2) -> list[str]:
    """The newest schema versions that the installed kubernetes-validate ships.

    `all_versions` lists its schema folders, each version twice (plain and strict).
    """
    return sorted(set(all_versions()), key=Version)[-count:]


def k8s_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


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


# --- Kubernetes ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", newest_kubernetes_versions())
@pytest.mark.parametrize("path", [RBAC_FILE, SECRET_EXAMPLE_FILE], ids=lambda path: path.name)
def test_k8s_manifests_are_valid_for_the_newest_kubernetes_versions(
    path: Path, version: str
) -> None:
    documents = k8s_documents(path)
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)
        assert document["metadata"]["namespace"] == NAMESPACE


def test_airflow_service_account_may_only_manage_pods_in_its_namespace() -> None:
    documents = k8s_documents(RBAC_FILE)
    by_kind = {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents}
    assert ("ServiceAccount", "churnflow-airflow") in by_kind
    [role] = [doc for doc in documents if doc["kind"] == "Role"]
    granted = {
        (resource, verb)
        for rule in role["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        if rule["apiGroups"] == [""]
    }
    pod_verbs = {"create", "get", "list", "watch", "delete", "patch"}
    expected = {("pods", verb) for verb in pod_verbs}
    expected |= {("pods/log", "get"), ("pods/log", "list")}
    expected |= {("events", "list"), ("events", "watch")}
    assert expected <= granted
    # Nothing execs into a step pod: no XCom sidecar (do_xcom_push=False), no istio.
    assert not any(resource == "pods/exec" for resource, _ in granted)
    assert all(rule["apiGroups"] == [""] for rule in role["rules"])
    assert not any("secrets" in rule["resources"] for rule in role["rules"])
    assert not any("*" in rule["verbs"] + rule["resources"] for rule in role["rules"])
    assert not any(doc["kind"].startswith("Cluster") for doc in documents)
    [binding] = [doc for doc in documents if doc["kind"] == "RoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "churnflow-airflow", "namespace": NAMESPACE}
    ]


def test_task_service_account_gets_no_token_and_no_role() -> None:
    documents = k8s_documents(RBAC_FILE)
    [task] = [
        doc
        for doc in documents
        if doc["kind"] == "ServiceAccount" and doc["metadata"]["name"] == "churnflow-task"
    ]
    assert task["automountServiceAccountToken"] is False
    bound = [
        subject["name"]
        for doc in documents
        if doc["kind"] in {"RoleBinding", "ClusterRoleBinding"}
        for subject in doc["subjects"]
    ]
    assert "churnflow-task" not in bound


def test_example_secret_holds_only_placeholder_values() -> None:
    [secret] = k8s_documents(SECRET_EXAMPLE_FILE)
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["name"] == "churnflow-secrets"
    assert "data" not in secret, "use stringData so nobody mistakes base64 for protection"
    assert set(secret["stringData"]) == {
        "slack-token",
        "aws-access-key-id",
        "aws-secret-access-key",
        "mlflow-tracking-password",
    }
    for key, value in secret["stringData"].items():
        assert value.startswith("PLACEHOLDER"), f"{key} looks like a real value"
    assert "kubectl" in SECRET_EXAMPLE_FILE.read_text()


# --- Dockerfiles ---------------------------------------------------------------------------


@pytest.mark.parametrize("image", DOCKERFILES)
def test_dockerfile_base_image_is_pinned_to_an_explicit_non_latest_tag(image: str) -> None:
    instructions = dockerfile_instructions(DOCKERFILES[image])
    bases = [arguments.split()[0] for keyword, arguments in instructions if keyword == "FROM"]
    assert bases, f"{image}: no FROM"
    for base in bases:
        assert "$" not in base, f"{image}: FROM {base} hides the tag in a build argument"
        if "@sha256:" in base:
            continue
        name, _, tag = base.rpartition(":")
        assert name and "/" not in tag, f"{image}: FROM {base} has no tag"
        assert tag != "latest", f"{image}: FROM {base} uses the latest tag"
        assert re.match(r"^\d+\.\d+\.\d+", tag), f"{image}: FROM {base} is not a patch release"


@pytest.mark.parametrize("image", DOCKERFILES)
def test_dockerfile_runs_as_a_numeric_non_root_user(image: str) -> None:
    users = [
        arguments
        for keyword, arguments in dockerfile_instructions(DOCKERFILES[image])
        if keyword == "USER"
    ]
    assert users, f"{image}: no USER, so it runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), f"{image}: USER {users[-1]} is not numeric (runAsNonRoot needs a uid)"
    assert int(uid) != 0, f"{image}: runs as root"


@pytest.mark.parametrize("image", TASK_IMAGES)
def test_task_image_puts_the_churnflow_command_on_path(image: str) -> None:
    """The pod's command is `churnflow ...`: the script must land in a PATH directory."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "churnflow" in scripts
    instructions = dockerfile_instructions(DOCKERFILES[image])
    installs = [
        arguments
        for keyword, arguments in instructions
        if keyword == "RUN" and re.search(r"pip install [^&]*/build/churnflow", arguments)
    ]
    assert installs, f"{image}: the churnflow package is not installed"
    # pip into the image's system Python puts console scripts in /usr/local/bin.
    assert not any("--target" in run or "--user" in run for run in installs)
    env: dict[str, str] = {}
    for keyword, arguments in instructions:
        if keyword == "ENV":
            env.update(env_assignments(arguments))
    assert "/usr/local/bin" in env["PATH"].split(":")
    entrypoints = [arguments for keyword, arguments in instructions if keyword == "ENTRYPOINT"]
    assert entrypoints and entrypoints[-1] == "[]", f"{image}: the pod's command must be argv"


@pytest.mark.parametrize("image", TASK_IMAGES)
def test_task_image_is_ready_for_a_read_only_root_filesystem(image: str) -> None:
    env: dict[str, str] = {}
    workdirs = []
    for keyword, arguments in dockerfile_instructions(DOCKERFILES[image]):
        if keyword == "ENV":
            env.update(env_assignments(arguments))
        if keyword == "WORKDIR":
            workdirs.append(arguments)
    assert env["HOME"] == "/tmp"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert workdirs[-1] == "/tmp"


@pytest.mark.parametrize("image", ["airflow", "spark"])
def test_cpu_images_take_torch_from_the_pytorch_cpu_index(image: str) -> None:
    text = " ".join(arguments for _, arguments in dockerfile_instructions(DOCKERFILES[image]))
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    assert "torch.version.cuda is None" in text


def test_train_image_installs_cuda_torch_with_its_dependencies() -> None:
    runs = [
        arguments
        for keyword, arguments in dockerfile_instructions(DOCKERFILES["train"])
        if keyword == "RUN"
    ]
    steps = [step.strip() for run in runs for step in run.split("&&")]
    torch_installs = [step for step in steps if "grep '^torch=='" in step and "install" in step]
    assert torch_installs, "train: torch is not installed on its own"
    assert all("--no-deps" not in step and "whl/cpu" not in step for step in torch_installs)
    env: dict[str, str] = {}
    for keyword, arguments in dockerfile_instructions(DOCKERFILES["train"]):
        if keyword == "ENV":
            env.update(env_assignments(arguments))
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"


@pytest.mark.parametrize("image", TASK_IMAGES)
def test_task_image_records_the_git_commit_it_was_built_from(image: str) -> None:
    """The task side tags its MLflow runs with CHURNFLOW_GIT_COMMIT (and CHURNFLOW_IMAGE)."""
    instructions = dockerfile_instructions(DOCKERFILES[image])
    [arg] = [i for i, (kw, args) in enumerate(instructions) if kw == "ARG" and "GIT_COMMIT" in args]
    envs = {i: env_assignments(args) for i, (kw, args) in enumerate(instructions) if kw == "ENV"}
    [set_at] = [i for i, env in envs.items() if env.get("CHURNFLOW_GIT_COMMIT") == "$GIT_COMMIT"]
    assert set_at > arg
    # After every layer that installs something, so a new commit rebuilds none of them.
    assert not any(kw in ("RUN", "COPY") for kw, _ in instructions[arg:])
    makefile = (REPO / "Makefile").read_text()
    assert "--build-arg GIT_COMMIT=$$(git rev-parse HEAD)" in makefile
