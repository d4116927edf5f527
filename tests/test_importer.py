"""The importer end to end, on SQLite and PostgreSQL (the ``store`` fixture): the acceptance
test (1,000 good rows, 37 bad ones), idempotent re-imports, chunking, in-memory frames."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from tansuo.config import CleaningConfig
from tansuo.data.importer import (
    ImportOptions,
    ImportReport,
    import_events,
    import_frame,
    import_items,
)
from tansuo.data.store import EventStore
from tansuo.errors import UnreadableSourceError

TS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
MINUTE = 1_700_000_040_000  # start of a calendar minute
HEADER = "user_id,item_id,type,timestamp,query,rating,quantity,dwell_seconds,text"
GOOD_TYPES = ("view", "click", "cart", "purchase", "favorite", "review")

# Bad rows: (reason, row text). {k} makes each one distinct.
BAD_KINDS: list[tuple[str, str]] = [
    ("missing_user_id", ",b{k},view,{ts},,,,,"),
    ("missing_type", "ub{k},b{k},,{ts},,,,,"),
    ("unknown_type", "ub{k},b{k},teleport,{ts},,,,,"),
    ("missing_timestamp", "ub{k},b{k},view,,,,,,"),
    ("bad_timestamp", "ub{k},b{k},view,last tuesday,,,,,"),
    ("future_timestamp", "ub{k},b{k},view,2999-01-01T00:00:00Z,,,,,"),
    ("too_old_timestamp", "ub{k},b{k},view,1970-01-02T00:00:00Z,,,,,"),
    ("missing_item_id", "ub{k},,view,{ts},,,,,"),
    ("missing_query", "ub{k},,search,{ts},,,,,"),
    ("invalid_rating", "ub{k},b{k},review,{ts},,11,,,"),
    ("invalid_quantity", "ub{k},b{k},purchase,{ts},,,1.5,,"),
    ("invalid_dwell_seconds", "ub{k},b{k},view,{ts},,,,-3,"),
    ("malformed_row", "ub{k},b{k},view"),
    ("malformed_row", "ub{k},b{k},view,{ts},,,,,,extra,more"),
]
BOT_LIMIT = 4


def planted_file(path: Path, good: int = 1000, bad: int = 37, every: int = 27
                 ) -> tuple[Path, dict[int, str], set[tuple[str, str, str, int]]]:
    """A CSV of ``good`` valid rows with ``bad`` bad rows interleaved. Some good rows hold a
    quoted two-line text; every seventh bad row is a bot's (5 bot events in one minute,
    spread over the file). Returns (path, {line: reason}, {(user, item, type, ts)})."""
    lines = [HEADER]
    planted: dict[int, str] = {}
    expected: set[tuple[str, str, str, int]] = set()
    k = 0
    for g in range(good):
        typ = GOOD_TYPES[g % len(GOOD_TYPES)]
        ts = TS + g * 7919
        rating = str((g % 11) * 0.5) if typ == "review" else ""
        quantity = str(g % 4 + 1) if typ == "purchase" else ""
        dwell = str(g % 300) if typ == "view" else ""
        text = '"first line\nsecond line, with a comma"' if g % 50 == 7 else ""
        row = f"u{g % 40},i{g},{typ},{ts},,{rating},{quantity},{dwell},{text}"
        lines.extend(row.split("\n"))  # a quoted newline takes two lines
        expected.add((f"u{g % 40}", f"i{g}", typ, ts))
        if g % every == every // 2 and k < bad:
            if k % 7 == 3:
                reason, text_row = "bot_user", f"bot,b{k},view,{MINUTE + k * 100},,,,,"
            else:
                reason, template = BAD_KINDS[(k - k // 7) % len(BAD_KINDS)]
                text_row = template.format(k=k, ts=TS + k)
            lines.append(text_row)
            planted[len(lines)] = reason
            k += 1
    assert k == bad, "the layout did not fit all bad rows"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, planted, expected


def stored_keys(store: EventStore) -> set[tuple[str, str, str, int]]:
    frame = store.events(["user_id", "item_id", "type", "timestamp"])
    return {tuple(r) for r in frame.itertuples(index=False, name=None)}


def wipe(store: EventStore) -> None:
    with store.transaction() as cur:
        for table in ("events", "quarantine", "items"):
            cur.execute(f"DELETE FROM {table}")


def quarantine_rows(store: EventStore) -> list[tuple[int, str, str]]:
    q = store.quarantined()
    return sorted(zip(q["line"], q["reason"], q["detail"], strict=True))


def options(**kw: Any) -> ImportOptions:
    return ImportOptions(cleaning=CleaningConfig(bot_max_events_per_minute=BOT_LIMIT), **kw)


@pytest.mark.parametrize("chunk_size", [100_000, 7])
def test_acceptance_1000_good_37_bad(store: EventStore, tmp_path: Path, chunk_size: int
                                     ) -> None:
    path, planted, expected = planted_file(tmp_path / "events.csv")
    assert len(planted) == 37 and len(expected) == 1000
    assert len(set(planted.values())) == 14  # bot_user and 13 other reasons

    report = import_events(store, path, options(chunk_size=chunk_size))
    assert (report.rows_read, report.accepted, report.duplicates, report.rejected) == \
        (1037, 1000, 0, 37)
    assert report.rejected_by_reason == dict(Counter(planted.values()))
    assert report.bot_users == ["bot"]
    assert report.status == "done" and not report.nothing_imported
    first_lines = sorted(planted)[:20]
    assert [(r["line"], r["reason"]) for r in report.first_rejected] == \
        [(line, planted[line]) for line in first_lines]
    assert all(r["detail"] for r in report.first_rejected)

    assert stored_keys(store) == expected
    assert store.count_events() == 1000
    q = store.quarantined()
    assert len(q) == 37
    assert dict(zip(q["line"], q["reason"], strict=True)) == planted
    assert set(q["kind"]) == {"events"}
    assert set(q["source"]) == {str(path.resolve())}
    assert set(q["import_id"]) == {report.import_id}
    assert q["detail"].str.len().min() > 0

    again = import_events(store, path, options(chunk_size=chunk_size))
    assert (again.rows_read, again.accepted, again.duplicates, again.rejected) == \
        (1037, 0, 1000, 37)
    assert again.status == "done"
    assert store.count_events() == 1000
    assert len(store.quarantined()) == 37
    imports = store.imports()
    assert imports["status"].tolist() == ["done", "done"]
    assert json.loads(imports["report"].iloc[0])["accepted"] == 1000


def test_planted_details(store: EventStore, tmp_path: Path) -> None:
    path, planted, _ = planted_file(tmp_path / "events.csv")
    import_events(store, path, options())
    q = store.quarantined().set_index("line")
    malformed = [line for line, reason in planted.items() if reason == "malformed_row"]
    fields = {q.loc[line, "detail"].split(";")[0] for line in malformed}
    assert fields == {"has 3 fields", "has 11 fields"}
    assert all(q.loc[line, "detail"].endswith(
        "expected 9 (user_id, item_id, type, timestamp, query, rating, quantity, "
        "dwell_seconds, text)") for line in malformed)
    for line, reason in planted.items():
        if reason.startswith(("missing_", "invalid_")):
            field_name = reason.split("_", 1)[1]
            if reason == "missing_query":
                field_name = "query"
            assert field_name in q.loc[line, "detail"], (line, reason)


def test_chunk_size_does_not_change_the_result(store: EventStore, tmp_path: Path) -> None:
    path, planted, _ = planted_file(tmp_path / "events.csv", good=600, bad=37, every=16)
    assert Counter(planted.values())["bot_user"] == 5
    results = []
    for chunk_size in (7, 100_000, 1):
        wipe(store)
        report = import_events(store, path, options(chunk_size=chunk_size))
        events = store.events().sort_values("event_id").reset_index(drop=True)
        results.append((report, events, quarantine_rows(store)))
    (r7, e7, q7), (rbig, ebig, qbig), (r1, e1, q1) = results
    pd.testing.assert_frame_equal(e7, ebig)
    pd.testing.assert_frame_equal(e1, ebig)
    assert q7 == qbig == q1
    assert len(e7) == 600 and len(q7) == 37
    for r in (r7, r1):
        assert (r.rows_read, r.accepted, r.rejected, r.rejected_by_reason, r.first_rejected,
                r.bot_users) == (rbig.rows_read, rbig.accepted, rbig.rejected,
                                 rbig.rejected_by_reason, rbig.first_rejected, rbig.bot_users)


def test_every_row_bad_is_nothing_imported(store: EventStore, write) -> None:
    path = write("bad.csv", "user_id,item_id,type,timestamp\n"
                            ",i1,view,1700000000\nu1,i1,teleport,1700000000\nu1,i1\n"
                            "u2,i2,view,soon\n")
    report = import_events(store, path)
    assert report.nothing_imported
    assert report.status == "nothing_imported"
    assert (report.rows_read, report.accepted, report.rejected) == (4, 0, 4)
    assert store.count_events() == 0
    assert len(store.quarantined()) == 4
    assert store.imports()["status"].tolist() == ["nothing_imported"]


def test_a_zone_inside_a_malformed_timestamp_is_quarantined(store: EventStore, write) -> None:
    # "...+00:00 x" next to naive times made pandas read the rest as aware, and the import
    # crashed with an AttributeError instead of rejecting the row
    path = write("z.csv", "user_id,item_id,type,timestamp\n"
                          "u1,i1,view,2024-01-01T00:00:00+00:00 x\n"
                          "u1,i2,view,2024-01-01T00:00:00\nu2,i1,view,2024-01-02T10:00:00\n")
    report = import_events(store, path)
    assert (report.accepted, report.rejected) == (2, 1)
    assert report.first_rejected[0]["line"] == 2
    assert report.first_rejected[0]["reason"] == "bad_timestamp"
    assert sorted(store.events(["timestamp"])["timestamp"]) == [1_704_067_200_000,
                                                                 1_704_189_600_000]


def test_reimport_of_stored_rows_is_not_nothing_imported(store: EventStore, write) -> None:
    path = write("e.csv", "user_id,item_id,type,timestamp\nu1,i1,view,1700000000\n")
    import_events(store, path)
    again = import_events(store, path)
    assert (again.accepted, again.duplicates, again.status) == (0, 1, "done")
    assert not again.nothing_imported


def test_items_then_events_drop_unknown(store: EventStore, write) -> None:
    items = write("items.csv", "item_id,title,price\n" +
                  "".join(f"i{n},Item {n},{n}.5\n" for n in range(10)))
    assert import_items(store, items).accepted == 10
    rows = "".join(f"u{n % 3},i{n},view,{TS + n * 60_000}\n" for n in range(15))
    events = write("events.csv", "user_id,item_id,type,timestamp\n" + rows)
    report = import_events(store, events, ImportOptions(
        cleaning=CleaningConfig(unknown_items="drop")))
    assert (report.accepted, report.rejected) == (10, 5)
    assert report.rejected_by_reason == {"unknown_item": 5}
    q = store.quarantined()
    events_q = q[q["kind"] == "events"]
    assert events_q["line"].tolist() == [12, 13, 14, 15, 16]
    assert events_q["detail"].tolist()[0] == "item 'i10' is not in the catalogue"
    assert set(store.events(["item_id"])["item_id"]) == {f"i{n}" for n in range(10)}


FRAME_ROWS: list[dict[str, Any]] = [
    {"user_id": "u1", "item_id": 10, "type": "view", "timestamp": TS, "rating": None,
     "query": None},
    {"user_id": "u1", "item_id": 11, "type": "review", "timestamp": TS + 1500, "rating": 4.5,
     "query": None},
    {"user_id": "u2", "item_id": None, "type": "search", "timestamp": TS + 2000,
     "rating": None, "query": "red shoes"},
    {"user_id": None, "item_id": 12, "type": "view", "timestamp": TS, "rating": None,
     "query": None},
    {"user_id": "u3", "item_id": 13, "type": "pv", "timestamp": TS + 3000, "rating": 11.0,
     "query": None},
    {"user_id": "u3", "item_id": 14, "type": "fav", "timestamp": 10, "rating": None,
     "query": None},
]


def _frames() -> dict[str, Any]:
    return {
        "list": FRAME_ROWS,
        "pandas": pd.DataFrame(FRAME_ROWS),
        "polars": pl.DataFrame(FRAME_ROWS),
        "arrow": pa.Table.from_pylist(FRAME_ROWS),
    }


def test_import_frame_inputs_agree(store: EventStore) -> None:
    results = {}
    for name, data in _frames().items():
        wipe(store)
        report = import_frame(store, data, source=f"<{name}>")
        results[name] = (
            (report.rows_read, report.accepted, report.rejected, report.rejected_by_reason),
            store.events().sort_values("event_id").reset_index(drop=True),
            quarantine_rows(store),
        )
    base = results["list"]
    assert base[0] == (6, 3, 3, {"missing_user_id": 1, "invalid_rating": 1,
                                 "too_old_timestamp": 1})
    assert base[2] == [
        (4, "missing_user_id", "field 'user_id' is empty"),
        (5, "invalid_rating", "rating 11.0 is not a number in [0, 10]"),
        (6, "too_old_timestamp", "timestamp 10 is before 1990-01-01T00:00:00Z"),
    ]
    events = base[1].sort_values(["user_id", "timestamp"])
    assert events[["user_id", "item_id", "type", "timestamp", "query"]].values.tolist() == [
        ["u1", "10", "view", TS, None], ["u1", "11", "review", TS + 1500, None],
        ["u2", None, "search", TS + 2000, "red shoes"]]
    assert events["rating"].tolist()[1] == 4.5
    for name, (counts, frame, q) in results.items():
        assert counts == base[0], name
        pd.testing.assert_frame_equal(frame, base[1], obj=name)
        assert q == base[2], name


def test_import_frame_datetime_and_timezone(store: EventStore) -> None:
    frame = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["a", "b"], "type": ["view"] * 2,
                          "timestamp": pd.to_datetime(["2024-01-01 08:00:00",
                                                       "2024-01-01 09:00:00"])})
    import_frame(store, frame, options=ImportOptions(timezone="Asia/Shanghai"))
    assert sorted(store.events(["timestamp"])["timestamp"]) == [1704067200000, 1704070800000]
    wipe(store)
    import_frame(store, pl.from_pandas(frame.assign(
        timestamp=frame["timestamp"].dt.tz_localize("UTC"))))
    assert sorted(store.events(["timestamp"])["timestamp"]) == [1704096000000, 1704099600000]


def test_import_frame_items(store: EventStore) -> None:
    report = import_frame(store, [{"item_id": "a", "title": "A", "price": 1.5},
                                  {"item_id": None, "title": "B", "price": 2},
                                  {"item_id": "c", "title": "C", "price": -2}], kind="items")
    assert (report.accepted, report.rejected_by_reason) == (1, {"missing_item_id": 1,
                                                                "invalid_price": 1})
    assert store.items()[["item_id", "title", "price"]].values.tolist() == [["a", "A", 1.5]]


def test_import_frame_rejects_other_types(store: EventStore) -> None:
    with pytest.raises(TypeError, match="expected a pandas/polars DataFrame"):
        import_frame(store, {"user_id": ["u1"]})


def test_first_rejected_sorted_and_capped(store: EventStore, tmp_path: Path) -> None:
    path, planted, _ = planted_file(tmp_path / "events.csv", good=1500, bad=45, every=30)
    report = import_events(store, path, options(chunk_size=7))
    assert report.rejected == 45
    assert len(report.first_rejected) == 20
    lines = [r["line"] for r in report.first_rejected]
    assert lines == sorted(planted)[:20]
    assert len(store.quarantined()) == 45


def test_report_round_trips_through_imports_table(store: EventStore, write) -> None:
    path = write("e.csv", "user_id,item_id,type,timestamp\nu1,i1,view,1700000000\n,i1,view,1\n")
    report = import_events(store, path)
    saved = json.loads(store.imports()["report"].iloc[-1])
    assert saved["accepted"] == report.accepted == 1
    assert saved["rejected_by_reason"] == {"missing_user_id": 1}
    assert saved["status"] == "done"
    assert saved["first_rejected"] == report.first_rejected


def test_failed_import_is_recorded(store: EventStore, write) -> None:
    path = write("e.csv", "customer,item_id,type,timestamp\nc1,i1,view,1700000000\n")
    with pytest.raises(UnreadableSourceError):
        import_events(store, path)
    assert store.imports()["status"].tolist() == ["failed"]
    assert store.count_events() == 0


def test_nul_characters_do_not_break_the_store(store: EventStore, tmp_path: Path) -> None:
    """PostgreSQL cannot store NUL in text: such rows are quarantined, never crash."""
    csv_path = tmp_path / "nul.csv"
    csv_path.write_bytes(b"user_id,item_id,type,timestamp,text\n"
                         b"u1,i1,view,1700000000,\n"
                         b"u2,i\x002,view,1700000000,\n"
                         b"u3,i3,review,1700000000,bad\x00text\n"
                         b"u4,i4\x00,view\n")
    report = import_events(store, csv_path)
    assert (report.accepted, report.rejected) == (1, 3)
    assert [(r["line"], r["reason"]) for r in report.first_rejected] == [
        (3, "malformed_row"), (4, "malformed_row"), (5, "malformed_row")]
    jsonl_path = tmp_path / "nul.jsonl"
    jsonl_path.write_bytes(b'{"user_id": "j1", "item_id": "i1", "type": "view", '
                           b'"timestamp": 1700000000}\n'
                           b'{"user_id": "j2\\u0000", "item_id": "i1", "type": "view", '
                           b'"timestamp": 1700000000}\n'
                           b'{"user_id": "j3\x00", "item_id": "i1", "type": "view", '
                           b'"timestamp": 1700000000}\n')
    report = import_events(store, jsonl_path)
    assert (report.accepted, report.rejected) == (1, 2)
    assert report.rejected_by_reason == {"malformed_row": 2}
    q = store.quarantined()
    assert len(q) == 5
    assert not any("\x00" in str(v) for v in q["raw"].tolist() + q["detail"].tolist())
    items = tmp_path / "items.csv"
    items.write_bytes(b"item_id,title\na,ok\nb,bad\x00title\n")
    assert import_items(store, items).rejected_by_reason == {"malformed_row": 1}
    assert store.items()["item_id"].tolist() == ["a"]
    assert store.count_events() == 2


def test_lone_surrogate_escapes_are_quarantined(store: EventStore, write) -> None:
    path = write("s.jsonl",
                 '{"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": 1700000000}\n'
                 '{"user_id": "\\ud800", "item_id": "i1", "type": "view", '
                 '"timestamp": 1700000000}\n'
                 '{"user_id": "u2", "item_id": "\\ud83d\\ude00", "type": "view", '
                 '"timestamp": 1700000000}\n')
    report = import_events(store, path)
    assert (report.accepted, report.rejected) == (2, 1)
    assert report.first_rejected[0]["line"] == 2
    assert "surrogate" in report.first_rejected[0]["detail"]
    assert "\U0001F600" in set(store.events(["item_id"])["item_id"])


def test_bad_utf8_rows_are_quarantined_quietly(store: EventStore, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Invalid UTF-8 in a malformed row once made Arrow print a traceback per row."""
    import sys

    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    path = tmp_path / "latin.csv"
    path.write_bytes(b"user_id,item_id,type,timestamp\nu1,i1,view,1700000000\n\xff,x\n"
                     b"caf\xe9,i2,view,1700000001\n")
    report: ImportReport = import_events(store, path)
    assert unraisable == []
    assert (report.accepted, report.rejected) == (2, 1)
    assert report.first_rejected[0]["line"] == 3
    assert "caf\ufffd" in set(store.events(["user_id"])["user_id"])


