"""Cleaning rules (tansuo.data.cleaning): each event rule, the bot rule, unknown items,
duplicates, event ids, type aliases and the catalogue rules."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tansuo.config import CleaningConfig
from tansuo.data.cleaning import TYPE_ALIASES, count_user_minutes
from tansuo.data.importer import ImportOptions, ImportReport, import_events, import_items
from tansuo.data.schema import derive_event_id
from tansuo.data.store import EventStore, open_store

COLUMNS = ("user_id", "item_id", "type", "timestamp", "query", "dwell_seconds", "quantity",
           "amount", "rating", "position", "request_id", "event_id", "text")
TS = 1_700_000_000_000  # 2023-11-14T22:13:20Z


@pytest.fixture
def db(tmp_path: Path) -> Iterator[EventStore]:
    s = open_store(f"sqlite:///{tmp_path / 'cleaning.db'}")
    try:
        yield s
    finally:
        s.close()


def row(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": TS}
    base.update(fields)
    return base


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if v is None else v for k, v in r.items()})
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def run(db: EventStore, tmp_path: Path, rows: list[dict[str, Any]], **cleaning: Any
        ) -> ImportReport:
    path = write_csv(tmp_path / "events.csv", rows)
    return import_events(db, path, ImportOptions(cleaning=CleaningConfig(**cleaning)))


def quarantine(db: EventStore) -> list[tuple[int, str]]:
    q = db.quarantined()
    return list(zip(q["line"].tolist(), q["reason"].tolist(), strict=True))


def stored_keys(db: EventStore) -> list[tuple[str, str | None, str, int]]:
    frame = db.events(["user_id", "item_id", "type", "timestamp"])
    return sorted(tuple(r) for r in frame.itertuples(index=False, name=None))


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


FUTURE = _iso(datetime.now(UTC) + timedelta(days=2))

# reason, the breaking fields, the field the detail must name, a snippet of the detail
EVENT_RULES = [
    ("missing_user_id", {"user_id": ""}, "user_id", "is empty"),
    ("missing_user_id", {"user_id": "   "}, "user_id", "is empty"),
    ("missing_type", {"type": ""}, "type", "is empty"),
    ("unknown_type", {"type": "teleport"}, "type", "'teleport' is not one of"),
    ("missing_timestamp", {"timestamp": ""}, "timestamp", "is empty"),
    ("bad_timestamp", {"timestamp": "next tuesday"}, "timestamp", "'next tuesday'"),
    ("bad_timestamp", {"timestamp": "2024-02-30T00:00:00Z"}, "timestamp", "2024-02-30"),
    ("future_timestamp", {"timestamp": FUTURE}, "timestamp", "in the future"),
    ("too_old_timestamp", {"timestamp": "1989-12-31T23:59:59Z"}, "timestamp",
     "before 1990-01-01"),
    # beyond pandas' nanosecond range (1677-2262): still dates, not bad_timestamp
    ("future_timestamp", {"timestamp": "2999-01-01T00:00:00Z"}, "timestamp", "in the future"),
    ("too_old_timestamp", {"timestamp": "1500-06-01 12:00:00"}, "timestamp", "before 1990"),
    ("missing_item_id", {"item_id": ""}, "item_id", "empty for a view event"),
    ("missing_query", {"type": "search", "item_id": ""}, "query", "a search needs"),
    ("invalid_dwell_seconds", {"dwell_seconds": "-1"}, "dwell_seconds", "'-1'"),
    ("invalid_dwell_seconds", {"dwell_seconds": "86400.5"}, "dwell_seconds", "[0, 86400]"),
    ("invalid_dwell_seconds", {"dwell_seconds": "long"}, "dwell_seconds", "'long'"),
    ("invalid_quantity", {"quantity": "1.5"}, "quantity", "integer"),
    ("invalid_quantity", {"quantity": "-2"}, "quantity", "'-2'"),
    ("invalid_amount", {"amount": "-0.01"}, "amount", "non-negative number"),
    ("invalid_amount", {"amount": "12,50"}, "amount", "'12,50'"),
    ("invalid_amount", {"amount": "inf"}, "amount", "'inf'"),
    ("invalid_rating", {"rating": "10.5"}, "rating", "[0, 10]"),
    ("invalid_rating", {"rating": "-1"}, "rating", "'-1'"),
    ("invalid_rating", {"rating": "five"}, "rating", "'five'"),
    ("invalid_position", {"position": "2.5"}, "position", "integer"),
    ("invalid_position", {"position": "-1"}, "position", "'-1'"),
]


@pytest.mark.parametrize("reason,bad,field_name,snippet", EVENT_RULES,
                         ids=[f"{r[0]}-{i}" for i, r in enumerate(EVENT_RULES)])
def test_event_rule(db: EventStore, tmp_path: Path, reason: str, bad: dict[str, Any],
                    field_name: str, snippet: str) -> None:
    rows = [
        row(user_id="ok1", item_id="a"),
        row(user_id="ok2", item_id="b", text="two\nlines"),  # lines 3-4
        row(**{"user_id": "bad", **bad}),  # line 5
        row(user_id="ok3", item_id="c"),
    ]
    report = run(db, tmp_path, rows)
    assert (report.rows_read, report.accepted, report.rejected) == (4, 3, 1)
    assert report.rejected_by_reason == {reason: 1}
    [first] = report.first_rejected
    assert (first["line"], first["reason"]) == (5, reason)
    assert field_name in first["detail"]
    assert snippet in first["detail"]
    assert quarantine(db) == [(5, reason)]
    q = db.quarantined().iloc[0]
    assert q["detail"] == first["detail"]
    assert json.loads(q["raw"])["user_id"] == bad.get("user_id", "bad")  # the row as read
    assert [u for u, *_ in stored_keys(db)] == ["ok1", "ok2", "ok3"]


@pytest.mark.parametrize("fields", [
    {"rating": "0"}, {"rating": "10"}, {"rating": "4.5"},
    {"dwell_seconds": "0"}, {"dwell_seconds": "86400"},
    {"quantity": "0"}, {"quantity": "2.0"}, {"amount": "0"}, {"amount": "1e3"},
    {"position": "0"},
    {"timestamp": "1990-01-01T00:00:00Z"},
    {"type": "search", "item_id": "", "query": "red shoes"},
    {"type": "search", "item_id": "i9"},
    {"type": "search", "query": "shoes", "item_id": "i9"},
])
def test_boundary_values_are_accepted(db: EventStore, tmp_path: Path,
                                      fields: dict[str, Any]) -> None:
    report = run(db, tmp_path, [row(**fields)])
    assert (report.accepted, report.rejected) == (1, 0), report.first_rejected


def test_numbers_are_stored_as_numbers(db: EventStore, tmp_path: Path) -> None:
    run(db, tmp_path, [row(type="purchase", quantity="2.0", amount=" 19.99 ", rating="4",
                           dwell_seconds="12.5", position="3", request_id="r1",
                           query=" shoes ")])
    ev = db.events().iloc[0]
    assert (ev["quantity"], ev["amount"], ev["rating"], ev["dwell_seconds"], ev["position"]) \
        == (2, 19.99, 4.0, 12.5, 3)
    assert (ev["query"], ev["request_id"]) == ("shoes", "r1")


@pytest.mark.parametrize("bad,reason", [
    ({"user_id": "", "timestamp": "nope"}, "missing_user_id"),
    ({"type": "teleport", "item_id": ""}, "unknown_type"),
    ({"type": "", "timestamp": ""}, "missing_type"),
    ({"timestamp": "nope", "rating": "99"}, "bad_timestamp"),
    ({"timestamp": FUTURE, "item_id": ""}, "future_timestamp"),
    ({"item_id": "", "rating": "99"}, "missing_item_id"),
    ({"dwell_seconds": "-1", "rating": "99"}, "invalid_dwell_seconds"),
    ({"quantity": "x", "rating": "99"}, "invalid_quantity"),
])
def test_first_broken_rule_wins(db: EventStore, tmp_path: Path, bad: dict[str, Any],
                                reason: str) -> None:
    report = run(db, tmp_path, [row(**bad)])
    assert report.rejected_by_reason == {reason: 1}


def test_cleaning_config_tunes_the_rules(db: EventStore, tmp_path: Path) -> None:
    soon = _iso(datetime.now(UTC) + timedelta(minutes=5))
    rows = [
        row(user_id="a", timestamp=soon),  # line 2: future with max_future_seconds=60
        row(user_id="b", timestamp="2019-12-31T23:59:59Z"),  # line 3: too old
        row(user_id="c", rating="0"),  # line 4: outside (1, 5)
        row(user_id="d", rating="5", dwell_seconds="61"),  # line 5: dwell > 60
        row(user_id="e", rating="1", dwell_seconds="60", timestamp="2020-01-01T00:00:00Z"),
    ]
    report = run(db, tmp_path, rows, max_future_seconds=60, min_timestamp="2020-01-01",
                 rating_range=(1, 5), max_dwell_seconds=60)
    assert quarantine(db) == [(2, "future_timestamp"), (3, "too_old_timestamp"),
                              (4, "invalid_rating"), (5, "invalid_dwell_seconds")]
    assert report.accepted == 1
    assert "[1, 5]" in report.first_rejected[2]["detail"]


def test_nul_in_a_text_field_is_rejected(db: EventStore, tmp_path: Path) -> None:
    report = run(db, tmp_path, [row(user_id="ok"), row(item_id="i\x00x"),
                                row(user_id="u2", text="a\x00b")])
    assert report.accepted == 1
    assert quarantine(db) == [(3, "malformed_row"), (4, "malformed_row")]
    assert [r["detail"] for r in report.first_rejected] == [
        "field 'item_id' contains a NUL (0x00) character",
        "field 'text' contains a NUL (0x00) character"]
    assert "\x00" not in "".join(db.quarantined()["raw"])


# -- bot rule ------------------------------------------------------------------------------

MINUTE = 1_700_000_040_000  # a whole minute: 2023-11-14T22:14:00Z


def test_bot_user_is_quarantined(db: EventStore, tmp_path: Path) -> None:
    rows = [row(user_id="human", item_id="h0", timestamp=MINUTE)]  # line 2
    rows += [row(user_id="bot", item_id=f"b{i}", timestamp=MINUTE + i * 1000)
             for i in range(4)]  # lines 3-6: 4 in one minute
    rows += [row(user_id="bot", item_id="late", timestamp=MINUTE + 3_600_000)]  # line 7
    # exactly at the limit (3) in one minute, then 3 more in the next calendar minute
    rows += [row(user_id="busy", item_id=f"x{i}", timestamp=MINUTE + 57_000 + i * 1000)
             for i in range(6)]  # lines 8-13
    report = run(db, tmp_path, rows, bot_max_events_per_minute=3)
    assert report.bot_users == ["bot"]
    assert report.rejected_by_reason == {"bot_user": 5}
    assert quarantine(db) == [(line, "bot_user") for line in range(3, 8)]
    assert "more than 3 events in one minute" in report.first_rejected[0]["detail"]
    assert report.accepted == 7
    assert {u for u, *_ in stored_keys(db)} == {"human", "busy"}


def test_bot_rule_off_with_zero(db: EventStore, tmp_path: Path) -> None:
    rows = [row(user_id="bot", item_id=f"b{i}", timestamp=MINUTE + i) for i in range(200)]
    report = run(db, tmp_path, rows, bot_max_events_per_minute=0)
    assert (report.accepted, report.rejected, report.bot_users) == (200, 0, [])


def test_bot_rule_default_limit_is_120(db: EventStore, tmp_path: Path) -> None:
    rows = [row(user_id="fast", item_id=f"f{i}", timestamp=MINUTE + i * 100) for i in range(120)]
    rows += [row(user_id="bot", item_id=f"b{i}", timestamp=MINUTE + i * 100) for i in range(121)]
    report = run(db, tmp_path, rows)
    assert report.bot_users == ["bot"]
    assert (report.accepted, report.rejected) == (120, 121)


def test_bot_scan_survives_absurd_timestamps(db: EventStore, tmp_path: Path) -> None:
    """Huge numbers (1e30) once overflowed the minute arithmetic and crashed the import."""
    rows = [row(user_id="a", timestamp="1e30"), row(user_id="b", timestamp="-9e25"),
            row(user_id="c", timestamp="99999999999999999999999"), row(user_id="d")]
    report = run(db, tmp_path, rows)
    assert report.accepted == 1
    assert report.rejected_by_reason == {"future_timestamp": 2, "too_old_timestamp": 1}


def test_count_user_minutes() -> None:
    users = pd.Series(["a", "b", "a", "a", None, "b", "c"], dtype=object)
    ts = pd.Series([MINUTE, MINUTE + 59_999, MINUTE + 60_000, MINUTE + 1, MINUTE, np.nan,
                    1e30])
    counts = count_user_minutes(users, ts)
    m = MINUTE // 60_000
    assert counts.to_dict() == {("a", m): 2, ("a", m + 1): 1, ("b", m): 1}


def test_count_user_minutes_far_apart_minutes_do_not_collide() -> None:
    # minutes more than 2**32 apart must stay apart (they once shared packed key bits)
    users = pd.Series(["a", "b"], dtype=object)
    ts = pd.Series([60_000.0 * (2**32 + 5), 60_000.0 * 5])
    assert count_user_minutes(users, ts).to_dict() == {("a", 2**32 + 5): 1, ("b", 5): 1}


# -- unknown items -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["keep", "flag", "drop"])
def test_unknown_items(db: EventStore, tmp_path: Path, mode: str) -> None:
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\ni1,One\ni2,Two\n")
    import_items(db, items)
    rows = [row(item_id="i1"), row(item_id="ghost", user_id="u2"),
            row(type="search", item_id="", query="shoes", user_id="u3"),
            row(item_id="i2", user_id="u4")]
    report = run(db, tmp_path, rows, unknown_items=mode)
    flags = dict(db._fetchall("SELECT user_id, unknown_item FROM events"))
    if mode == "keep":
        assert flags == {"u1": 0, "u2": 0, "u3": 0, "u4": 0}
        assert (report.accepted, report.flagged_unknown_items, report.rejected) == (4, 0, 0)
    elif mode == "flag":
        assert flags == {"u1": 0, "u2": 1, "u3": 0, "u4": 0}
        assert (report.accepted, report.flagged_unknown_items, report.rejected) == (4, 1, 0)
    else:
        assert flags == {"u1": 0, "u3": 0, "u4": 0}
        assert (report.accepted, report.rejected) == (3, 1)
        assert quarantine(db) == [(3, "unknown_item")]
        assert report.first_rejected[0]["detail"] == "item 'ghost' is not in the catalogue"


# -- duplicates and event ids --------------------------------------------------------------


def test_duplicates_in_one_file_are_not_rejections(db: EventStore, tmp_path: Path) -> None:
    rows = [row(), row(),  # the same event twice (derived id)
            row(timestamp="2023-11-14T22:13:20Z"),  # the same instant written as ISO
            row(item_id="i2", event_id="e-1"), row(item_id="i3", event_id="e-1"),  # given id
            row(item_id="i4")]
    report = run(db, tmp_path, rows)
    assert (report.rows_read, report.accepted, report.duplicates, report.rejected) == \
        (6, 3, 3, 0)
    assert quarantine(db) == []
    ids = db.events(["event_id", "item_id"]).set_index("event_id")["item_id"].to_dict()
    assert ids["e-1"] == "i2"  # the first of a repeated id is kept
    assert len(ids) == 3


@pytest.mark.parametrize("extra", [
    {},
    {"query": "red shoes"},
    {"request_id": "req-7"},
    {"position": "4"},
    {"query": "q", "request_id": "r", "position": "0"},
    {"type": "search", "item_id": "", "query": "boots", "position": "2"},
    {"user_id": "用户", "item_id": "商品,1", "query": 'say "hi"'},
])
def test_derived_event_id_matches_schema(db: EventStore, tmp_path: Path,
                                         extra: dict[str, Any]) -> None:
    r = row(timestamp="2023-11-14T22:13:20.123Z", **extra)
    run(db, tmp_path, [r])
    ev = db.events().iloc[0]
    position = int(extra["position"]) if "position" in extra else None
    expected = derive_event_id(r["user_id"], r["item_id"] or None, r["type"], TS + 123,
                               extra.get("query"), extra.get("request_id"), position)
    assert ev["event_id"] == expected
    assert expected.startswith(f"d:{TS + 123:011x}")


def test_given_event_id_is_kept(db: EventStore, tmp_path: Path) -> None:
    run(db, tmp_path, [row(event_id=" order-17 "), row(item_id="i2")])
    ids = sorted(db.events(["event_id"])["event_id"])
    assert ids[1] == "order-17"
    assert ids[0] == derive_event_id("u1", "i2", "view", TS)


def test_derived_ids_of_many_rows_match(db: EventStore, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rows = []
    for i in range(300):
        rows.append(row(user_id=f"u{i % 17}", item_id=f"i{i}", type=["view", "click"][i % 2],
                        timestamp=TS + int(rng.integers(0, 10**9)),
                        query="q" if i % 3 == 0 else None,
                        request_id=f"r{i}" if i % 5 == 0 else None,
                        position=str(i % 7) if i % 2 else None))
    run(db, tmp_path, rows, bot_max_events_per_minute=0)
    frame = db.events()
    assert len(frame) == 300
    for ev in frame.itertuples():
        pos = None if pd.isna(ev.position) else int(ev.position)
        assert ev.event_id == derive_event_id(ev.user_id, ev.item_id, ev.type, ev.timestamp,
                                              ev.query, ev.request_id, pos)


# -- type aliases --------------------------------------------------------------------------


def test_type_aliases(db: EventStore, tmp_path: Path) -> None:
    given = ["pv", "addtocart", "transaction", "fav", "PV", " Buy ", "view", "Purchase"]
    rows = [row(item_id=f"i{n}", type=t) for n, t in enumerate(given)]
    report = run(db, tmp_path, rows)
    assert report.rejected == 0
    types = dict(db._fetchall("SELECT item_id, type FROM events"))
    assert [types[f"i{n}"] for n in range(len(given))] == [
        "view", "cart", "purchase", "favorite", "view", "purchase", "view", "purchase"]


def test_every_alias_targets_an_event_type() -> None:
    assert {"pv": "view", "addtocart": "cart", "transaction": "purchase",
            "fav": "favorite"}.items() <= TYPE_ALIASES.items()


# -- catalogue rules -----------------------------------------------------------------------


def test_item_rules(db: EventStore, write) -> None:
    path = write("items.csv",
                 "item_id,title,category,price,attributes,created_at\n"
                 'i1,Shoe,Sports > Shoes,12.5,"{""color"": ""red""}",2024-01-01\n'  # 2
                 ",No id,,1,,\n"  # 3
                 "i2,Neg,,-1,,\n"  # 4
                 "i3,Word,,cheap,,\n"  # 5
                 'i4,List,,1,"[1, 2]",\n'  # 6
                 "i5,NotJson,,1,{color: red},\n"  # 7
                 "i6,Old,,,,yesterday-ish\n"  # 8
                 "i7,Fine,,0,,1700000000\n"  # 9
                 "i1,Shoe v2,Sports > Running,13,,\n")  # 10: repeated id, last wins
    report = import_items(db, path)
    assert report.rejected_by_reason == {"missing_item_id": 1, "invalid_price": 2,
                                         "invalid_attributes": 2, "invalid_created_at": 1}
    assert quarantine(db) == [(3, "missing_item_id"), (4, "invalid_price"),
                              (5, "invalid_price"), (6, "invalid_attributes"),
                              (7, "invalid_attributes"), (8, "invalid_created_at")]
    details = [r["detail"] for r in report.first_rejected]
    assert details[0] == "field 'item_id' is empty"
    assert "price '-1'" in details[1] and "price 'cheap'" in details[2]
    assert details[3] == "attributes '[1, 2]' is not a JSON object"
    assert "created_at" in details[5]
    items = db.items().set_index("item_id")
    assert sorted(items.index) == ["i1", "i7"]
    assert items.loc["i1", ["title", "category", "price"]].tolist() == [
        "Shoe v2", "Sports > Running", 13.0]
    assert items.loc["i7", "created_at"] == 1_700_000_000_000
    assert items.loc["i7", "price"] == 0.0


def test_item_attributes_are_normalised_json(db: EventStore, write) -> None:
    path = write("items.jsonl", json.dumps({"item_id": "a", "attributes": {"b": 1, "a": [1]}})
                 + "\n")
    import_items(db, path)
    assert db.items()["attributes"].tolist() == ['{"a": [1], "b": 1}']


def test_items_upsert_replaces(db: EventStore, write) -> None:
    import_items(db, write("a.csv", "item_id,title,price\ni1,Old,1\ni2,Keep,2\n"))
    import_items(db, write("b.csv", "item_id,title,price\ni1,New,3\n"))
    assert db.items()[["item_id", "title", "price"]].values.tolist() == [
        ["i1", "New", 3.0], ["i2", "Keep", 2.0]]


def test_now_is_read_at_import_time(db: EventStore, tmp_path: Path) -> None:
    near = _iso(datetime.now(UTC) + timedelta(hours=23))
    report = run(db, tmp_path, [row(timestamp=near)])
    assert report.accepted == 1
    assert abs(db.events(["timestamp"])["timestamp"][0] - (time.time() + 23 * 3600) * 1000) \
        < 120_000


def test_item_created_at_far_outside_any_calendar_is_rejected_not_a_crash():
    from tansuo.data.cleaning import ItemCleaner
    from tansuo.data.formats import FORMATS, RawChunk

    frame = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["x", "y", "z"],
                          "created_at": [1.8446744073709552e25, 9.223372036854776e24,
                                         "2026-01-01T00:00:00Z"]}).astype(object)
    clean = ItemCleaner(FORMATS["jsonl"], {}, "UTC").clean(RawChunk(frame, [1, 2, 3]), "t")
    assert clean.frame["item_id"].tolist() == ["c"]
    assert {r.reason for r in clean.rejects} == {"invalid_created_at"}
