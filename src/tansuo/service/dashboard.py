"""The browser dashboard at ``/`` and the read-only insight API it draws from.

The page itself (HTML, JavaScript, CSS under ``static/``) holds no data and needs no key; every
number it shows comes from ``/v1`` endpoints called with a ``read`` key, which the page takes
from its URL fragment (``/#key=...``, never sent to the server or written to access logs) or
from a form, and keeps in the tab's session storage. Charts are drawn by plotly.js from the
installed ``plotly`` wheel (no CDN, no build step).
"""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from tansuo.service.insights import Insights

__all__ = ["add_dashboard"]

STATIC = FsPath(__file__).parent / "static"


def _plotly_js() -> FsPath | None:
    try:
        import plotly
    except ImportError:
        return None
    path = FsPath(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return path if path.exists() else None


def add_dashboard(app: FastAPI, insights: Insights, read: Any) -> None:
    """Mount the dashboard on ``app``; ``read`` is the dependency that checks a read key."""

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/vendor/plotly.min.js", include_in_schema=False, response_model=None)
    def plotly_js() -> FileResponse | JSONResponse:
        path = _plotly_js()
        if path is None:
            return JSONResponse({"error": {"status": 404, "message": "plotly is not installed: "
                                           "pip install plotly", "field": None}},
                                status_code=404)
        return FileResponse(path, media_type="text/javascript",
                            headers={"Cache-Control": "max-age=86400"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/v1/insights/overview", tags=["insights"], dependencies=[read])
    def overview() -> dict[str, Any]:
        """Events per day by type, active users, rising and fading interests, segments, the
        model in service and the latest evaluation summary."""
        return insights.overview()

    @app.get("/v1/insights/segments", tags=["insights"], dependencies=[read])
    def segments() -> dict[str, Any]:
        """Users clustered by long-term interest shares (k chosen by silhouette)."""
        return insights.segments()

    @app.get("/v1/insights/trends", tags=["insights"], dependencies=[read])
    def trends(limit: Annotated[int, Query(ge=1, le=100)] = 10) -> dict[str, Any]:
        """Interests rising (or new) and fading (or gone) across all users."""
        return insights.trends(limit)

    @app.get("/v1/insights/users", tags=["insights"], dependencies=[read])
    def users(prefix: Annotated[str, Query(max_length=256)] = "",
              limit: Annotated[int, Query(ge=1, le=200)] = 20) -> dict[str, Any]:
        """Users whose id starts with ``prefix``, with their event counts."""
        return insights.users(prefix, limit)

    @app.get("/v1/users/{user_id}/events", tags=["read"], dependencies=[read])
    def user_events(user_id: Annotated[str, Path(min_length=1, max_length=256)],
                    limit: Annotated[int, Query(ge=1, le=200)] = 20) -> dict[str, Any]:
        """The user's latest events, newest first, with item titles and interests."""
        return insights.user_events(user_id, limit)

    @app.get("/v1/items/{item_id}", tags=["read"], dependencies=[read])
    def item(item_id: Annotated[str, Path(min_length=1, max_length=256)],
             k: Annotated[int, Query(ge=1, le=100)] = 10) -> dict[str, Any]:
        """The catalogue row, its interest, similar and complementary items, and the segments
        whose users engaged with it."""
        return insights.item(item_id, k)

    @app.get("/v1/insights/exploration", tags=["insights"], dependencies=[read])
    def exploration() -> dict[str, Any]:
        """Click-through per day and serving policy from the served-slate log, and IPW/SNIPS
        estimates (95% bootstrap CIs) of the logged and the greedy policy on that traffic."""
        return insights.exploration()

    @app.get("/v1/insights/evaluation", tags=["insights"], dependencies=[read])
    def evaluation() -> dict[str, Any]:
        """The latest `tansuo evaluate` report (null when none was run on this home)."""
        return {"report": insights.evaluation()}
