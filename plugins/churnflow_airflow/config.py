"""Airflow-side settings, read from the environment when DAG files are parsed.

Reading a few environment variables is all that parsing may cost. Values that differ per
deployment (registry, tag, namespace) live here so DAG files never carry them.

Where the task pods find the lake and Spark (kubernetes runner):

- `CHURNFLOW_LAKE` an object store (`s3://` or `s3a://`): pods reach it over the network.
  Every step gets `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` by reference to the keys
  `aws-access-key-id` and `aws-secret-access-key` of the deployment's Secret
  (`CHURNFLOW_K8S_SECRET`), and `AWS_REGION` / `AWS_ENDPOINT_URL` from
  `CHURNFLOW_LAKE_AWS_REGION` / `CHURNFLOW_LAKE_AWS_ENDPOINT_URL` when those are set.
- `CHURNFLOW_LAKE` an absolute folder: pods share it only through a volume, so
  `CHURNFLOW_LAKE_PVC` must name a ReadWriteMany PersistentVolumeClaim
  (`include/k8s/lake-pvc.yaml`), which every pod mounts at that folder.
- `CHURNFLOW_SPARK_REMOTE` (`sc://host:15002`, e.g. the Spark Connect server of
  `include/k8s/spark-connect.yaml`): the pods of the `spark` profile get it as `SPARK_REMOTE`,
  so the Spark steps of a run share one engine; unset, each runs Spark in local mode in its pod.
  It needs the folder lake on the volume, mounted at the same path in the server: an
  object-store lake stages its output in the pod's own scratch volume, where a server in
  another pod cannot write.

Which Airflow pool a step waits in (either runner): `CHURNFLOW_SPARK_POOL` for the steps of the
`spark` profile, `CHURNFLOW_GPU_POOL` for those of the `gpu` profile (`include/helm/pools.json`
defines `spark` and `gpu`). Unset, a step takes Airflow's `default_pool`: a task that names a
pool the deployment lacks is never scheduled, so a pool is only named where it is created.

Any combination that cannot work is a ConfigurationError at parse time. The local runner
gives its steps the same declared env and secret names (read from the worker's environment,
`churnflow_airflow.step_env`). The Airflow side reads the lake too (landing sensors, reports):
with a folder lake, the Airflow workers mount the same claim at the same folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath

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
    landing_deferrable: bool
    pod_env: dict[str, str] = field(default_factory=dict)
    lake_pvc: str | None = None
    # An object-store lake's keys come from the Secret; False where pods get their identity
    # from the cluster (IRSA, workload identity, an instance profile) and need none.
    lake_keys_from_secret: bool = True
    spark_remote: str | None = None
    profile_pools: dict[str, str] = field(default_factory=dict)

    @property
    def object_store_lake(self) -> bool:
        return is_object_store(self.lake)

    @property
    def lake_mount_path(self) -> str | None:
        """Where the pods mount the lake's volume; None when the lake needs no volume."""
        return folder_path(self.lake) if self.lake_pvc else None

    def profile_env(self, profile: str) -> dict[str, str]:
        """What a step of `profile` adds to the deployment's env: Spark steps get the engine."""
        if profile == "spark" and self.spark_remote:
            return {"SPARK_REMOTE": self.spark_remote}
        return {}

    def pool(self, profile: str) -> str | None:
        """The Airflow pool of a step of `profile`; None: Airflow's default_pool."""
        return self.profile_pools.get(profile)

    def image(self, key: str) -> str:
        """Full image reference for an image key; a pinned tag is required, never `latest`."""
        if not self.image_tag or self.image_tag == "latest":
            raise ConfigurationError(
                "CHURNFLOW_IMAGE_TAG must name a released image tag (e.g. 0.1.0) for the "
                f"kubernetes runner; got {self.image_tag!r}"
            )
        prefix = f"{self.image_registry.rstrip('/')}/" if self.image_registry else ""
        return f"{prefix}churnflow-{key}:{self.image_tag}"


OBJECT_STORE_SCHEMES = ("s3://", "s3a://")


def is_object_store(lake: str) -> bool:
    """The Airflow side's copy of `churnflow.lake.is_object_store_uri` (plugins never import
    the task package); tests/plugins keep the two equal."""
    return lake.strip().lower().startswith(OBJECT_STORE_SCHEMES)


def lake_uri(lake: str) -> str:
    """Object-storage URI of the lake: a bare folder becomes file://, Hadoop's s3a:// is s3://."""
    if "://" not in lake:
        return f"file://{lake}"
    return lake.replace("s3a://", "s3://", 1)


def folder_path(lake: str) -> str:
    """The folder of a folder lake (a path or a `file://` URI), without a trailing slash."""
    path = lake.strip().removeprefix("file://")
    return str(PurePosixPath(path)) if path else path


