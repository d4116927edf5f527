"""The recommendations route's fast path: plain requests skip FastAPI's parameter machinery.

Why: a recommendation request's own work is ~2 ms, and FastAPI's per-request solving of the
route's dependency and eight query parameters (pydantic validation field by field) added
~0.2 ms more on this 2-core machine (docs/benchmarks.md, "Service under load"). The route
declared with FastAPI stays as it is: it is the one in the OpenAPI document and it answers
every request this path does not take. :class:`PlainRecommendationRoute` sits before it and
matches only a GET whose every parameter is in a plain form it reads exactly as FastAPI would
(``k=10``, ``explore=0.1``, ``exclude_seen=false``, a known strategy, strings within their
lengths, no repeated or blank value); anything else (a malformed, out-of-range or unusual
value, another method) is left to the FastAPI route, so its answers and error bodies are
FastAPI's own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from tansuo.exploration.policy import STRATEGIES

__all__ = ["MAX_K", "MAX_USER_ID", "PlainRecommendationRoute", "TEXT_LIMITS", "plain_query"]

# The route's limits, declared once: the FastAPI route (tansuo.service.app) validates with
# them too, so the two routes cannot drift apart.
#: most items a request may ask for (``k``)
MAX_K = 200
#: longest user id in the path
MAX_USER_ID = 256
#: query parameter → longest value accepted
TEXT_LIMITS = {"context": 1000, "category": 500, "exclude": 20_000}
_K = re.compile(r"[1-9][0-9]{0,2}")
_UNIT = re.compile(r"0(\.[0-9]{1,12})?|1(\.0{1,12})?")  # numbers in [0, 1], plainly written
_BOOLS = {"true": True, "false": False}
_SCOPE_KEY = "tansuo.plain_query"


def plain_query(user_id: Any, query_string: bytes) -> dict[str, Any] | None:
    """The recommendation parameters of a plain request (see the module docstring), as the
    FastAPI route would receive them; None when the request is not plain."""
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= MAX_USER_ID:
        return None
    out: dict[str, Any] = {"user_id": user_id, "k": 10, "explore": None, "context": "home",
                           "category": None, "exclude": None, "exclude_seen": True,
                           "strategy": None}
    seen: set[str] = set()
    # decoded as Starlette decodes a query string
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key in seen:
            return None
        seen.add(key)
        if key == "k":
            if not _K.fullmatch(value) or int(value) > MAX_K:
                return None
            out["k"] = int(value)
        elif key == "explore":
            if not _UNIT.fullmatch(value):
                return None
            out["explore"] = float(value)
        elif key in TEXT_LIMITS:
            if not value or len(value) > TEXT_LIMITS[key]:
                return None
            out[key] = value
        elif key == "exclude_seen":
            if value not in _BOOLS:
                return None
            out["exclude_seen"] = _BOOLS[value]
        elif key == "strategy":
            if value not in STRATEGIES:
                return None
            out["strategy"] = value
        # any other parameter is ignored, as FastAPI ignores it
    return out


class PlainRecommendationRoute(Route):
    """``GET /v1/users/{user_id}/recommendations`` for plain requests only: ``authorize``
    checks the ``Authorization`` header (raising the app's AuthError) and ``answer`` gets the
    parameters :func:`plain_query` read. Not in the OpenAPI document (the FastAPI route
    describes the endpoint)."""

    def __init__(self, path: str, authorize: Callable[[str | None], object],
                 answer: Callable[..., Response]) -> None:
        async def endpoint(request: Request) -> Response:
            authorize(request.headers.get("authorization"))
            return answer(**request.scope[_SCOPE_KEY])

        super().__init__(path, endpoint, methods=["GET"], include_in_schema=False)
        self.methods = {"GET"}  # not HEAD: the FastAPI route answers that (405), as before

    def matches(self, scope: Any) -> tuple[Match, dict[str, Any]]:
        match, child = super().matches(scope)
        if match is not Match.FULL:
            return Match.NONE, {}  # another method: the FastAPI route's answer
        query = plain_query(child["path_params"].get("user_id"), scope.get("query_string", b""))
        if query is None:
            return Match.NONE, {}
        child[_SCOPE_KEY] = query
        return match, child
