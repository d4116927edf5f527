"""Shared fixtures. ``store`` runs every test that uses it against SQLite and PostgreSQL.

PostgreSQL comes from ``TANSUO_TEST_POSTGRES_URL`` (``.ci/run`` starts a server and sets it;
locally ``bash .ci/start-postgres`` does the same). Each test gets its own schema. Without a
server the PostgreSQL variants are skipped with a loud reason — except under CI, where that
is a failure, because CI must exercise both backends.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tansuo.data.store import EventStore, open_store

PG_URL = os.environ.get("TANSUO_TEST_POSTGRES_URL")


def _with_schema(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh, empty schema (dropped afterwards)."""
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL tests: TANSUO_TEST_POSTGRES_URL is not set "
                        "(.ci/run starts PostgreSQL and sets it)")
        pytest.skip("POSTGRESQL TESTS SKIPPED: TANSUO_TEST_POSTGRES_URL is not set; run "
                    "`bash .ci/start-postgres` and export "
                    "TANSUO_TEST_POSTGRES_URL=postgresql://tansuo:tansuo@127.0.0.1:5432/tansuo_test")
    import psycopg

    schema = "t_" + uuid.uuid4().hex[:16]
    try:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at TANSUO_TEST_POSTGRES_URL is unreachable under CI: {exc}")
        pytest.skip(f"POSTGRESQL TESTS SKIPPED: server unreachable: {exc}")
    try:
        yield _with_schema(PG_URL, schema)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[EventStore]:
    s = open_store(store_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def write(tmp_path: Path):
    """Write a text file in the test's temporary directory and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return _write
