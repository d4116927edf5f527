"""The event store: SQLite (embedded default, WAL mode) or PostgreSQL, chosen by one URL.

Both backends share the schema and every read path; they differ only in how a batch is
written (``INSERT OR IGNORE`` for SQLite, ``COPY`` into a staging table then
``INSERT ... ON CONFLICT DO NOTHING`` for PostgreSQL) and in their DDL.

Guarantees:
- idempotent: an event is identified by ``event_id`` (given, or derived from its content), and
  the same event written twice is stored once;
- transactional: :meth:`EventStore.write_events` writes a whole batch or nothing;
- ordered reads: a user's events come back by ``(timestamp, seq)``, where ``seq`` is the order
  of ingestion, so events with equal timestamps keep their file order.
"""

from __future__ import annotations

import json
import math
import sqlite3
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from tansuo.data.schema import EVENT_COLUMNS, ITEM_COLUMNS
from tansuo.data.sqlite_writer import (
    QUARANTINE_SQL,
    EventGroup,
    PreparedEvents,
    connect,
    insert_event_groups,
)
from tansuo.errors import ConfigError, StoreError

__all__ = [
    "EventStore",
    "SQLiteStore",
    "PostgresStore",
    "WriteResult",
    "QuarantineRow",
    "open_store",
]

# Column names inside the database (``timestamp`` is a reserved word in places).
_DB_EVENT_COLUMNS = tuple("ts" if c == "timestamp" else c for c in EVENT_COLUMNS)
_EVENT_TYPES = {
    "event_id": "TEXT NOT NULL UNIQUE",
    "user_id": "TEXT NOT NULL",
    "item_id": "TEXT",
    "type": "TEXT NOT NULL",
    "ts": "BIGINT NOT NULL",
    "dwell_seconds": "DOUBLE PRECISION",
    "query": "TEXT",
    "quantity": "BIGINT",
    "amount": "DOUBLE PRECISION",
    "rating": "DOUBLE PRECISION",
    "text": "TEXT",
    "request_id": "TEXT",
    "position": "BIGINT",
}
_INT_COLUMNS = {"ts", "quantity", "position"}
_FLOAT_COLUMNS = {"dwell_seconds", "amount", "rating"}


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Outcome of writing one batch: rows newly stored and rows that were already there."""

    inserted: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    """A rejected input row, kept with the reason instead of being thrown away."""

    kind: str  # "events" or "items"
    source: str
    line: int
    reason: str
    detail: str
    raw: str


def _column_defs(serial: str) -> str:
    cols = ",\n  ".join(f"{name} {typ}" for name, typ in _EVENT_TYPES.items())
    return f"""
