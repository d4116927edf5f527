"""The HTTP API (v1): FastAPI around :class:`tansuo.service.engine.Engine`.

OpenAPI at ``/docs`` (and ``/openapi.json``); every 4xx body is
``{"error": {"status", "message", "field"}}`` (FastAPI's own validation errors keep their
``detail`` list, which names each offending field and location).
"""

from __future__ import annotations

import gc
import os
from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_fastapi_instrumentator import Instrumentator
from pydantic import BaseModel, ConfigDict

from tansuo.exploration.policy import STRATEGIES
from tansuo.privacy.audit import AuditLog
from tansuo.service.auth import AuthError, KeyStore, RateLimiter
from tansuo.service.dashboard import add_dashboard
from tansuo.service.engine import Engine, ServiceError
from tansuo.service.fast_path import (
    MAX_K,
    MAX_USER_ID,
    TEXT_LIMITS,
    PlainRecommendationRoute,
)
from tansuo.service.insights import Insights

__all__ = ["create_app"]

Scalar = str | int | float | None


class EventIn(BaseModel):
    """One event in the import schema; the import rules decide what is accepted."""

    model_config = ConfigDict(extra="forbid")
    event_id: str | None = None
    user_id: Scalar = None
    item_id: Scalar = None
    type: Scalar = None
    timestamp: Scalar = None
    dwell_seconds: Scalar = None
    query: Scalar = None
    quantity: Scalar = None
    amount: Scalar = None
    rating: Scalar = None
    text: Scalar = None
    request_id: Scalar = None
    position: Scalar = None


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: Scalar = None
    title: Scalar = None
    category: Scalar = None
    brand: Scalar = None
    price: Scalar = None
    description: Scalar = None
    attributes: dict[str, Any] | str | None = None
    created_at: Scalar = None


class ReloadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    force: bool = False


def _error(status: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message, "field": field}},
                        status_code=status)