def _optional(name: str) -> str | None:
    return os.environ.get(name, "").strip() or None


def _check_pod_lake(lake: str, pvc: str | None) -> None:
    """The lake must be one that every pod can reach: an object store, or a folder on a volume."""
    if is_object_store(lake):
        if pvc:
            raise ConfigurationError(
                f"CHURNFLOW_LAKE={lake!r} is an object store, which pods reach over the network; "
                f"unset CHURNFLOW_LAKE_PVC={pvc!r} (a volume is only for a folder lake)"
            )
        return
    if "://" in lake.strip().removeprefix("file://"):
        raise ConfigurationError(
            f"CHURNFLOW_LAKE={lake!r}: the kubernetes runner takes an object store "
            "(s3://bucket/prefix or s3a://bucket/prefix) or an absolute folder on the volume "
            "that CHURNFLOW_LAKE_PVC names"
        )
    if not pvc:
        raise ConfigurationError(
            f"CHURNFLOW_LAKE={lake!r} is a folder, and task pods cannot share a folder without "
            "a volume: set CHURNFLOW_LAKE_PVC to a ReadWriteMany PersistentVolumeClaim "
            "(include/k8s/lake-pvc.yaml), which every pod mounts at that folder, or use an "
            "object store (s3a://bucket/prefix)"
        )
    path = folder_path(lake)
    if not PurePosixPath(path).is_absolute() or path == "/":
        raise ConfigurationError(
            f"CHURNFLOW_LAKE_PVC={pvc!r} is mounted in every pod at the CHURNFLOW_LAKE folder, "
            f"so CHURNFLOW_LAKE must be an absolute folder path (e.g. /data/lake); got {lake!r}"
        )


def _lake_keys_from_secret() -> bool:
    value = os.environ.get("CHURNFLOW_LAKE_AWS_KEYS", "secret").strip().lower()
    if value not in ("secret", "none"):
        raise ConfigurationError(
            f"CHURNFLOW_LAKE_AWS_KEYS={value!r}: use `secret` (the keys aws-access-key-id and "
            "aws-secret-access-key of CHURNFLOW_K8S_SECRET) or `none` (the pods' own identity)"
        )
    return value == "secret"


def _check_spark_remote(remote: str, lake: str) -> None:
    if not remote.startswith("sc://"):
        raise ConfigurationError(
            f"CHURNFLOW_SPARK_REMOTE={remote!r} must be a Spark Connect address, "
            "e.g. sc://spark-connect.churnflow.svc:15002"
        )
    if is_object_store(lake):
        raise ConfigurationError(
            f"CHURNFLOW_SPARK_REMOTE={remote!r} cannot serve CHURNFLOW_LAKE={lake!r}: an "
            "object-store lake stages a step's output in its pod's scratch volume, where a "
            "Spark Connect server in another pod cannot write; unset CHURNFLOW_SPARK_REMOTE "
            "(Spark runs in each pod) or use a folder lake on CHURNFLOW_LAKE_PVC"
        )


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
                "worker's local folder (an object store, e.g. s3a://bucket/churnflow, or a "
                "folder on the volume that CHURNFLOW_LAKE_PVC names, e.g. /data/lake)"
            )
        lake = str(REPO_ROOT / ".churnflow" / "lake")
    mlflow_uri = os.environ.get("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    lake_pvc = _optional("CHURNFLOW_LAKE_PVC")
    spark_remote = _optional("CHURNFLOW_SPARK_REMOTE")
    if runner is Runner.KUBERNETES:
        _check_pod_lake(lake, lake_pvc)
        if spark_remote:
            _check_spark_remote(spark_remote, lake)
    pod_env = {"CHURNFLOW_LAKE": lake, "MLFLOW_TRACKING_URI": mlflow_uri}
    for name, setting in (
        ("AWS_REGION", "CHURNFLOW_LAKE_AWS_REGION"),
        ("AWS_ENDPOINT_URL", "CHURNFLOW_LAKE_AWS_ENDPOINT_URL"),
    ):
        value = _optional(setting)
        if value:
            pod_env[name] = value
    profile_pools = {
        profile: pool
        for profile, setting in (("spark", "CHURNFLOW_SPARK_POOL"), ("gpu", "CHURNFLOW_GPU_POOL"))
        if (pool := _optional(setting))
    }
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
        landing_deferrable=_flag("CHURNFLOW_LANDING_DEFERRABLE", default=True),
        pod_env=pod_env,
        lake_pvc=lake_pvc,
        spark_remote=spark_remote,
        profile_pools=profile_pools,
        lake_keys_from_secret=_lake_keys_from_secret(),
    )
