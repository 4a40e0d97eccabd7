"""What an operator sees of a step in the UI: docs from the CLI's help, the day's Data Docs,
and run params reaching the step's environment under either runner."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from airflow.sdk import DAG, Param
from fastapi.testclient import TestClient

from churnflow_airflow.data_docs import SERVED_FOLDERS, DataDocsLink, ReportLink, reports_url
from churnflow_airflow.local_runner import LocalStepOperator
from churnflow_airflow.reports import create_app
from churnflow_airflow.step_docs import DOCS_FILE, command_docs, generate, render
from churnflow_airflow.steps import step
from tests.dags.conftest import KUBERNETES_ENV, environment, load_dagbag
from tests.k8s.test_pod_specs import render_pod


def test_the_checked_in_step_docs_match_the_cli_help() -> None:
    assert DOCS_FILE.read_text() == render(generate()), "stale: run `make step-docs`"


@pytest.mark.parametrize("env", [None, KUBERNETES_ENV], ids=["local", "kubernetes"])
def test_every_churnflow_step_documents_its_command_from_the_cli_help(env) -> None:
    steps = 0
    for dag in load_dagbag(env).dags.values():
        for task in dag.tasks:
            argv = getattr(task, "argv", None) or [
                *getattr(task, "cmds", ()),
                *getattr(task, "arguments", ()),
            ]
            if not argv or argv[0] != "churnflow":
                continue
            steps += 1
            help_text = command_docs()[argv[1]]["help"]
            assert f"**`churnflow {argv[1]}`**" in task.doc_md, task.task_id
            assert help_text.splitlines()[0] in task.doc_md, task.task_id
            assert "without retries" in task.doc_md
    assert steps >= 2


# --- Data Docs: the step names its page, the task links it -----------------------------------


def test_a_step_that_names_its_data_docs_gets_a_link_and_a_url_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example:8080")
    lake = tmp_path / "lake"
    page = lake / "reports" / "gx" / "silver_orders" / "validations" / "ds=2026-03-01.html"
    operator = LocalStepOperator(
        task_id="ingest_orders",
        argv=[sys.executable, "-c", f"print('ingest ds=2026-03-01: 12 rows; Data Docs: {page}')"],
        env={"CHURNFLOW_LAKE": str(lake)},
    )
    operator.execute({})
    expected = (
        "http://airflow.example:8080/churnflow/reports/gx/silver_orders/validations/"
        "ds=2026-03-01.html"
    )
    assert DataDocsLink().get_link(operator, ti_key=None) == expected
    assert f"Data Docs of this run: {expected}" in capsys.readouterr().out
    assert DataDocsLink.name in {link.name for link in operator.operator_extra_links}


def test_the_drift_step_s_report_becomes_the_task_s_report_link(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example:8080")
    lake = tmp_path / "lake"
    page = lake / "monitoring" / "drift" / "ds=2026-03-01" / "report.html"
    line = f"ds=2026-03-01: 2 of 17 feature columns drifted; Report: {page}"
    operator = LocalStepOperator(
        task_id="judge_drift",
        argv=[sys.executable, "-c", f"print({line!r})"],
        env={"CHURNFLOW_LAKE": str(lake)},
    )
    operator.execute({})
    expected = "http://airflow.example:8080/churnflow/monitoring/drift/ds=2026-03-01/report.html"
    assert ReportLink().get_link(operator, ti_key=None) == expected
    assert DataDocsLink().get_link(operator, ti_key=None) == ""


def test_the_served_folders_are_the_lake_s() -> None:
    from churnflow.lake import DRIFT, REPORTS

    assert set(SERVED_FOLDERS) == {REPORTS, DRIFT.split("/")[0]}


def test_a_step_that_names_no_data_docs_has_no_link() -> None:
    operator = LocalStepOperator(task_id="check_landing", argv=[sys.executable, "-c", "print(1)"])
    operator.execute({})
    assert DataDocsLink().get_link(operator, ti_key=None) == ""


def test_reports_of_an_object_store_lake_use_the_configured_site(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHURNFLOW_REPORTS_URL", "https://reports.example.com/churn")
    path = "s3a://lake/prod/reports/gx/customer_features/index.html"
    assert reports_url(path, "s3a://lake/prod") == (
        "https://reports.example.com/churn/reports/gx/customer_features/index.html"
    )
    assert reports_url("s3a://elsewhere/x.html", "s3a://lake/prod") is None
    silver = "s3a://lake/prod/silver/orders/ds=2026-03-01/part-0.parquet"
    assert reports_url(silver, "s3a://lake/prod") is None
    # The task side names pages s3a://…; the setting may say s3://.
    drift = "s3a://lake/prod/monitoring/drift/ds=2026-03-01/report.html"
    assert reports_url(drift, "s3://lake/prod/") == (
        "https://reports.example.com/churn/monitoring/drift/ds=2026-03-01/report.html"
    )


def test_the_reports_app_serves_only_files_under_the_reports_folder(tmp_path: Path) -> None:
    from airflow.api_fastapi.core_api.security import get_user

    lake = tmp_path / "lake"
    reports = lake / "reports"
    (reports / "gx" / "silver_orders").mkdir(parents=True)
    (reports / "gx" / "silver_orders" / "index.html").write_text("<html>silver</html>")
    drift = lake / "monitoring" / "drift" / "ds=2026-03-01"
    drift.mkdir(parents=True)
    (drift / "report.html").write_text("<html>drift</html>")
    (lake / "secret.txt").write_text("not a report")
    (lake / "silver").mkdir()
    (lake / "silver" / "orders.parquet").write_text("not a page")
    app = create_app(lake)
    app.dependency_overrides[get_user] = lambda: "someone logged in"
    client = TestClient(app)
    assert client.get("/reports/gx/silver_orders/").text == "<html>silver</html>"
    assert client.get("/reports/gx/silver_orders/index.html").status_code == 200
    assert client.get("/reports/../secret.txt").status_code == 404
    assert client.get("/reports/%2e%2e/secret.txt").status_code == 404
    assert client.post("/reports/gx/silver_orders/index.html").status_code == 405
    assert client.get("/monitoring/drift/ds=2026-03-01/report.html").text == "<html>drift</html>"
    assert client.get("/silver/orders.parquet").status_code == 404
    assert client.get("/monitoring/../secret.txt").status_code == 404


# --- run params reach the step's environment, under both runners ----------------------------

PARAMS = {"max_reject_share": Param(0.2, type="number", description="reject-share override")}
ENV = {"CHURNFLOW_MAX_REJECT_SHARE": "{{ params.max_reject_share }}"}


def test_a_run_param_reaches_a_local_step(capsys: pytest.CaptureFixture[str]) -> None:
    script = "import os; print('share', os.environ['CHURNFLOW_MAX_REJECT_SHARE'])"
    with DAG("probe_params", schedule=None, params=PARAMS) as dag:
        task = step("ingest_orders", image="spark", argv=[sys.executable, "-c", script], env=ENV)
    task.render_template_fields({"params": {"max_reject_share": 0.05}}, dag.get_template_env())
    task.execute({})
    assert "share 0.05" in capsys.readouterr().out


def test_a_run_param_reaches_a_pod_step() -> None:
    with environment(KUBERNETES_ENV), DAG("probe_params", schedule=None, params=PARAMS):
        task = step("ingest_orders", image="spark", argv=["churnflow", "--version"], env=ENV)
        pod = render_pod(task, params={"max_reject_share": 0.05})
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["CHURNFLOW_MAX_REJECT_SHARE"] == "0.05"
    assert env["CHURNFLOW_LAKE"] == KUBERNETES_ENV["CHURNFLOW_LAKE"]
