"""Backups: an online copy of the store that restores identical content (both backends)."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest

from tansuo.data.importer import import_frame
from tansuo.data.sqlite_writer import PAGE_SIZE
from tansuo.data.store import SQLiteStore
from tansuo.errors import StoreError
from test_cli import run

EVENTS = pd.DataFrame({
    "user_id": ["u1", "u1", "u2", "u3"], "item_id": ["i1", "i2", "i1", None],
    "type": ["view", "purchase", "click", "search"],
    "timestamp": ["2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", "2026-01-02T00:00:00Z",
                  "2026-01-03T00:00:00Z"], "query": [None, None, None, "red shoes"],
    "amount": [None, 19.9, None, None]})
ITEMS = pd.DataFrame({"item_id": ["i1", "i2"], "title": ["Red shoe", "Blue hat"],
                      "category": ["Shoes", "Hats"]})


def _content(store):
    return (store.events(), store.items(), store.get_meta("erased_users"))


def test_backup_restore_round_trip(store, tmp_path):
    import_frame(store, ITEMS, "items")
    import_frame(store, EVENTS)
    store.set_meta("erased_users", '["u9"]')
    before = _content(store)
    path = store.backup(tmp_path / "backup.bin")
    assert path.stat().st_size > 0
    store.delete_user("u1")  # change everything after the backup
    import_frame(store, EVENTS.assign(user_id="late"))
    store.set_meta("erased_users", "[]")
    store.restore(path)
    after = _content(store)
    pd.testing.assert_frame_equal(before[0], after[0])
    pd.testing.assert_frame_equal(before[1], after[1])
    assert before[2] == after[2] == '["u9"]'
    import_frame(store, EVENTS.assign(user_id="next"))  # the restored store keeps working
    assert store.count_events() == len(EVENTS) * 2


def _page_size(store: SQLiteStore) -> int:
    return store._conn.execute("PRAGMA page_size").fetchone()[0]


def _store_with_pages(path, page_size: int) -> SQLiteStore:
    conn = sqlite3.connect(path)  # as SQLite made stores before they got PAGE_SIZE pages
    conn.execute(f"PRAGMA page_size={page_size}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return SQLiteStore(path)


@pytest.mark.parametrize("backup_pages, store_pages", [(4096, PAGE_SIZE), (PAGE_SIZE, 4096)])
def test_restore_across_page_sizes(tmp_path, backup_pages, store_pages):
    """A backup of a store with other pages (one made before stores got 16 KiB pages, or
    the other way round) restores identical content: SQLite's backup API alone refuses to
    change the page size of a store in WAL mode."""
    source = _store_with_pages(tmp_path / "source.db", backup_pages)
    target = _store_with_pages(tmp_path / "target.db", store_pages)
    try:
        assert (_page_size(source), _page_size(target)) == (backup_pages, store_pages)
        import_frame(source, ITEMS, "items")
        import_frame(source, EVENTS)
        path = source.backup(tmp_path / "backup.db")
        import_frame(target, EVENTS.assign(user_id="other"))  # replaced by the restore
        target.restore(path)
        for got, want in zip(_content(target), _content(source), strict=True):
            if isinstance(want, pd.DataFrame):
                pd.testing.assert_frame_equal(got, want)
            else:
                assert got == want
        assert _page_size(target) == store_pages
        import_frame(target, EVENTS.assign(user_id="next"))  # and keeps working
        assert target.count_events() == len(EVENTS) * 2
        assert not list(tmp_path.glob(".tansuo-restore-*"))  # the resized copy is gone
    finally:
        source.close()
        target.close()


def test_new_sqlite_store_has_16k_pages(tmp_path):
    store = SQLiteStore(tmp_path / "new.db")
    try:
        assert _page_size(store) == PAGE_SIZE == 16384
    finally:
        store.close()


def test_restore_refuses_what_is_not_a_backup(store, tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a backup at all")
    with pytest.raises(StoreError):
        store.restore(junk)


def test_cli_backup_and_restore(tmp_path):
    home = tmp_path / "home"
    (tmp_path / "e.csv").write_text("user_id,item_id,type,timestamp\nu1,i1,view,1767225600\n"
                                    "u2,i2,view,1767225601\n")
    run(home, "import", "events", str(tmp_path / "e.csv"))
    assert '"events": 2' in run(home, "backup", str(tmp_path / "b.db"), "--json").stdout
    run(home, "import", "events", str(tmp_path / "e.csv").replace("e.csv", "e.csv"))
    (tmp_path / "f.csv").write_text("user_id,item_id,type,timestamp\nu3,i3,view,1767225602\n")
    run(home, "import", "events", str(tmp_path / "f.csv"))
    assert '"events": 2' in run(home, "restore", str(tmp_path / "b.db"), "--yes",
                                "--json").stdout
    proc = run(home, "restore", str(tmp_path / "missing.db"), "--yes", check=False)
    assert proc.returncode == 2 and "no backup at" in proc.stderr