CREATE TABLE IF NOT EXISTS events (
  seq {serial},
  {cols},
  unknown_item SMALLINT NOT NULL DEFAULT 0,
  import_id BIGINT,
  key_id TEXT
);
CREATE INDEX IF NOT EXISTS events_user_ts ON events (user_id, ts, seq);
CREATE TABLE IF NOT EXISTS items (
  item_id TEXT PRIMARY KEY,
  title TEXT,
  category TEXT,
  brand TEXT,
  price DOUBLE PRECISION,
  description TEXT,
  attributes TEXT,
  created_at BIGINT,
  updated_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
  id {serial},
  import_id BIGINT,
  kind TEXT NOT NULL,
  source TEXT NOT NULL,
  line BIGINT NOT NULL,
  reason TEXT NOT NULL,
  detail TEXT,
  raw TEXT,
  created_at BIGINT NOT NULL,
  UNIQUE (kind, source, line, reason)
);
CREATE TABLE IF NOT EXISTS imports (
  import_id {serial},
  kind TEXT NOT NULL,
  source TEXT NOT NULL,
  format TEXT NOT NULL,
  started_at BIGINT NOT NULL,
  finished_at BIGINT,
  status TEXT NOT NULL,
  report TEXT
);
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
"""


def _now_ms() -> int:
    return int(time.time() * 1000)


_REQUIRED_FIELDS = ("event_id", "user_id", "type", "timestamp")
_OPTIONAL = tuple(c for c in EVENT_COLUMNS if c not in _REQUIRED_FIELDS)
_DB_NAME = dict(zip(EVENT_COLUMNS, _DB_EVENT_COLUMNS, strict=True))
_KINDS = {c: "int" if db in _INT_COLUMNS else "float" if db in _FLOAT_COLUMNS else "str"
          for c, db in _DB_NAME.items()}
#: Batches up to this size are grouped row by row (the vectorised grouping's fixed pandas
#: cost is milliseconds, most of the write of a service batch of tens of events).
_ROW_GROUPING_MAX = 256


def _none_if_nan(values: pd.Series, kind: str) -> list[Any]:
    """A column as a Python list with None for missing values, ints as ints."""
    out: list[Any] = _object_column(values, kind).tolist()
    return out


def _event_rows(batch: pd.DataFrame, import_id: int | None
                ) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """The database columns this batch uses (all-empty optional columns are left out, so
    fewer values are bound per row) and its rows."""
    names: list[str] = []
    columns: list[list[Any]] = []
    for col, db_col in zip(EVENT_COLUMNS, _DB_EVENT_COLUMNS, strict=True):
        if col not in batch:
            continue
        values = batch[col]
        if db_col not in _REQUIRED and values.isna().all():
            continue
        names.append(db_col)
        columns.append(_none_if_nan(values, _KINDS[col]))
    if "unknown_item" in batch and batch["unknown_item"].astype(bool).any():
        names.append("unknown_item")
        columns.append(batch["unknown_item"].astype("int64").tolist())
    if "key_id" in batch and batch["key_id"].notna().any():
        names.append("key_id")  # the pseudonymisation ring the user id was made with
        columns.append(batch["key_id"].tolist())
    if import_id is not None:
        names.append("import_id")
        columns.append([import_id] * len(batch))
    return tuple(names), list(zip(*columns, strict=True))


_REQUIRED = {"event_id", "user_id", "type", "ts"}




def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _unique_events(batch: pd.DataFrame) -> pd.DataFrame:
    """The batch with a repeated event_id kept once (the first)."""
    if len(batch) and len(set(batch["event_id"].tolist())) < len(batch):  # (pandas'
        return batch.drop_duplicates("event_id")  # duplicated() alone: ~0.4 ms)
    return batch


def _quarantine_rows(rows: Sequence[QuarantineRow], import_id: int | None
                     ) -> list[tuple[Any, ...]]:
    now = _now_ms()
    return [(import_id, r.kind, r.source, r.line, r.reason, r.detail, r.raw, now) for r in rows]


def _event_groups(batch: pd.DataFrame, import_id: int | None) -> list[EventGroup]:
    """The batch split by which optional columns are filled: (database columns, values
    column by column) per group, so each row binds only the values it has. The first column
    is each row's position in the batch (its ``seq`` offset, see
    :func:`tansuo.data.sqlite_writer.insert_event_groups`)."""
    if len(batch) <= _ROW_GROUPING_MAX:
        return _event_groups_by_row(batch, import_id)
    return _event_groups_vectorised(batch, import_id)


def _object_column(values: pd.Series, kind: str) -> np.ndarray:
    """A column as an object array of Python values to bind: None where missing, ints as
    ints."""
    mask = values.isna().to_numpy()
    if kind == "int":
        arr = values.to_numpy(dtype="float64", na_value=np.nan)
        out = np.where(mask, 0, arr).astype(np.int64).astype(object)
    elif kind == "float":
        out = values.to_numpy(dtype="float64", na_value=np.nan).astype(object)
    else:
        out = np.array(values.to_numpy(dtype=object), dtype=object)  # a copy: None is set below
    if mask.any():
        out[mask] = None
    return out


def _event_groups_vectorised(batch: pd.DataFrame, import_id: int | None
                             ) -> list[EventGroup]:
    filled = {c: batch[c].notna().to_numpy() for c in _OPTIONAL if c in batch}
    filled = {c: m for c, m in filled.items() if m.any()}
    pattern = np.zeros(len(batch), dtype=np.int64)
    for bit, mask in enumerate(filled.values()):
        pattern |= mask.astype(np.int64) << bit
    names = list(filled)
    # each column converted once; a group takes its rows from the object arrays
    values = {c: _object_column(batch[c], _KINDS[c]) for c in EVENT_COLUMNS
              if c in _REQUIRED_FIELDS or c in filled}
    unknown = batch["unknown_item"].to_numpy().astype(np.int64) if "unknown_item" in batch \
        else None
    key = _object_column(batch["key_id"], "str") if "key_id" in batch else None
    groups = []
    for code in np.unique(pattern):
        positions = np.flatnonzero(pattern == code)
        whole = len(positions) == len(batch)
        used = [c for c in EVENT_COLUMNS
                if c in _REQUIRED_FIELDS or (c in filled and code >> names.index(c) & 1)]
        db_cols = [_DB_NAME[c] for c in used]
        columns = [positions.tolist()]
        columns += [(values[c] if whole else values[c][positions]).tolist() for c in used]
        if unknown is not None and unknown[positions].any():
            db_cols.append("unknown_item")
            columns.append(unknown[positions].tolist())
        if key is not None:
            keys = key[positions]
            if any(k is not None for k in keys.tolist()):
                db_cols.append("key_id")  # the pseudonymisation ring the user id was made with
                columns.append(keys.tolist())
        if import_id is not None:
            db_cols.append("import_id")
            columns.append([import_id] * len(positions))
        groups.append((tuple(db_cols), columns))
    return groups


def _event_groups_by_row(batch: pd.DataFrame, import_id: int | None) -> list[EventGroup]:
    """:func:`_event_groups` in plain Python, for small batches: the same groups, columns and
    values (ints through float64 as there; tests/test_store_groups.py compares the two)."""
    n = len(batch)
    values = {c: batch[c].tolist() for c in (*EVENT_COLUMNS, "unknown_item", "key_id")
              if c in batch}
    filled = [c for c in _OPTIONAL if c in values and not all(map(_missing, values[c]))]
    patterns: dict[tuple[str, ...], list[int]] = {}
    for i in range(n):
        key = tuple(c for c in filled if not _missing(values[c][i]))
        patterns.setdefault(key, []).append(i)

    def code(cols: tuple[str, ...]) -> int:  # the vectorised grouping's order
        return sum(1 << filled.index(c) for c in cols)

    def convert(c: str, v: Any) -> Any:
        kind = _KINDS[c]
        return int(float(v)) if kind == "int" else float(v) if kind == "float" else v

    groups = []
    for cols in sorted(patterns, key=code):
        rows = patterns[cols]
        used = [c for c in EVENT_COLUMNS if c in _REQUIRED_FIELDS or c in cols]
        names = [_DB_NAME[c] for c in used]
        extra: list[list[Any]] = []
        if "unknown_item" in values and any(bool(values["unknown_item"][i]) for i in rows):
            names.append("unknown_item")
            extra.append([int(values["unknown_item"][i]) for i in rows])
        if "key_id" in values and any(not _missing(values["key_id"][i]) for i in rows):
            names.append("key_id")
            extra.append([values["key_id"][i] for i in rows])
        if import_id is not None:
            names.append("import_id")
            extra.append([import_id] * len(rows))
        columns = [list(rows)]
        columns += [[None if _missing(values[c][i]) else convert(c, values[c][i]) for i in rows]
                    for c in used]
        groups.append((tuple(names), columns + extra))
    return groups


def _item_rows(items: pd.DataFrame) -> list[tuple[Any, ...]]:
    now = _now_ms()
    cols: list[list[Any]] = []
    for c in ITEM_COLUMNS:
        kind = "float" if c == "price" else "int" if c == "created_at" else "str"
        values = items[c] if c in items else pd.Series([None] * len(items), dtype=object)
        if c == "attributes":
            values = values.map(
                lambda v: v if v is None or isinstance(v, str) else json.dumps(v, sort_keys=True)
            )
        cols.append(_none_if_nan(values.reset_index(drop=True), kind))
    cols.append([now] * len(items))
    return list(zip(*cols, strict=True))


class EventStore(ABC):
    """Behaviour events, catalogue items, quarantined rows and the import log."""

    url: str
    placeholder: str = "?"

    # -- connection plumbing (backend specific) ---------------------------------------------
    @abstractmethod
    def _connect(self) -> Any: ...

    @abstractmethod
    def _insert_events(self, cur: Any, batch: pd.DataFrame, import_id: int | None) -> int:
        """Insert a batch, skipping stored event_ids; return rows inserted."""

    @abstractmethod
    def _ddl(self) -> str: ...

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A cursor inside one transaction: committed on success, rolled back on error."""
        conn = self._conn
        cur = conn.cursor()
        try:
            yield cur
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            cur.close()

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn = self._connect()
        self.init_schema()

    def init_schema(self) -> None:
        with self.transaction() as cur:
            for stmt in self._ddl().split(";"):
                if stmt.strip():
                    cur.execute(stmt)
            # stores made before a column existed get it (nullable: old rows keep NULL)
            cur.execute(self._q("SELECT * FROM events WHERE 1 = 0"))
            present = {d[0] for d in cur.description}
            if "key_id" not in present:
                cur.execute("ALTER TABLE events ADD COLUMN key_id TEXT")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _q(self, sql: str) -> str:
        return sql.replace("?", self.placeholder)

    @contextmanager
    def _reading(self) -> Iterator[Any]:
        """A cursor for one read statement (a transaction of its own, as for writes, unless a
        backend reads more cheaply)."""
        with self.transaction() as cur:
            yield cur

    def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._reading() as cur:
            cur.execute(self._q(sql), tuple(params))
            return list(cur.fetchall())

    # -- writes -------------------------------------------------------------------------------
    def write_events(
        self,
        batch: pd.DataFrame,
        import_id: int | None = None,
        quarantine: Sequence[QuarantineRow] = (),
    ) -> WriteResult:
        """Store a batch of clean events (columns ``EVENT_COLUMNS``, ``event_id`` filled) and its
        rejected rows, all in one transaction. Already-stored events are skipped."""
        total = len(batch)
        batch = _unique_events(batch)
        with self.transaction() as cur:
            inserted = self._insert_events(cur, batch, import_id) if total else 0
            self._insert_quarantine(cur, quarantine, import_id)
        return WriteResult(inserted=inserted, duplicates=total - inserted)

    def _insert_quarantine(
        self, cur: Any, rows: Sequence[QuarantineRow], import_id: int | None
    ) -> None:
        if rows:
            cur.executemany(self._q(QUARANTINE_SQL), _quarantine_rows(rows, import_id))

    def upsert_items(
        self, items: pd.DataFrame, quarantine: Sequence[QuarantineRow] = (),
        import_id: int | None = None,
    ) -> int:
        """Insert or update catalogue items (columns ``ITEM_COLUMNS``); returns rows written.

        A field given replaces the stored one; an empty field keeps it, so partial feeds (a
        price update, a second RetailRocket properties file) never erase what is known."""
        rows = _item_rows(items) if len(items) else []
        cols = (*ITEM_COLUMNS, "updated_at")
        updates = ", ".join(f"{c} = COALESCE(excluded.{c}, items.{c})" for c in cols[1:])
        sql = self._q(
            f"INSERT INTO items ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT (item_id) DO UPDATE SET {updates}"
        )
        with self.transaction() as cur:
            if rows:
                cur.executemany(sql, rows)
            self._insert_quarantine(cur, quarantine, import_id)
        return len(rows)

    def begin_import(self, kind: str, source: str, fmt: str) -> int:
        with self.transaction() as cur:
            cur.execute(
                self._q(
                    "INSERT INTO imports (kind, source, format, started_at, status) "
                    "VALUES (?, ?, ?, ?, 'running') RETURNING import_id"
                ),
                (kind, source, fmt, _now_ms()),
            )
            return int(cur.fetchone()[0])

    def finish_import(self, import_id: int, status: str, report: dict[str, Any]) -> None:
        with self.transaction() as cur:
            cur.execute(
                self._q(
                    "UPDATE imports SET finished_at = ?, status = ?, report = ? WHERE import_id = ?"
                ),
                (_now_ms(), status, json.dumps(report), import_id),
            )

    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction() as cur:
            cur.execute(
                self._q(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                ),
                (key, json.dumps(value)),
            )

    def get_meta(self, key: str, default: Any = None) -> Any:
        rows = self._fetchall("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    #: Row lock taken by :meth:`update_meta` (SQLite needs none: its write transactions
    #: take the database's write lock when they begin).
    _lock_row: str = ""

    def update_meta(self, key: str, update: Callable[[Any], Any], default: Any = None
                    ) -> tuple[Any, Any]:
        """Read ``key``, store ``update(value)`` and return ``(old, new)``, atomically: two
        processes updating the same key at once both get their change in (one waits for the
        other), where :meth:`get_meta` then :meth:`set_meta` could lose one."""
        with self.transaction() as cur:
            # the row exists before it is locked, so two first writers cannot both insert it
            cur.execute(self._q("INSERT INTO meta (key, value) VALUES (?, ?) "
                                "ON CONFLICT (key) DO NOTHING"), (key, json.dumps(default)))
            cur.execute(self._q(f"SELECT value FROM meta WHERE key = ?{self._lock_row}"), (key,))
            old = json.loads(cur.fetchone()[0])
            new = update(old)
            cur.execute(self._q("UPDATE meta SET value = ? WHERE key = ?"),
                        (json.dumps(new), key))
        return old, new

    # -- reads --------------------------------------------------------------------------------
    def count_events(self) -> int:
        return int(self._fetchall("SELECT COUNT(*) FROM events")[0][0])

    def item_ids(self) -> set[str]:
        return {r[0] for r in self._fetchall("SELECT item_id FROM items")}

    def events(
        self,
        columns: Sequence[str] = EVENT_COLUMNS,
        user_ids: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """Events ordered by ``(user_id, timestamp, seq)`` as a DataFrame with the given columns
        (``timestamp`` as int64 epoch ms). Events stored after a sequence number: see
        :meth:`events_after`."""
        unknown = set(columns) - set(EVENT_COLUMNS) - {"unknown_item", "seq", "key_id"}
        if unknown:
            raise StoreError(f"unknown event columns {sorted(unknown)}; expected {EVENT_COLUMNS}")
        db_cols = ["ts" if c == "timestamp" else c for c in columns]
        sql = f"SELECT {', '.join(db_cols)} FROM events"
        params: list[Any] = []
        if user_ids is not None:
            users = list(user_ids)
            if not users:
                return pd.DataFrame({c: [] for c in columns})
            sql += f" WHERE user_id IN ({', '.join('?' * len(users))})"
            params = users
        sql += " ORDER BY user_id, ts, seq"
        rows = self._fetchall(sql, params)
        frame = pd.DataFrame.from_records(rows, columns=list(columns), coerce_float=False)
        for c in columns:
            if c in ("timestamp", "seq"):
                frame[c] = frame[c].astype("int64")
            elif c in ("quantity", "position"):  # whole numbers, possibly missing
                frame[c] = frame[c].astype("Int64")
        return frame

    def events_after(self, after_seq: int, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        """Events stored after sequence number ``after_seq`` as plain rows (the values of
        ``columns``, then ``seq``) in ``(user_id, timestamp, seq)`` order: what a follower of
        the store folds in before a request, without building a DataFrame (which costs about
        a millisecond for a batch of 50)."""
        bad = set(columns) - set(EVENT_COLUMNS) - {"unknown_item", "key_id"}
        if bad or "user_id" not in columns or "timestamp" not in columns:
            raise StoreError(f"events_after: columns must include user_id and timestamp and "
                             f"come from {EVENT_COLUMNS}, got {list(columns)}")
        db_cols = ["ts" if c == "timestamp" else c for c in (*columns, "seq")]
        # the few new rows are read by the seq key and sorted here: ordering in SQL would make
        # the planner walk the whole (user_id, ts, seq) index instead
        rows = self._fetchall(f"SELECT {', '.join(db_cols)} FROM events WHERE seq > ? "
                              "ORDER BY seq", [int(after_seq)])
        u, t = list(columns).index("user_id"), list(columns).index("timestamp")
        return sorted(rows, key=lambda r: (r[u], r[t], r[-1]))

    def items(self) -> pd.DataFrame:
        rows = self._fetchall(f"SELECT {', '.join(ITEM_COLUMNS)} FROM items ORDER BY item_id")
        return pd.DataFrame.from_records(rows, columns=list(ITEM_COLUMNS))

    def quarantined(self, limit: int | None = None, import_id: int | None = None) -> pd.DataFrame:
        sql = "SELECT import_id, kind, source, line, reason, detail, raw FROM quarantine"
        params: list[Any] = []
        if import_id is not None:
            sql += " WHERE import_id = ?"
            params.append(import_id)
        sql += " ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._fetchall(sql, params)
        cols = ["import_id", "kind", "source", "line", "reason", "detail", "raw"]
        return pd.DataFrame.from_records(rows, columns=cols)

    def imports(self) -> pd.DataFrame:
        rows = self._fetchall(
            "SELECT import_id, kind, source, format, started_at, finished_at, status, report "
            "FROM imports ORDER BY import_id"
        )
        cols = ["import_id", "kind", "source", "format", "started_at", "finished_at", "status",
                "report"]
        return pd.DataFrame.from_records(rows, columns=cols)

    @abstractmethod
    def backup(self, path: str | Path) -> Path:
        """An online, consistent copy of the whole store at ``path`` (readers and writers may
        keep working meanwhile)."""

    @abstractmethod
    def restore(self, path: str | Path) -> None:
        """Replace the store's content with a backup made by :meth:`backup`."""

    def sync_state(self) -> tuple[int, tuple[Any, ...]]:
        """What a follower of the store checks before each request, in one round trip: the
        highest event seq and the change markers of erasures, items, the serving model and
        retention purges."""
        row = self._fetchall(
            "SELECT (SELECT COALESCE(MAX(seq), 0) FROM events), "
            "(SELECT value FROM meta WHERE key = 'sync_erased'), "
            "(SELECT value FROM meta WHERE key = 'sync_items'), "
            "(SELECT value FROM meta WHERE key = 'sync_model'), "
            "(SELECT value FROM meta WHERE key = 'sync_retention')")[0]
        return int(row[0]), tuple(row[1:])

    def max_seq(self) -> int:
        """Sequence number of the last stored event (0 for an empty store)."""
        return int(self._fetchall("SELECT COALESCE(MAX(seq), 0) FROM events")[0][0])

    def delete_user(self, user_id: str) -> int:
        """Remove every event of one user; returns the number removed."""
        with self.transaction() as cur:
            cur.execute(self._q("DELETE FROM events WHERE user_id = ?"), (user_id,))
            return int(cur.rowcount)

    def delete_before(self, ts_ms: int, dry_run: bool = False) -> int:
        """Remove every event whose timestamp is before ``ts_ms`` (epoch ms; an event at
        exactly ``ts_ms`` stays); returns the number removed (``dry_run``: only counted)."""
        with self.transaction() as cur:
            if dry_run:
                cur.execute(self._q("SELECT COUNT(*) FROM events WHERE ts < ?"), (int(ts_ms),))
                return int(cur.fetchone()[0])
            cur.execute(self._q("DELETE FROM events WHERE ts < ?"), (int(ts_ms),))
            return int(cur.rowcount)

    def quarantine_raw(self, kind: str = "events", containing: str | None = None
                       ) -> list[tuple[int, str | None]]:
        """``(id, raw)`` of the quarantined rows of one kind, in the order stored; with
        ``containing``, only rows whose raw text contains that string (SQL ``LIKE``: a
        superset on SQLite, where it ignores ASCII case)."""
        sql, params = "SELECT id, raw FROM quarantine WHERE kind = ?", [kind]
        if containing is not None:
            escaped = (containing.replace("\\", "\\\\").replace("%", "\\%")
                       .replace("_", "\\_"))
            sql += " AND raw LIKE ? ESCAPE '\\'"
            params.append(f"%{escaped}%")
        return [(int(r[0]), r[1]) for r in self._fetchall(sql + " ORDER BY id", params)]

    def delete_quarantine(self, ids: Sequence[int] = (), created_before: int | None = None,
                          dry_run: bool = False) -> int:
        """Remove quarantined rows by id, or every row quarantined before ``created_before``
        (epoch ms); returns the number removed (``dry_run``: only counted)."""
        verb = "SELECT COUNT(*)" if dry_run else "DELETE"
        if created_before is not None:
            chunks = [[int(created_before)]]
            where = "created_at < ?"
        else:
            wanted = [int(i) for i in ids]
            chunks = [wanted[i:i + 500] for i in range(0, len(wanted), 500)]
        n = 0
        with self.transaction() as cur:
            for chunk in chunks:
                if created_before is None:
                    where = f"id IN ({', '.join('?' * len(chunk))})"
                cur.execute(self._q(f"{verb} FROM quarantine WHERE {where}"), tuple(chunk))
                n += int(cur.fetchone()[0]) if dry_run else int(cur.rowcount)
        return n

    def set_import_report(self, import_id: int, report: dict[str, Any]) -> None:
        """Replace the stored report of one import (erasure and retention scrub the rejected
        rows and user ids it quotes)."""
        with self.transaction() as cur:
            cur.execute(self._q("UPDATE imports SET report = ? WHERE import_id = ?"),
                        (json.dumps(report), int(import_id)))


class SQLiteStore(EventStore):
    """Embedded store: one SQLite file in WAL mode."""

    placeholder = "?"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._synced: tuple[int, tuple[int, tuple[Any, ...]]] | None = None
        super().__init__(f"sqlite:///{self.path}")

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = connect(self.path)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open SQLite store at {self.path}: {exc}") from exc
        return conn

    def _ddl(self) -> str:
        return _column_defs("INTEGER PRIMARY KEY")

    def backup(self, path: str | Path) -> Path:
        # SQLite's online backup API: a consistent snapshot while others read and write
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        dst = sqlite3.connect(tmp)
        try:
            self._conn.backup(dst)
        finally:
            dst.close()
        tmp.replace(path)
        return path

    def restore(self, path: str | Path) -> None:
        path = Path(path)
        try:
            src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            src.execute("SELECT COUNT(*) FROM events").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"{path} is not a Tansuo SQLite backup: {exc}") from exc
        self._synced = None
        try:
            pages = src.execute("PRAGMA page_size").fetchone()[0]
            own = self._conn.execute("PRAGMA page_size").fetchone()[0]
            if pages == own:
                src.backup(self._conn)  # page by page into the open store, in one go
            else:
                self._restore_resized(src, own)
        finally:
            src.close()

    def _restore_resized(self, src: sqlite3.Connection, page_size: int) -> None:
        """Restore a backup whose page size differs from this store's (a store made before
        stores got 16 KiB pages, or after): the backup API cannot change the page size of a
        database in WAL mode, so a copy is rebuilt with this store's page size first."""
        where = self.path.parent if self.path.is_file() else None
        with tempfile.TemporaryDirectory(dir=where, prefix=".tansuo-restore-") as tmp:
            copy = sqlite3.connect(Path(tmp) / "resized.db")
            try:
                src.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE")  # VACUUM resizes only then
                copy.execute(f"PRAGMA page_size={page_size}")
                copy.execute("VACUUM")
                copy.backup(self._conn)
            finally:
                copy.close()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        # BEGIN IMMEDIATE takes the write lock up front: no lock upgrade that can deadlock two
        # writers, and MAX(seq) read inside the transaction stays valid until commit.
        self._synced = None  # this connection's own commits leave data_version as it is
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN IMMEDIATE")
        with super().transaction() as cur:
            yield cur

    def sync_state(self) -> tuple[int, tuple[Any, ...]]:
        # SQLite counts commits by other connections (PRAGMA data_version): while it stands
        # still, the last answer still holds, and a service's per-request check is one
        # pragma instead of five subqueries. A write through this connection resets it.
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if self._synced is None or self._synced[0] != version:
            self._synced = (version, super().sync_state())
        return self._synced[1]

    @contextmanager
    def _reading(self) -> Iterator[Any]:
        # A read statement outside a transaction runs in its own read snapshot of the WAL and
        # takes no lock a writer holds: going through transaction() (BEGIN IMMEDIATE) made
        # every read, a service's per-request check included, queue for the write lock
        # behind other processes' imports, in SQLite's sleeping busy handler.
        cur = self._conn.cursor()
        try:
            yield cur
        finally:
            cur.close()

    def _insert_events(self, cur: sqlite3.Cursor, batch: pd.DataFrame,
                       import_id: int | None) -> int:
        # Rows are inserted in groups of the same filled columns (a view binds 6 values, not
        # 12), with explicit seq numbers so the batch keeps its order for equal timestamps.
        return insert_event_groups(self._conn, _event_groups(batch, import_id))

    def prepare_events(self, batch: pd.DataFrame, import_id: int | None = None,
                       quarantine: Sequence[QuarantineRow] = ()) -> PreparedEvents:
        """What :meth:`write_events` would bind for this batch, for a writer process
        (:class:`tansuo.data.sqlite_writer.WriterProcess`) to write in one transaction."""
        total = len(batch)
        batch = _unique_events(batch)
        return PreparedEvents(_event_groups(batch, import_id) if len(batch) else [], total,
                              _quarantine_rows(quarantine, import_id))


class PostgresStore(EventStore):
    """Production store on PostgreSQL (psycopg 3). Batches are loaded with COPY."""

    placeholder = "%s"
    _lock_row = " FOR UPDATE"

    def _connect(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(self.url, autocommit=False)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {_redact(self.url)}: {exc}") from exc

    def _ddl(self) -> str:
        return _column_defs("BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")

    def _tool(self, name: str) -> str:
        import shutil

        tool = shutil.which(name)
        if tool is None:
            raise StoreError(f"{name} is not installed: PostgreSQL backups need the client "
                             "tools (Debian: apt-get install postgresql-client)")
        return tool

    def backup(self, path: str | Path) -> Path:
        # pg_dump takes a consistent snapshot (one repeatable-read transaction) of this
        # store's schema without blocking writers
        import subprocess

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        schema = self._fetchall("SELECT current_schema()")[0][0]
        tmp = path.with_name(path.name + ".partial")
        proc = subprocess.run([self._tool("pg_dump"), "--format=custom", f"--schema={schema}",
                               f"--file={tmp}", f"--dbname={self.url}"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise StoreError(f"pg_dump failed: {proc.stderr.strip()}")
        tmp.replace(path)
        return path

    def restore(self, path: str | Path) -> None:
        import subprocess

        self._conn.close()  # pg_restore drops and recreates the tables
        try:
            proc = subprocess.run([self._tool("pg_restore"), "--clean", "--if-exists",
                                   "--no-owner", "--single-transaction", f"--dbname={self.url}",
                                   str(path)], capture_output=True, text=True)
        finally:
            self._conn = self._connect()
        if proc.returncode != 0:
            raise StoreError(f"pg_restore of {path} failed: {proc.stderr.strip()}")

    def _insert_events(self, cur: Any, batch: pd.DataFrame, import_id: int | None) -> int:
        # one writer at a time: seq numbers then commit in order, so a reader that has seen
        # seq n has seen every event up to n (followers of the store rely on it)
        cur.execute("SELECT pg_advisory_xact_lock(7317001)")
        cols, rows = _event_rows(batch, import_id)
        col_list = ", ".join(cols)
        all_cols = ", ".join((*_DB_EVENT_COLUMNS, "unknown_item", "import_id", "key_id"))
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS _stage_events ON COMMIT DELETE ROWS AS "
            f"SELECT {all_cols} FROM events WITH NO DATA"
        )
        cur.execute("ALTER TABLE _stage_events ADD COLUMN IF NOT EXISTS ord BIGINT "
                    "GENERATED ALWAYS AS IDENTITY")
        with cur.copy(f"COPY _stage_events ({col_list}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        # ORDER BY ord: identities (seq) follow the batch's order, so equal timestamps keep
        # their ingestion order as on SQLite.
        cur.execute(
            f"INSERT INTO events ({col_list}) SELECT {col_list} FROM _stage_events "
            f"ORDER BY ord ON CONFLICT (event_id) DO NOTHING"
        )
        return int(cur.rowcount)


def _redact(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


def open_store(url: str) -> EventStore:
    """Open the store at ``sqlite:///path`` or ``postgresql://...`` (creating tables if needed)."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute/path.db
        if not url.startswith("sqlite:///"):
            raise ConfigError(f"database URL {url!r} must look like sqlite:///path/to.db")
        path = unquote(url[len("sqlite:///"):].split("?", 1)[0])
        if not path:
            raise ConfigError(f"database URL {url!r} has no file path; use sqlite:///path/to.db")
        return SQLiteStore(path)
    if scheme in ("postgresql", "postgres"):
        return PostgresStore(url)
    raise ConfigError(
        f"unsupported database URL scheme {scheme!r} in {_redact(url)!r}; "
        "expected sqlite:///path.db or postgresql://user@host/db"
    )