def test_jsonl_chunk_without_a_required_key_rejects_rows_not_the_file(store, write):
    """JSON lines have no header: a chunk whose records all lack user_id is row-level."""
    path = write("e.jsonl", "\n".join([
        '{"user_id": "u1", "item_id": "a", "type": "view", "timestamp": 1767225600}',
        '{"item_id": "b", "type": "view", "timestamp": 1767225600}',
        '{"user_id": "u2", "item_id": "c", "type": "purchase", "timestamp": 1767225600, '
        '"quantity": 2}',
    ]) + "\n")
    for chunk_size in (1, 100):
        report = import_events(store, path, ImportOptions(chunk_size=chunk_size))
        assert report.rejected_by_reason == {"missing_user_id": 1}
        assert report.first_rejected[0]["line"] == 2
    events = store.events()
    assert events["quantity"].dtype == "Int64"
    assert events.set_index("user_id").loc["u2", "quantity"] == 2
    assert events.set_index("user_id")["position"].isna().all()


def test_frame_without_a_required_column_is_a_clear_error(store):
    frame = pd.DataFrame({"item_id": ["a"], "type": ["view"], "timestamp": [1767225600]})
    with pytest.raises(UnreadableSourceError, match="required field 'user_id'"):
        import_frame(store, frame)


def test_frame_with_a_lone_surrogate_is_stored_with_a_replacement_character(store):
    frame = pd.DataFrame({"user_id": ["u\ud800"], "item_id": ["a"], "type": ["view"],
                          "timestamp": [1767225600]})
    report = import_frame(store, frame)
    assert report.accepted == 1
    assert store.events()["user_id"].tolist() == ["u\ufffd"]
