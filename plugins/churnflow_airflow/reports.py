"""The lake's reports (Data Docs, trend pages), read-only over http on the Airflow api-server.

Mounted by the churnflow plugin at `/churnflow`, so `/churnflow/reports/<path>` serves
`<lake>/reports/<path>` to anyone logged in to Airflow (the UI's session cookie or a bearer
token): a task's Data Docs link opens in the browser instead of being a path on a worker. Only
GET and HEAD, only files under the reports folder, and only for a lake on a local folder or
shared volume; an object-store lake's reports are served by whatever `CHURNFLOW_REPORTS_URL`
points at.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from churnflow_airflow.config import load_settings
from churnflow_airflow.data_docs import local_folder

if TYPE_CHECKING:
    from fastapi import FastAPI


def create_app(reports_root: Path | None = None) -> FastAPI:
    """The reports app; `reports_root` defaults to the configured lake's `reports/` folder."""
    from airflow.api_fastapi.core_api.security import requires_authenticated
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import FileResponse

    if reports_root is None:
        folder = local_folder(load_settings().lake)
        reports_root = Path(folder) / "reports" if folder is not None else None
    app = FastAPI(title="churnflow reports", docs_url=None, redoc_url=None, openapi_url=None)

    @app.api_route(
        "/reports/{path:path}",
        methods=["GET", "HEAD"],
        dependencies=[Depends(requires_authenticated())],
        response_model=None,
    )
    def report(path: str):  # no return annotation: FastAPI would try to resolve it
        if reports_root is None:
            raise HTTPException(404, "the lake is not a local folder: reports are served elsewhere")
        root = reports_root.resolve()
        target = (root / path).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_relative_to(root) or not target.is_file():
            raise HTTPException(404, f"no report at reports/{path}")
        return FileResponse(target)

    return app


class LazyReportsApp:
    """ASGI app that builds the real one on first request.

    Airflow imports plugins in every component, task processes included; only the api-server
    serves requests, so only it pays for FastAPI and Airflow's security module.
    """

    def __init__(self) -> None:
        self._app: FastAPI | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = create_app()
        await self._app(scope, receive, send)
