"""A small client of Airflow's REST API (v2), used by the demo and the end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import requests

TERMINAL_STATES = frozenset({"success", "failed"})


class AirflowApiError(RuntimeError):
    pass


@dataclass
class AirflowClient:
    base_url: str
    username: str
    password: str
    _token: str | None = field(default=None, init=False, repr=False)

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            response = requests.post(
                f"{self.base_url}/auth/token",
                json={"username": self.username, "password": self.password},
                timeout=30,
            )
            if response.status_code >= 300:
                raise AirflowApiError(f"login as {self.username} failed: {response.text}")
            self._token = response.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = requests.request(
            method, f"{self.base_url}/api/v2{path}", headers=self._headers(), timeout=60, **kwargs
        )
        if response.status_code == 401:  # token expired: log in again once
            self._token = None
            response = requests.request(
                method,
                f"{self.base_url}/api/v2{path}",
                headers=self._headers(),
                timeout=60,
                **kwargs,
            )
        if response.status_code >= 300:
            raise AirflowApiError(f"{method} {path}: HTTP {response.status_code}: {response.text}")
        return response.json() if response.content else None

    def wait_for_dag(self, dag_id: str, timeout_s: float = 180.0) -> dict[str, Any]:
        """Wait until the dag-processor has parsed `dag_id`; raise with its import errors if not."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.request("GET", f"/dags/{dag_id}")
            except AirflowApiError:
                if time.monotonic() > deadline:
                    errors = self.request("GET", "/importErrors").get("import_errors", [])
                    raise AirflowApiError(
                        f"DAG {dag_id} not parsed after {timeout_s:.0f} s; import errors: {errors}"
                    ) from None
                time.sleep(2)

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def create_backfill(
        self,
        dag_id: str,
        from_date: str,
        to_date: str,
        *,
        max_active_runs: int = 4,
        reprocess_behavior: str = "failed",
        dag_run_conf: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Backfill [from_date, to_date]; by default failed runs of the range are run again
        (`completed`: every run of the range); `dag_run_conf` becomes each run's params."""
        body = {
            "dag_id": dag_id,
            "from_date": f"{from_date}T00:00:00Z",
            "to_date": f"{to_date}T00:00:00Z",
            "max_active_runs": max_active_runs,
            "reprocess_behavior": reprocess_behavior,
            "run_backwards": False,
            "dag_run_conf": dag_run_conf or {},
        }
        deadline = time.monotonic() + 120
        while True:
            try:
                return self.request("POST", "/backfills", json=body)
            except AirflowApiError as err:
                # A backfill that just ended blocks a new one for a few seconds (TRAPS.md).
                if "AlreadyRunningBackfill" not in str(err) and "409" not in str(err):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(3)

    def wait_for_backfill(self, backfill_id: int, timeout_s: float = 900.0) -> dict[str, Any]:
        """The backfill once it has completed (every run of it finished)."""
        deadline = time.monotonic() + timeout_s
        while True:
            backfill = self.request("GET", f"/backfills/{backfill_id}")
            if backfill.get("completed_at"):
                return backfill
            if time.monotonic() > deadline:
                raise AirflowApiError(f"backfill {backfill_id} not completed: {backfill}")
            time.sleep(3)

    def dag_runs(self, dag_id: str, from_date: str, to_date: str) -> list[dict[str, Any]]:
        params = {
            "logical_date_gte": f"{from_date}T00:00:00Z",
            "logical_date_lte": f"{to_date}T00:00:00Z",
            "limit": 1000,
            "order_by": "logical_date",
        }
        return self.request("GET", f"/dags/{dag_id}/dagRuns", params=params)["dag_runs"]

    def all_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Every run of a DAG, scheduled and manual (manual ones may lack a logical date)."""
        params = {"limit": 1000, "order_by": "run_after"}
        return self.request("GET", f"/dags/{dag_id}/dagRuns", params=params)["dag_runs"]

    def trigger(
        self, dag_id: str, conf: dict[str, Any], logical_date: str | None = None
    ) -> dict[str, Any]:
        """A manual run with `conf` as its params; without a logical date by default (Airflow 3)."""
        body = {"logical_date": logical_date, "conf": conf}
        return self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        return self.request("GET", path)["task_instances"]


def count_states(runs: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in runs:
        counts[run["state"]] = counts.get(run["state"], 0) + 1
    return counts
