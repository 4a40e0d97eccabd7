"""Resource profiles: the only place pod sizes are written down.

A step names a profile instead of numbers, so sizes stay consistent across DAGs and are
changed in one place. Pod-level settings of a profile (security context, GPU node selector
and toleration, scratch volumes) are in its template, `include/k8s/pod-template-<name>.yaml`.
The Airflow pool a profile's steps wait in is the deployment's to name (`CHURNFLOW_SPARK_POOL`,
`CHURNFLOW_GPU_POOL` in `churnflow_airflow.config`): a pool must exist before a task names it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str
    gpus: int = 0

    @property
    def template_name(self) -> str:
        return f"pod-template-{self.name}.yaml"

    def requests(self) -> dict[str, str]:
        requests = {"cpu": self.cpu_request, "memory": self.memory_request}
        if self.gpus:  # an extended resource: its request must equal its limit
            requests["nvidia.com/gpu"] = str(self.gpus)
        return requests

    def limits(self) -> dict[str, str]:
        limits = {"cpu": self.cpu_limit, "memory": self.memory_limit}
        if self.gpus:
            limits["nvidia.com/gpu"] = str(self.gpus)
        return limits


PROFILES: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        Profile(
            "cpu", cpu_request="250m", memory_request="512Mi", cpu_limit="1", memory_limit="1Gi"
        ),
        Profile("spark", cpu_request="2", memory_request="6Gi", cpu_limit="4", memory_limit="8Gi"),
        Profile(
            "gpu",
            cpu_request="4",
            memory_request="16Gi",
            cpu_limit="8",
            memory_limit="24Gi",
            gpus=1,
        ),
    )
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown resource profile {name!r}; known: {', '.join(PROFILES)}"
        ) from None