class _SizeLimit:
    """Refuse a request whose declared body exceeds ``limit`` bytes (413) or whose
    Content-Length is not a number (400), before anything reads it; name the worker process
    that answered (``X-Tansuo-Worker``). Plain ASGI: a ``BaseHTTPMiddleware`` would cost every
    request a task and a queue."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit
        self.worker = (b"x-tansuo-worker", str(os.getpid()).encode())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            inner = send

            async def send(message: Any) -> None:
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", []),
                                                      self.worker]}
                await inner(message)

            length = dict(scope["headers"]).get(b"content-length")
            if length is not None:
                try:
                    too_big = int(length) > self.limit
                except ValueError:
                    return await _error(400, "Content-Length is not a number",
                                        "Content-Length")(scope, receive, send)
                if too_big:
                    return await _error(
                        413, f"request body of {length.decode('latin-1')} bytes exceeds the "
                             f"limit of {self.limit} (TANSUO_MAX_REQUEST_BYTES)",
                        "body")(scope, receive, send)
        await self.app(scope, receive, send)


def create_app(engine: Engine) -> FastAPI:
    settings = engine.settings
    keys = KeyStore(engine.home)
    # with several workers each enforces its share of the per-key limit (requests are spread
    # across them by the kernel, so the total is approximate)
    per_worker = -(-settings.rate_limit_per_minute // settings.workers)
    limiter = RateLimiter(per_worker)
    app = FastAPI(title="Tansuo", version="1",
                  description="Explained, exploring recommendations and interest profiles.")
    app.state.engine = engine
    registry = CollectorRegistry()
    Instrumentator(registry=registry, excluded_handlers=["/metrics"]).instrument(app).expose(
        app, endpoint="/metrics", include_in_schema=False)
    ingested = Counter("tansuo_events_ingested", "Events stored through the API",
                       registry=registry)
    # multiprocess_mode: how `tansuo serve --workers N` combines its workers' values
    model_info = Gauge("tansuo_model_info", "The model in service (value 1)", ["version"],
                       registry=registry, multiprocess_mode="livemax")
    explore_share = Gauge("tansuo_exploration_share",
                          "Share of served slots that were exploring", registry=registry,
                          multiprocess_mode="livemostrecent")

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.field)

    @app.exception_handler(AuthError)
    async def _auth_error(_: Request, exc: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        resp = _error(exc.status, exc.message, "Authorization" if exc.status in (401, 403)
                      else None)
        resp.headers.update(headers)
        return resp

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                  for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(x) for x in first["loc"])
        return JSONResponse({"error": {"status": 422, "message": f"{where}: {first['msg']}",
                                       "field": where}, "detail": errors}, status_code=422)

    app.add_middleware(_SizeLimit, limit=settings.max_request_bytes)

    def authorize(authorization: str | None, name: str) -> str:
        record = keys.verify(authorization, name)
        limiter.check(record.key_id)
        return record.key_id

    def scope(name: str) -> Any:
        async def check(authorization: Annotated[str | None, Header()] = None) -> str:
            return authorize(authorization, name)
        return Depends(check)

    def _batch(n: int, what: str) -> None:
        if n > settings.max_batch:
            raise ServiceError(413, f"{n} {what} in one request; the limit is "
                                    f"{settings.max_batch} (TANSUO_MAX_BATCH)", what)

    @app.post("/v1/events", tags=["ingest"], dependencies=[scope("ingest")])
    def post_events(events: list[EventIn]) -> dict[str, Any]:
        """Store a batch of events. Accepted events are durable when the response is sent and
        the user's interests and recommendations reflect them on the next request."""
        _batch(len(events), "events")
        out = engine.ingest([e.model_dump(exclude_none=True) for e in events])
        ingested.inc(out["accepted"])
        return out

    @app.put("/v1/items", tags=["ingest"], dependencies=[scope("ingest")])
    def put_items(items: list[ItemIn]) -> dict[str, Any]:
        """Upsert catalogue items; new items are text-encoded and recommendable at once."""
        _batch(len(items), "items")
        return engine.upsert_items([i.model_dump(exclude_none=True) for i in items])

    def answer(user_id: str, k: int, explore: float | None, context: str,
               category: str | None, exclude: str | None, exclude_seen: bool,
               strategy: str | None) -> Response:
        rec = engine.recommend(user_id, k, explore, context, category,
                               [x for x in (exclude or "").split(",") if x], exclude_seen,
                               strategy)
        served = engine.counters["slots_served"]
        if served:
            explore_share.set(engine.counters["slots_explored"] / served)
        # orjson: the same JSON as JSONResponse at a tenth of the encoding cost
        return Response(orjson.dumps(rec.to_dict()), media_type="application/json")

    # The hot path runs on the event loop (no thread hop: the work is CPU-bound under one
    # GIL anyway) and returns its JSON directly, skipping response-model validation. Plain
    # requests take the route put in front of all others (fast_path.py), which skips FastAPI's
    # parameter solving; this one documents the endpoint and answers the rest.
    app.router.routes.insert(0, PlainRecommendationRoute(
        "/v1/users/{user_id}/recommendations", lambda a: authorize(a, "read"), answer))

    @app.get("/v1/users/{user_id}/recommendations", tags=["read"],
             dependencies=[scope("read")], response_model=None)
    async def recommendations(
        user_id: Annotated[str, Path(min_length=1, max_length=MAX_USER_ID)],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        explore: Annotated[float | None, Query(ge=0.0, le=1.0)] = None,
        context: Annotated[str, Query(max_length=TEXT_LIMITS["context"],
                                      description="home, item:ID or search:QUERY")] = "home",
        category: Annotated[str | None, Query(max_length=TEXT_LIMITS["category"])] = None,
        exclude: Annotated[str | None, Query(max_length=TEXT_LIMITS["exclude"],
                                             description="Comma-separated item ids")] = None,
        exclude_seen: bool = True,
        strategy: Annotated[Literal[STRATEGIES] | None, Query()] = None,  # type: ignore[valid-type]
    ) -> Response:
        """Explained recommendations: each item has a score, the probability the policy gave
        it (propensity) and a reason. An unknown user gets a trending, diversified slate."""
        return answer(user_id, k, explore, context, category, exclude, exclude_seen, strategy)

    @app.get("/v1/items/{item_id}/similar", tags=["read"], dependencies=[scope("read")])
    def similar(item_id: Annotated[str, Path(min_length=1, max_length=256)],
                k: Annotated[int, Query(ge=1, le=200)] = 10) -> dict[str, Any]:
        return {"item_id": item_id, "items": engine.similar(item_id, k)}

    @app.get("/v1/items/{item_id}/complementary", tags=["read"], dependencies=[scope("read")])
    def complementary(item_id: Annotated[str, Path(min_length=1, max_length=256)],
                      k: Annotated[int, Query(ge=1, le=200)] = 10) -> dict[str, Any]:
        """Items bought together (same user, same day), most often first."""
        return {"item_id": item_id, "items": engine.complementary(item_id, k)}

    @app.get("/v1/users/{user_id}/interests", tags=["read"], dependencies=[scope("read")])
    def interests(user_id: Annotated[str, Path(min_length=1, max_length=256)]
                  ) -> dict[str, Any]:
        return engine.interests(user_id)

    @app.delete("/v1/users/{user_id}", tags=["admin"])
    def erase(user_id: Annotated[str, Path(min_length=1, max_length=256)],
              actor: str = scope("admin")) -> dict[str, Any]:
        """Erasure: the user's events, quarantined rows, profile and served-slate log are
        removed at once; the answer carries the erasure receipt (also kept on disk)."""
        return engine.erase(user_id, actor=f"key:{actor}")

    @app.post("/v1/admin/reload", tags=["admin"])
    def reload(body: ReloadIn | None = None, actor: str = scope("admin")) -> dict[str, Any]:
        out = engine.reload(force=bool(body and body.force))
        AuditLog(engine.home).record("reload", actor=f"key:{actor}",
                                     target=out.get("model_version"), details=out)
        if out.get("swapped") and gc.get_freeze_count():
            # `tansuo serve` froze the loaded state; let the replaced model be collected
            gc.unfreeze()
            quiet_collector()
        if out.get("swapped"):
            if out.get("previous_version"):
                model_info.labels(out["previous_version"]).set(0)
            model_info.labels(engine.model_version).set(1)
        return out

    @app.get("/v1/health", tags=["ops"])
    def health() -> dict[str, Any]:
        return engine.health()

    insights = Insights(engine)
    app.state.insights = insights
    add_dashboard(app, insights, scope("read"))

    if engine.model_version:
        model_info.labels(engine.model_version).set(1)
    return app


def app_from_env() -> FastAPI:
    """The app of one worker of `tansuo serve --workers N` (a uvicorn factory): the settings
    come from the environment the command exported, the default policy from
    ``TANSUO_SERVE_POLICY`` (JSON). Every worker holds its own engine and follows the store."""
    import json

    from tansuo.config import Settings
    from tansuo.exploration.policy import PolicyConfig

    policy = PolicyConfig(**json.loads(os.environ.get("TANSUO_SERVE_POLICY") or "{}"))
    engine = Engine(Settings(), policy)
    quiet_collector()
    return create_app(engine)


def quiet_collector() -> None:
    """Keep the garbage collector's pauses off the request path: the loaded state (hundreds
    of thousands of long-lived objects; a full collection over them takes ~150 ms) is frozen
    out of collection, leaving the collector only what requests and new events allocate."""
    gc.collect()
    gc.freeze()
