"""The pages of a step's day (Data Docs, the drift report), one click from its task in the UI.

A step that checks data prints `Data Docs: <path>`, the page of the day under
`<lake>/reports/`; the drift step prints `Report: <path>`, the day's Evidently report under
`<lake>/monitoring/`. The step's operator (either runner) watches its output for those lines
and turns each path into an http URL: under `CHURNFLOW_REPORTS_URL` when set (production:
wherever the lake's `reports/` and `monitoring/` folders are served), otherwise the churnflow
plugin's pages on the Airflow api-server (`/churnflow/reports/...`, `/churnflow/monitoring/...`,
see `churnflow_airflow.reports`). The URL is logged as a line of its own and becomes the task's
**Data Docs** or **Report** extra link (Airflow 3 stores the link when the task finishes,
passed or failed).
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

from churnflow_airflow.config import lake_uri

REPORTS_URL_PREFIX = "/churnflow"
# The lake's folders whose pages are served: churnflow.lake's REPORTS and the root of its
# monitoring datasets (the plugin never imports the task package; a test keeps them equal).
SERVED_FOLDERS = ("reports", "monitoring")


def local_folder(lake: str) -> str | None:
    """The lake's local folder, or None for an object-store lake."""
    root = lake.removeprefix("file://")
    return None if "://" in root else root.rstrip("/")


def reports_url(path: str, lake: str) -> str | None:
    """The http URL of a page under one of the lake's served folders; None for any other path."""
    folder = local_folder(lake)
    if folder is None:  # the task side prints s3a://, the setting may say s3://
        root, path = f"{lake_uri(lake).rstrip('/')}/", lake_uri(path)
    else:  # the step prints a resolved path; the lake setting may be relative or a link
        root = f"{os.path.realpath(folder)}/"
        path = os.path.realpath(path.removeprefix("file://"))
    relative = path[len(root) :] if path.startswith(root) else ""
    if relative.split("/", 1)[0] not in SERVED_FOLDERS:
        return None
    base = os.environ.get("CHURNFLOW_REPORTS_URL")
    if not base:
        from airflow.configuration import conf

        api_base = conf.get("api", "base_url", fallback="") or ""
        base = f"{api_base.rstrip('/')}{REPORTS_URL_PREFIX}"
    return f"{base.rstrip('/')}/{quote(relative, safe='/=')}"


class _PageLink(BaseOperatorLink):
    """The page of this kind the step named, if it named one."""

    name = ""

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return (getattr(operator, "page_urls", None) or {}).get(self.name, "")


class DataDocsLink(_PageLink):
    """Extra link **Data Docs**: the Great Expectations page of the step's day."""

    name = "Data Docs"


class ReportLink(_PageLink):
    """Extra link **Report**: the step's own report of the day (the drift step's Evidently page)."""

    name = "Report"


_PAGES = {link.name: re.compile(rf"{link.name}: (\S+)") for link in (DataDocsLink, ReportLink)}


class DataDocsWatcher:
    """Mixed into the step operators: notices the page lines in a step's output."""

    operator_extra_links = (DataDocsLink(), ReportLink())
    page_urls: dict[str, str] | None = None

    def note_output(self, line: str, lake: str) -> None:
        for name, pattern in _PAGES.items():
            found = pattern.search(line)
            url = reports_url(found.group(1).rstrip(".,;"), lake) if found else None
            if url is not None:
                self.page_urls = {**(self.page_urls or {}), name: url}
                self.log.info("%s of this run: %s", name, url)  # type: ignore[attr-defined]
