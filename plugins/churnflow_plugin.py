"""The churnflow Airflow plugin: the lake's reports (Data Docs) served by the api-server.

Airflow imports every `.py` file of the plugins folder as a module of its own; `.airflowignore`
keeps it out of `churnflow_airflow/`, which is imported as the package it is. The step
operators carry their Data Docs extra link themselves (Airflow 3 serialises operator links
with the DAG), so the plugin registers none.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from churnflow_airflow.data_docs import REPORTS_URL_PREFIX
from churnflow_airflow.reports import LazyReportsApp


class ChurnflowPlugin(AirflowPlugin):
    name = "churnflow"
    fastapi_apps = [
        {"app": LazyReportsApp(), "url_prefix": REPORTS_URL_PREFIX, "name": "churnflow reports"}
    ]
