"""Airflow-side settings, read from the environment when DAG files are parsed.

Reading a few environment variables is all that parsing may cost. Values that differ per
deployment (registry, tag, namespace) live here so DAG files never carry them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class Runner(StrEnum):
    LOCAL = "local"
    KUBERNETES = "kubernetes"


class ConfigurationError(ValueError):
    """A setting that cannot work; raised at parse time so the DAG shows an import error."""


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _seconds(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError as err:
        raise ConfigurationError(f"{name}={value!r} must be a whole number of seconds") from err


@dataclass(frozen=True)
class StepSettings:
    runner: Runner
    image_registry: str
    image_tag: str
    namespace: str
    service_account: str
    secret_name: str
    kubernetes_conn_id: str
    deferrable: bool
    template_dir: Path
    lake: str
    mlflow_tracking_uri: str
    landing_timeout_s: int
    landing_poke_interval_s: int
    pod_env: dict[str, str] = field(default_factory=dict)

    def image(self, key: str) -> str:
        """Full image reference for an image key; a pinned tag is required, never `latest`."""
        if not self.image_tag or self.image_tag == "latest":
            raise ConfigurationError(
                "CHURNFLOW_IMAGE_TAG must name a released image tag (e.g. 0.1.0) for the "
                f"kubernetes runner; got {self.image_tag!r}"
            )
        prefix = f"{self.image_registry.rstrip('/')}/" if self.image_registry else ""
        return f"{prefix}churnflow-{key}:{self.image_tag}"


def load_settings() -> StepSettings:
    raw_runner = os.environ.get("CHURNFLOW_RUNNER", Runner.LOCAL.value).strip().lower()
    try:
        runner = Runner(raw_runner)
    except ValueError as err:
        choices = "|".join(r.value for r in Runner)
        raise ConfigurationError(f"CHURNFLOW_RUNNER={raw_runner!r}; use {choices}") from err
    lake = os.environ.get("CHURNFLOW_LAKE")
    if lake is None:
        if runner is Runner.KUBERNETES:
            raise ConfigurationError(
                "CHURNFLOW_LAKE must be set for the kubernetes runner: pods cannot see the "
                "worker's local folder (e.g. s3a://bucket/churnflow)"
            )
        lake = str(REPO_ROOT / ".churnflow" / "lake")
    mlflow_uri = os.environ.get("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    return StepSettings(
        runner=runner,
        image_registry=os.environ.get("CHURNFLOW_IMAGE_REGISTRY", ""),
        image_tag=os.environ.get("CHURNFLOW_IMAGE_TAG", ""),
        namespace=os.environ.get("CHURNFLOW_K8S_NAMESPACE", "churnflow"),
        service_account=os.environ.get("CHURNFLOW_K8S_SERVICE_ACCOUNT", "churnflow-task"),
        secret_name=os.environ.get("CHURNFLOW_K8S_SECRET", "churnflow-secrets"),
        kubernetes_conn_id=os.environ.get("CHURNFLOW_K8S_CONN_ID", "kubernetes_default"),
        deferrable=_flag("CHURNFLOW_K8S_DEFERRABLE", default=False),
        template_dir=Path(
            os.environ.get("CHURNFLOW_K8S_TEMPLATE_DIR", str(REPO_ROOT / "include" / "k8s"))
        ),
        lake=lake,
        mlflow_tracking_uri=mlflow_uri,
        landing_timeout_s=_seconds("CHURNFLOW_LANDING_TIMEOUT", 6 * 3600),
        landing_poke_interval_s=_seconds("CHURNFLOW_LANDING_POKE_INTERVAL", 300),
        pod_env={"CHURNFLOW_LAKE": lake, "MLFLOW_TRACKING_URI": mlflow_uri},
    )
