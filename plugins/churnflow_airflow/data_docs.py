"""The Data Docs of a step's day, one click from its task in the Airflow UI.

A step that checks data prints `Data Docs: <path>`, the page of the day under
`<lake>/reports/`. The step's operator (either runner) watches its output for that line and
turns the path into an http URL: `CHURNFLOW_REPORTS_URL` when set (production: wherever the
lake's reports are served), otherwise the churnflow plugin's page on the Airflow api-server
(`/churnflow/reports/...`, see `churnflow_airflow.reports`). The URL is logged as a line of its
own and becomes the task's **Data Docs** extra link (Airflow 3 stores the link when the task
finishes, passed or failed).
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

REPORTS_URL_PREFIX = "/churnflow"
_DATA_DOCS = re.compile(r"Data Docs: (\S+)")


def local_folder(lake: str) -> str | None:
    """The lake's local folder, or None for an object-store lake."""
    root = lake.removeprefix("file://")
    return None if "://" in root else root.rstrip("/")


def reports_url(path: str, lake: str) -> str | None:
    """The http URL of a Data Docs path under `<lake>/reports/`; None for any other path."""
    folder = local_folder(lake)
    if folder is None:
        root = f"{lake.rstrip('/')}/reports/"
    else:  # the step prints a resolved path; the lake setting may be relative or a link
        root = f"{os.path.realpath(folder)}/reports/"
        path = os.path.realpath(path.removeprefix("file://"))
    if not path.startswith(root):
        return None
    relative = quote(path[len(root) :], safe="/=")
    base = os.environ.get("CHURNFLOW_REPORTS_URL")
    if not base:
        from airflow.configuration import conf

        api_base = conf.get("api", "base_url", fallback="") or ""
        base = f"{api_base.rstrip('/')}{REPORTS_URL_PREFIX}/reports"
    return f"{base.rstrip('/')}/{relative}"


class DataDocsLink(BaseOperatorLink):
    """Extra link **Data Docs**: the page the step named, if it named one."""

    name = "Data Docs"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return getattr(operator, "data_docs_url", None) or ""


class DataDocsWatcher:
    """Mixed into the step operators: notices the Data Docs line in a step's output."""

    operator_extra_links = (DataDocsLink(),)
    data_docs_url: str | None = None

    def note_output(self, line: str, lake: str) -> None:
        found = _DATA_DOCS.search(line)
        if found is None:
            return
        url = reports_url(found.group(1).rstrip(".,;"), lake)
        if url is not None:
            self.data_docs_url = url
            self.log.info("Data Docs of this run: %s", url)  # type: ignore[attr-defined]
