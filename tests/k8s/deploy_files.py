"""What the deployment-file tests share: paths, the compose file as data, Dockerfile
instructions and the Kubernetes schema versions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from kubernetes_validate.utils import all_versions
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
RBAC_FILE = REPO / "include" / "k8s" / "rbac.yaml"
SECRET_EXAMPLE_FILE = REPO / "include" / "k8s" / "secrets.example.yaml"
K8S_DIR = REPO / "include" / "k8s"
K8S_MANIFESTS = sorted(K8S_DIR.glob("*.yaml"))
SPARK_CONNECT_FILE = K8S_DIR / "spark-connect.yaml"
LAKE_PVC_FILE = K8S_DIR / "lake-pvc.yaml"
PYPROJECT_FILE = REPO / "pyproject.toml"
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


def dockerfile_stages(path: Path) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, in order; each list starts with its FROM."""
    stages: list[list[tuple[str, str]]] = []
    for keyword, arguments in dockerfile_instructions(path):
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, arguments))
    return stages


def stage_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    """What the ENV instructions of one stage set, later ones winning."""
    env: dict[str, str] = {}
    for keyword, arguments in stage:
        if keyword == "ENV":
            env.update(env_assignments(arguments))
    return env


def spark_defaults(text: str) -> dict[str, str]:
    """A spark-defaults.conf as Spark reads it: `key value` lines, `#` comments skipped."""
    settings = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, value = line.split(None, 1)
            settings[key] = value.strip()
    return settings


LOCK = REPO / "requirements.txt"


def lock_version(package: str) -> str:
    """The version the lock pins for `package` (a lower-case distribution name)."""
    for line in LOCK.read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package:
            return version.split()[0]
    raise AssertionError(f"{package} is not pinned in {LOCK.name}")
