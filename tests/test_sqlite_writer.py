"""The SQLite writer process: the same rows as an in-process write, errors carried back to the
parent, and a bulk import that uses it is still whole-chunk transactional."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tansuo.data import importer
from tansuo.data.formats import FORMATS, ReadOptions, read_chunks
from tansuo.data.importer import ImportOptions, import_events
from tansuo.data.schema import EVENT_COLUMNS, derive_event_id
from tansuo.data.sqlite_writer import WriterProcess
from tansuo.data.store import QuarantineRow, SQLiteStore
from tansuo.errors import StoreError

COLUMNS = "seq, event_id, user_id, item_id, type, ts, dwell_seconds, query, quantity, amount, " \
          "rating, text, request_id, position, unknown_item, import_id"


def _batch(n: int, start: int = 0, user: str = "u") -> pd.DataFrame:
    rng = np.random.default_rng(start)
    rows = []
    for i in range(start, start + n):
        kind = ["view", "search", "purchase", "review"][i % 4]
        rows.append({
            "user_id": f"{user}{i % 7}", "item_id": None if kind == "search" else f"i{i % 11}",
            "type": kind, "timestamp": 1_700_000_000_000 + i * 1000,
            "dwell_seconds": float(rng.integers(1, 60)) if kind == "view" else np.nan,
            "query": "red shoes" if kind == "search" else None,
            "quantity": 2.0 if kind == "purchase" else np.nan,
            "amount": 9.5 if kind == "purchase" else np.nan,
            "rating": 4.0 if kind == "review" else np.nan,
            "text": "好看" if kind == "review" else None, "request_id": None,
            "position": np.nan,
        })
    frame = pd.DataFrame(rows)
    frame.insert(0, "event_id", [derive_event_id(r["user_id"], r["item_id"], r["type"],
                                                 r["timestamp"]) for r in rows])
    return frame[list(EVENT_COLUMNS)]


def _rows(path: Path, table: str = "events") -> list[tuple]:
    cols = COLUMNS if table == "events" else "import_id, kind, source, line, reason, detail, raw"
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT {cols} FROM {table} ORDER BY 1, 2, 3, 4").fetchall()


@pytest.mark.parametrize("n", [5, 700])  # row-by-row and vectorised grouping
def test_the_child_stores_what_an_in_process_write_stores(tmp_path: Path, n: int) -> None:
    batch, rejects = _batch(n), [QuarantineRow("events", "f.csv", 3, "bot_user", "d", "{}")]
    here, there = SQLiteStore(tmp_path / "here.db"), SQLiteStore(tmp_path / "there.db")
    expected = here.write_events(batch, 1, rejects)
    with WriterProcess(there.path) as child:
        child.submit(there.prepare_events(batch, 1, rejects))
        assert child.result() == expected.inserted == n
        child.submit(there.prepare_events(batch, 1, rejects))  # again: all duplicates
        assert child.result() == 0
    assert _rows(here.path) == _rows(there.path)
    strip = [r[:-1] for r in _rows(here.path, "quarantine")]
    assert strip == [r[:-1] for r in _rows(there.path, "quarantine")]


def test_a_failing_batch_is_raised_in_the_parent_and_not_stored(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    bad = _batch(300)
    bad.loc[150, "user_id"] = None  # NOT NULL: the whole batch must fail
    with WriterProcess(store.path) as child:
        child.submit(store.prepare_events(bad))
        with pytest.raises(sqlite3.IntegrityError, match="user_id"):
            child.result()
        child.submit(store.prepare_events(_batch(10)))  # the child goes on with the next
        assert child.result() == 10
    assert store.count_events() == 10


def test_a_dead_child_is_a_clear_error(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    child = WriterProcess(store.path)
    child.ready()
    child._proc.kill()
    with pytest.raises(StoreError, match="writer process exited .*running the import again"):
        child.submit(store.prepare_events(_batch(50_000)))
        child.result()
    child.close()
    unborn = WriterProcess(store.path)
    unborn._proc.kill()
    with pytest.raises(StoreError, match="writer process did not start"):
        unborn.submit(store.prepare_events(_batch(10)))
    unborn.close()


def _csv(path: Path, n: int, boom_at: int | None = None) -> None:
    lines = ["user_id,item_id,type,timestamp"]
    lines += [f"{'boom' if i == boom_at else f'u{i % 50}'},i{i % 97},view,"
              f"{1767225600000 + i * 1000}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")


def test_a_bulk_import_writes_through_the_child(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[str] = []
    real = importer._writer
    monkeypatch.setattr(importer, "_writer", lambda store, separate: used.append(
        type(w := real(store, separate)).__name__) or w)
    _csv(tmp_path / "e.csv", 5_000)
    opts = ImportOptions(chunk_size=1_000, progress=False)
    child = SQLiteStore(tmp_path / "child.db")
    report = import_events(child, tmp_path / "e.csv", opts)
    thread = SQLiteStore(tmp_path / "thread.db")
    monkeypatch.setattr(importer, "_writer", lambda store, separate: importer._ThreadWriter(store))
    import_events(thread, tmp_path / "e.csv", opts)
    assert used == ["_ProcessWriter"] and report.accepted == 5_000
    assert [r[:-1] for r in _rows(child.path)] == [r[:-1] for r in _rows(thread.path)]


def test_a_batch_failing_in_the_child_fails_the_import_after_whole_chunks(
        tmp_path: Path) -> None:
    _csv(tmp_path / "e.csv", 5_000, boom_at=2_500)
    store = SQLiteStore(tmp_path / "s.db")
    with sqlite3.connect(store.path) as conn:  # a store rule the child runs into mid-file
        conn.execute("CREATE TRIGGER no_boom BEFORE INSERT ON events WHEN NEW.user_id = 'boom' "
                     "BEGIN SELECT RAISE(ABORT, 'user boom is not allowed'); END")
    opts = ImportOptions(chunk_size=1_000, progress=False)
    with pytest.raises(sqlite3.IntegrityError, match="user boom is not allowed"):
        import_events(store, tmp_path / "e.csv", opts)
    sizes = [len(c.frame) for c in read_chunks(tmp_path / "e.csv", FORMATS["csv"], "events",
                                               ReadOptions(chunk_size=1_000))]
    ends = np.cumsum(sizes)
    assert store.count_events() == ends[ends <= 2_500][-1]  # the chunks before the failing one
    assert store._fetchall("SELECT status FROM imports") == [("failed",)]


def test_a_writer_process_that_cannot_start_hands_over_to_a_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(WriterProcess, "module", "tansuo.data.no_such_writer")
    _csv(tmp_path / "e.csv", 3_000)
    store = SQLiteStore(tmp_path / "s.db")
    with caplog.at_level("WARNING", logger="tansuo.data"):
        report = import_events(store, tmp_path / "e.csv",
                               ImportOptions(chunk_size=1_000, progress=False))
    assert report.accepted == 3_000 and store.count_events() == 3_000
    assert "writer process did not start" in caplog.text
    assert "writing from a thread" in caplog.text


def test_an_in_memory_store_is_written_in_process(tmp_path: Path) -> None:
    _csv(tmp_path / "e.csv", 3_000)
    store = SQLiteStore(":memory:")
    report = import_events(store, tmp_path / "e.csv", ImportOptions(chunk_size=1_000,
                                                                    progress=False))
    assert report.accepted == 3_000 and store.count_events() == 3_000
    assert not (Path.cwd() / ":memory:").exists()


def _messy_csv(path: Path, n: int) -> None:
    """Good rows, malformed lines (cut by the reader), bad values and a bot user."""
    lines = ["user_id,item_id,type,timestamp"]
    for i in range(n):
        if i % 97 == 13:
            lines.append(f"u{i % 40},i{i % 31},view")  # a field short: the reader rejects it
        elif i % 89 == 7:
            lines.append(f"u{i % 40},i{i % 31},view,not a time")
        elif i % 5 == 0:
            lines.append(f"bot,i{i % 31},click,{1767225600000 + i}")  # hundreds per minute
        else:
            lines.append(f"u{i % 40},i{i % 31},view,{1767225600000 + i * 1000}")
    path.write_text("\n".join(lines) + "\n")


def test_a_bulk_import_in_growing_pieces_stores_what_whole_chunks_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _messy_csv(tmp_path / "e.csv", 6_000)
    opts = ImportOptions(chunk_size=1_000, progress=False)
    pieces: list[int] = []
    real = importer._ramped

    def ramped(chunks, first, cap):
        assert (first, cap) == (150, 1_000)
        for piece in real(chunks, first, cap):
            pieces.append(len(piece.frame) + len(piece.rejects))
            yield piece
    monkeypatch.setattr(importer, "_FIRST_PIECE", 150)
    monkeypatch.setattr(importer, "_ramped", ramped)
    child = SQLiteStore(tmp_path / "child.db")
    got = import_events(child, tmp_path / "e.csv", opts)
    monkeypatch.setattr(importer, "_writer", lambda store, separate: importer._ThreadWriter(store))
    thread = SQLiteStore(tmp_path / "thread.db")
    want = import_events(thread, tmp_path / "e.csv", opts)
    assert pieces[0] < 200 and len(pieces) > 2 * 7  # cut in both passes, small first
    assert got.bot_users == want.bot_users == ["bot"]
    for key in ("accepted", "duplicates", "rejected", "rejected_by_reason"):
        assert getattr(got, key) == getattr(want, key), key
    assert got.rejected_by_reason["malformed_row"] > 0 and got.accepted > 4_000

    def stored(path: Path) -> tuple[list[tuple], list[tuple]]:
        with sqlite3.connect(path) as conn:
            events = conn.execute(f"SELECT {COLUMNS.replace('seq, ', '')} FROM events "
                                  "ORDER BY seq").fetchall()
            quarantine = conn.execute("SELECT line, reason, detail, raw FROM quarantine "
                                      "ORDER BY line, reason").fetchall()
        return [e[:-1] for e in events], quarantine
    assert stored(child.path) == stored(thread.path)


def test_ramped_pieces_grow_and_keep_every_row_and_reject_once() -> None:
    from tansuo.data.formats import RawChunk, RawReject

    def chunk(first_line: int, n: int) -> RawChunk:
        lines = [first_line + 2 * i for i in range(n)]  # a reject may sit between rows
        rejects = [RawReject(line + 1, "malformed_row", "short", "x") for line in lines[::9]]
        rejects.append(RawReject(first_line - 1, "malformed_row", "short", "before"))
        return RawChunk(pd.DataFrame({"v": range(first_line, first_line + n)}), lines, rejects)

    chunks = [chunk(2, 1_000), chunk(3_000, 1_000), chunk(6_000, 400)]
    pieces = list(importer._ramped(iter(chunks), 100, 1_000))
    sizes = [len(p.frame) for p in pieces]
    assert sizes[:4] == [100, 125, 156, 195]  # a quarter more each time
    assert max(sizes) <= 1_000 and pieces[-1] is chunks[-1]  # then whole chunks
    assert all(len(p.frame) >= 25 for p in pieces)  # no slivers
    for p in pieces:
        assert list(p.frame.index) == list(range(len(p.frame)))
        assert len(p.lines) == len(p.frame)
    assert pd.concat([p.frame for p in pieces], ignore_index=True).equals(
        pd.concat([c.frame for c in chunks], ignore_index=True))
    assert [x for p in pieces for x in p.lines] == [x for c in chunks for x in c.lines]
    got = sorted((r.line, r.raw) for p in pieces for r in p.rejects)
    assert got == sorted((r.line, r.raw) for c in chunks for r in c.rejects)
    previous = -1
    for p in pieces:  # a reject travels with the rows after it (a chunk's tail: before it)
        assert all(previous < r.line <= p.lines[-1] + 1 for r in p.rejects)
        previous = p.lines[-1]
