"""The lake's pages (Data Docs, drift reports, the trend page), read-only over http on the
Airflow api-server.

Mounted by the churnflow plugin at `/churnflow`, so `/churnflow/reports/<path>` serves
`<lake>/reports/<path>` and `/churnflow/monitoring/<path>` serves `<lake>/monitoring/<path>` to
anyone logged in to Airflow (the UI's session cookie or a bearer token): a task's Data Docs or
Report link opens in the browser instead of being a path on a worker. Only GET and HEAD, only
files under those folders, and only for a lake on a local folder or shared volume; an
object-store lake's pages are served by whatever `CHURNFLOW_REPORTS_URL` points at.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from churnflow_airflow.config import load_settings
from churnflow_airflow.data_docs import SERVED_FOLDERS, local_folder

if TYPE_CHECKING:
    from fastapi import FastAPI


def create_app(lake_root: Path | None = None) -> FastAPI:
    """The pages app; `lake_root` defaults to the configured lake's folder."""
    from airflow.api_fastapi.core_api.security import requires_authenticated
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import FileResponse

    if lake_root is None:
        folder = local_folder(load_settings().lake)
        lake_root = Path(folder) if folder is not None else None
    app = FastAPI(title="churnflow reports", docs_url=None, redoc_url=None, openapi_url=None)

    @app.api_route(
        "/{served}/{path:path}",
        methods=["GET", "HEAD"],
        dependencies=[Depends(requires_authenticated())],
        response_model=None,
    )
    def page(served: str, path: str):  # no return annotation: FastAPI would try to resolve it
        if served not in SERVED_FOLDERS:
            raise HTTPException(404, f"no pages under {served}/")
        if lake_root is None:
            raise HTTPException(404, "the lake is not a local folder: pages are served elsewhere")
        root = (lake_root / served).resolve()
        target = (root / path).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_relative_to(root) or not target.is_file():
            raise HTTPException(404, f"no page at {served}/{path}")
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
