"""The step factory: every unit of work is declared once and runs under either runner.

A step is an argv of the task-side CLI plus an image key and a resource profile. With
`CHURNFLOW_RUNNER=local` it becomes a subprocess on the worker; with `kubernetes` a pod from
the step's image. The argv is the same in both, so there is one code path for the work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk import BaseOperator

from churnflow_airflow.config import Runner, StepSettings, load_settings
from churnflow_airflow.profiles import get_profile
from churnflow_airflow.step_docs import step_doc_md

IMAGES = ("spark", "train")


@dataclass(frozen=True)
class SecretRef:
    """An environment variable filled from a key of a Kubernetes Secret.

    Under the local runner the variable is read from the worker's own environment instead
    (and only the variables a step names reach it), so the value never appears in a DAG file
    or a rendered pod spec.
    """

    env_var: str
    key: str
    secret: str | None = None  # defaults to the deployment's CHURNFLOW_K8S_SECRET


# What every step of a deployment with an object-store lake reads the lake with: the keys of
# the deployment's Secret (include/k8s/secrets.example.yaml), as the standard AWS variables.
OBJECT_STORE_SECRETS = (
    SecretRef("AWS_ACCESS_KEY_ID", key="aws-access-key-id"),
    SecretRef("AWS_SECRET_ACCESS_KEY", key="aws-secret-access-key"),
)


def lake_secrets(settings: StepSettings) -> tuple[SecretRef, ...]:
    """The secret references a step needs to reach the lake (none for a folder lake)."""
    keys = settings.object_store_lake and settings.lake_keys_from_secret
    return OBJECT_STORE_SECRETS if keys else ()


@dataclass(frozen=True)
class Step:
    task_id: str
    image: str
    argv: Sequence[str]
    profile: str = "cpu"
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: Sequence[SecretRef] = ()

    def __post_init__(self) -> None:
        if self.image not in IMAGES:
            raise ValueError(f"step {self.task_id!r}: unknown image {self.image!r}; use {IMAGES}")
        if not self.argv:
            raise ValueError(f"step {self.task_id!r}: argv is empty")
        get_profile(self.profile)


def step(
    task_id: str,
    *,
    image: str,
    argv: Sequence[str],
    profile: str = "cpu",
    env: Mapping[str, str] | None = None,
    secrets: Sequence[SecretRef] = (),
    settings: StepSettings | None = None,
    **operator_kwargs: Any,
) -> BaseOperator:
    """Declare a step; the configured runner decides what operator it becomes.

    `argv` and `env` values are Jinja templates (`{{ ds }}`, `{{ params.name }}`). Both runners
    give the step the same declared environment: the deployment's lake and MLflow settings
    (and the lake's AWS region and endpoint), `SPARK_REMOTE` for a `spark` step when
    CHURNFLOW_SPARK_REMOTE is set, then `env`, then the secret references: the lake's
    credentials for an object-store lake, then `secrets`. A `spark` or `gpu` step waits in the
    pool that CHURNFLOW_SPARK_POOL or CHURNFLOW_GPU_POOL names (unset: Airflow's default_pool).
    Extra keyword arguments go to the operator (e.g. `outlets`, `execution_timeout`,
    `trigger_rule`, `pool`, `doc_md` to replace the generated docs) and win over the defaults.
    """
    settings = settings or load_settings()
    declared = {**settings.pod_env, **settings.profile_env(profile), **(env or {})}
    named = {ref.env_var for ref in secrets}
    lake_refs = tuple(ref for ref in lake_secrets(settings) if ref.env_var not in named)
    spec = Step(task_id, image, tuple(argv), profile, declared, (*lake_refs, *secrets))
    doc_md = step_doc_md(spec.argv, runner=settings.runner.value, image=image, profile=profile)
    if doc_md is not None:
        operator_kwargs.setdefault("doc_md", doc_md)
    pool = settings.pool(profile)
    if pool is not None:
        operator_kwargs.setdefault("pool", pool)
    if settings.runner is Runner.KUBERNETES:
        from churnflow_airflow.kubernetes_runner import pod_operator

        return pod_operator(spec, settings, **operator_kwargs)
    from churnflow_airflow.local_runner import LocalStepOperator

    return LocalStepOperator(
        task_id=spec.task_id,
        argv=spec.argv,
        env=spec.env,
        secrets=[ref.env_var for ref in spec.secrets],
        **operator_kwargs,
    )
