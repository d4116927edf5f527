"""The event store: same behaviour on SQLite and PostgreSQL (the ``store`` fixture runs both)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tansuo.data.dataset import interactions_from_events, load_interactions, load_sequences
from tansuo.data.schema import EVENT_COLUMNS, Event, EventType, derive_event_id
from tansuo.data.store import QuarantineRow, SQLiteStore, open_store
from tansuo.errors import ConfigError, StoreError


def _events(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for c in EVENT_COLUMNS:
        if c not in frame:
            frame[c] = None
    frame["timestamp"] = frame["timestamp"].astype("int64")
    for c in ("dwell_seconds", "quantity", "amount", "rating", "position"):
        frame[c] = frame[c].astype("float64")
    frame["event_id"] = [
        r.get("event_id") or derive_event_id(r["user_id"], r.get("item_id"), r["type"],
                                             r["timestamp"])
        for r in rows
    ]
    return frame[list(EVENT_COLUMNS)]


ROWS = [
    {"user_id": "u1", "item_id": "a", "type": "view", "timestamp": 3_000, "dwell_seconds": 4.5},
    {"user_id": "u1", "item_id": "b", "type": "purchase", "timestamp": 1_000, "quantity": 2,
     "amount": 19.98},
    {"user_id": "u2", "item_id": "a", "type": "dislike", "timestamp": 2_000},
    {"user_id": "u1", "item_id": None, "type": "search", "timestamp": 2_000, "query": "red shoe"},
    {"user_id": "u2", "item_id": "c", "type": "review", "timestamp": 5_000, "rating": 4.0,
     "text": "好看"},
]


def test_write_is_idempotent_and_counts_duplicates(store):
    first = store.write_events(_events(ROWS))
    assert (first.inserted, first.duplicates) == (5, 0)
    again = store.write_events(_events(ROWS))
    assert (again.inserted, again.duplicates) == (0, 5)
    assert store.count_events() == 5


def test_events_come_back_typed_and_ordered_by_user_then_time(store):
    store.write_events(_events(ROWS))
    got = store.events()
    assert list(got.columns) == list(EVENT_COLUMNS)
    assert got[["user_id", "timestamp"]].values.tolist() == [
        ["u1", 1_000], ["u1", 2_000], ["u1", 3_000], ["u2", 2_000], ["u2", 5_000]]
    purchase = got.iloc[0]
    assert purchase["type"] == "purchase" and purchase["quantity"] == 2
    assert purchase["amount"] == pytest.approx(19.98)
    assert got.iloc[1]["query"] == "red shoe" and got.iloc[1]["item_id"] is None
    assert got.iloc[4]["text"] == "好看"
    assert store.events(user_ids=["u2"])["item_id"].tolist() == ["a", "c"]
    assert store.events(user_ids=[]).empty


def test_events_after_a_seq_are_plain_rows_in_user_time_order(store):
    store.write_events(_events(ROWS[:2]))
    first = store.max_seq()
    store.write_events(_events(ROWS[2:]))
    cols = ("user_id", "item_id", "type", "timestamp", "position")
    rows = store.events_after(first, cols)
    assert [r[:4] for r in rows] == [("u1", None, "search", 2_000), ("u2", "a", "dislike", 2_000),
                                     ("u2", "c", "review", 5_000)]
    assert all(r[4] is None and r[-1] > first for r in rows)  # missing is None; then seq
    assert store.events_after(store.max_seq(), cols) == []
    assert [r[:2] for r in store.events_after(0, ("timestamp", "user_id"))] == [
        (1_000, "u1"), (2_000, "u1"), (3_000, "u1"), (2_000, "u2"), (5_000, "u2")]
    with pytest.raises(StoreError, match="user_id and timestamp"):
        store.events_after(0, ("user_id", "item_id"))
    with pytest.raises(StoreError, match="from"):
        store.events_after(0, ("user_id", "timestamp", "seq; DROP TABLE events"))


def test_equal_timestamps_keep_ingestion_order(store):
    rows = [{"user_id": "u", "item_id": x, "type": "view", "timestamp": 7} for x in "zyxw"]
    store.write_events(_events(rows[:2]))
    store.write_events(_events(rows[2:]))
    assert store.events()["item_id"].tolist() == ["z", "y", "x", "w"]


def test_failed_batch_leaves_nothing_behind(store):
    bad = _events(ROWS)
    bad.loc[2, "user_id"] = None  # violates NOT NULL mid-batch
    with pytest.raises(Exception):  # noqa: B017 - each driver raises its own integrity error
        store.write_events(bad, quarantine=[QuarantineRow("events", "f.csv", 9, "x", "d", "r")])
    assert store.count_events() == 0
    assert store.quarantined().empty
    assert store.write_events(_events(ROWS)).inserted == 5


def test_quarantine_is_idempotent_per_source_line_and_reason(store):
    rows = [QuarantineRow("events", "f.csv", 3, "bad_timestamp", "timestamp 'x' ...", "raw")]
    store.write_events(_events([]), quarantine=rows)
    store.write_events(_events([]), quarantine=rows)
    q = store.quarantined()
    assert len(q) == 1 and q.loc[0, "line"] == 3 and q.loc[0, "reason"] == "bad_timestamp"


def test_items_upsert_replaces_fields(store):
    items = pd.DataFrame({"item_id": ["a", "b"], "title": ["Shoe", "Tent"],
                          "category": ["Sports > Running", "Outdoors > Camping"],
                          "price": [50.0, np.nan], "attributes": ['{"c": 1}', None]})
    assert store.upsert_items(items) == 2
    store.upsert_items(pd.DataFrame({"item_id": ["a"], "title": ["Trail shoe"], "price": [60.0]}))
    got = store.items().set_index("item_id")
    assert got.loc["a", "title"] == "Trail shoe" and got.loc["a", "price"] == 60.0
    assert got.loc["a", "category"] == "Sports > Running"  # not given: kept
    assert got.loc["b", "attributes"] is None and got.loc["b", "category"] == "Outdoors > Camping"
    assert store.item_ids() == {"a", "b"}


def test_meta_and_imports_log(store):
    store.set_meta("dataset", {"name": "x"})
    assert store.get_meta("dataset") == {"name": "x"}
    assert store.get_meta("missing", 5) == 5
    iid = store.begin_import("events", "/f.csv", "csv")
    store.finish_import(iid, "done", {"accepted": 1})
    log = store.imports()
    assert log.loc[0, "status"] == "done" and log.loc[0, "import_id"] == iid


def test_delete_user_removes_only_that_user(store):
    store.write_events(_events(ROWS))
    assert store.delete_user("u1") == 3
    assert set(store.events()["user_id"]) == {"u2"}


def test_sequences_are_time_ordered_and_skip_searches(store):
    store.write_events(_events(ROWS))
    seqs = load_sequences(store)
    assert list(seqs.users.ids) == ["u1", "u2"]
    assert [seqs.items.id(i) for i in seqs.sequence("u1")] == ["b", "a"]
    assert [seqs.items.id(i) for i in seqs.sequence("u2")] == ["a", "c"]
    assert seqs.sequence("nobody").size == 0
    table = seqs.to_arrow()
    assert table.column("item_id").to_pylist() == [["b", "a"], ["a", "c"]]
    assert table.column("type").to_pylist() == [["purchase", "view"], ["dislike", "review"]]


def test_interaction_matrix_weights_and_dislikes(store):
    store.write_events(_events(ROWS))
    store.upsert_items(pd.DataFrame({"item_id": ["a", "b", "c", "never-seen"]}))
    m = load_interactions(store)
    assert m.shape == (2, 4)  # the whole catalogue is scoreable
    u1, u2 = m.users.index("u1"), m.users.index("u2")
    a, b = m.items.index("a"), m.items.index("b")
    dense = m.matrix.toarray()
    assert dense[u1, a] == 1.0 and dense[u1, b] == 8.0  # view 1, purchase 8
    assert dense[u2, a] == -5.0  # a dislike is negative
    assert m.positive().toarray()[u2, a] == 0 and m.negative().toarray()[u2, a] == 1
    custom = load_interactions(store, weights={"purchase": 3.0})
    assert custom.matrix.toarray()[u1, b] == 3.0


def test_interactions_reject_unknown_types():
    frame = pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "type": ["teleport"]})
    with pytest.raises(ValueError, match="teleport"):
        interactions_from_events(frame)


def test_event_record_round_trip():
    e = Event("u1", EventType.VIEW, 1_700_000_000_000, item_id="i", dwell_seconds=3.0)
    row = e.to_row()
    assert row["event_id"] == e.id == derive_event_id("u1", "i", "view", 1_700_000_000_000)
    assert e.id.startswith("d:") and e.time.year == 2023
    assert Event("u1", EventType.VIEW, 1, event_id="mine").id == "mine"


def test_open_store_urls(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/a/b.db")
    assert isinstance(s, SQLiteStore) and (tmp_path / "a" / "b.db").exists()
    assert s._fetchall("PRAGMA journal_mode")[0][0] == "wal"
    s.close()
    with pytest.raises(ConfigError, match="expected sqlite"):
        open_store("mysql://x")
    with pytest.raises(ConfigError, match="no file path"):
        open_store("sqlite:///")


def test_unreachable_postgres_is_a_clear_error():
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL at postgresql://u:\\*\\*\\*@"):
        open_store("postgresql://u:secret@127.0.0.1:1/none?connect_timeout=2")


def test_update_meta_from_several_connections_loses_no_update(store, store_url):
    # Each writer reads the list, waits, then writes it back with its own entry added: done as
    # get_meta + set_meta, all but one entry would be lost; update_meta serialises them.
    import threading
    import time

    writers = 6
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def add(name: str) -> None:
        conn = open_store(store_url)
        try:
            barrier.wait()

            def slow(current: list[str]) -> list[str]:
                time.sleep(0.05)
                return sorted({*current, name})
            conn.update_meta("erased_users_test", slow, [])
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=add, args=(f"u{i}",)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.get_meta("erased_users_test") == [f"u{i}" for i in range(writers)]
    old, new = store.update_meta("erased_users_test", lambda v: v[:1], [])
    assert old == [f"u{i}" for i in range(writers)] and new == ["u0"]
    assert store.update_meta("fresh_key", lambda v: v + 1, 41) == (41, 42)


def test_sqlite_reads_do_not_wait_for_another_connections_write(tmp_path):
    """WAL readers take no lock a writer holds: a service's per-request check of the store
    must not queue behind another process's import (it used to, taking the write lock)."""
    import sqlite3
    import time

    store = SQLiteStore(tmp_path / "s.db")
    store.write_events(_events(ROWS))
    store.set_meta("sync_model", "m1")
    writer = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process, mid-import: holds the write lock
    writer.execute("INSERT INTO meta (key, value) VALUES ('x', '1')")
    started = time.perf_counter()
    seq, markers = store.sync_state()
    assert store.get_meta("x") is None and store.max_seq() == seq == len(ROWS)
    assert time.perf_counter() - started < 5  # not the 30 s busy timeout
    writer.execute("COMMIT")
    assert store.get_meta("x") == 1 and markers[2] == '"m1"'
    writer.close()
    store.close()


def test_sqlite_sync_state_follows_every_connections_commits(tmp_path):
    """sync_state answers from its last reading while no connection has committed since
    (PRAGMA data_version), and sees commits by other connections and by its own."""
    import sqlite3

    store = SQLiteStore(tmp_path / "s.db")
    assert store.sync_state() == (0, (None, None, None, None))
    store.write_events(_events(ROWS[:2]))  # its own commit
    assert store.sync_state()[0] == 2
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("INSERT INTO meta (key, value) VALUES ('sync_items', '\"n1\"')")
    assert store.sync_state() == (2, (None, '"n1"', None, None))
    SQLiteStore(tmp_path / "s.db").write_events(_events(ROWS[2:]))  # another store's commit
    assert store.sync_state()[0] == len(ROWS)
    store.set_meta("sync_model", "m2")
    assert store.sync_state()[1][2] == '"m2"'
    other.close()
    store.close()
