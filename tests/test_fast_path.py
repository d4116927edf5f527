"""The recommendations route's fast path (tansuo.service.fast_path): which requests it takes
and what it reads from them. tests/test_service.py checks it answers as the FastAPI route."""

from __future__ import annotations

from urllib.parse import urlencode

from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.routing import Match

from tansuo.service.fast_path import PlainRecommendationRoute, plain_query

DEFAULTS = {"user_id": "u1", "k": 10, "explore": None, "context": "home", "category": None,
            "exclude": None, "exclude_seen": True, "strategy": None}


def test_plain_parameters_are_read_as_fastapi_reads_them():
    assert plain_query("u1", b"") == DEFAULTS
    q = urlencode({"k": "200", "explore": "0.25", "context": "search:red shoes",
                   "category": "Sports > Running", "exclude": "a,b", "exclude_seen": "false",
                   "strategy": "item-ts", "utm_source": "mail"}).encode()
    assert plain_query("u 1", q) == {
        "user_id": "u 1", "k": 200, "explore": 0.25, "context": "search:red shoes",
        "category": "Sports > Running", "exclude": "a,b", "exclude_seen": False,
        "strategy": "item-ts"}  # an unknown parameter is ignored, as FastAPI ignores it
    assert plain_query("u1", b"explore=1.0&k=1")["explore"] == 1.0
    assert plain_query("u1", b"explore=0")["explore"] == 0.0


def test_anything_unusual_is_left_to_the_fastapi_route():
    for query in [b"k=0", b"k=201", b"k=010", b"k=1e1", b"k=%EF%BC%91", b"k=",
                  b"k=5&k=5", b"explore=1.5", b"explore=.5", b"explore=-0",
                  b"explore=nan", b"exclude_seen=1", b"exclude_seen=True",
                  b"strategy=bogus", b"context=", b"category=" + b"x" * 501,
                  b"exclude=" + b"x" * 20_001, b"zz=1&zz=2"]:
        assert plain_query("u1", query) is None, query
    assert plain_query("", b"") is None
    assert plain_query("x" * 257, b"") is None
    assert plain_query("x" * 256, b"") is not None


def _scope(method: str, path: str, query: bytes = b"") -> dict:
    return {"type": "http", "method": method, "path": path, "root_path": "",
            "query_string": query, "headers": []}


def test_the_route_matches_plain_gets_only():
    route = PlainRecommendationRoute("/v1/users/{user_id}/recommendations",
                                     lambda _: None, lambda **_: None)  # type: ignore[arg-type]
    match, child = route.matches(_scope("GET", "/v1/users/u1/recommendations", b"k=3"))
    assert match is Match.FULL and child["path_params"] == {"user_id": "u1"}
    assert child["tansuo.plain_query"]["k"] == 3
    for scope in [_scope("GET", "/v1/users/u1/recommendations", b"k=0"),
                  _scope("HEAD", "/v1/users/u1/recommendations"),
                  _scope("POST", "/v1/users/u1/recommendations"),
                  _scope("GET", "/v1/users/u1/interests")]:
        assert route.matches(scope)[0] is Match.NONE, scope


VALUES = st.one_of(st.text(max_size=12), st.sampled_from(
    ["10", "0", "201", "1.0", "0.5", "true", "false", "greedy", "item-ts", "", "010"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["k", "explore", "context", "category", "exclude",
                                           "exclude_seen", "strategy", "other"]), VALUES),
                max_size=6), st.binary(max_size=30))
def test_any_query_string_is_read_or_left_alone_without_error(pairs, noise):
    for query in (urlencode(pairs).encode(), noise):
        out = plain_query("u1", query)
        if out is not None:
            assert 1 <= out["k"] <= 200 and set(out) == set(DEFAULTS)
            assert out["explore"] is None or 0.0 <= out["explore"] <= 1.0
