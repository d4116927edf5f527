"""The row-by-row cleaner of small batches gives exactly what the vectorised cleaner gives."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tansuo.config import CleaningConfig
from tansuo.data.cleaning import EventCleaner
from tansuo.data.formats import FORMATS, RawChunk
from tansuo.data.importer import _find_bots, _Parsed, import_frame
from tansuo.data.row_cleaning import clean_rows
from tansuo.data.store import open_store

NOW = 1_760_000_000_000
KNOWN = {"i1", "i2", "7"}


def cleaner(unknown: str = "keep", strict: bool = False, bot_limit: int = 0) -> EventCleaner:
    config = CleaningConfig(unknown_items=unknown, bot_max_events_per_minute=bot_limit)
    return EventCleaner(FORMATS["jsonl"], config, known_items=KNOWN, now_ms=NOW,
                        strict_columns=strict)


def vectorised(c: EventCleaner, rows: list[dict], bot_limit: int):
    """What import_frame does with the same rows as a frame (object columns, values kept)."""
    names = dict.fromkeys(k for r in rows for k in r)
    frame = pd.DataFrame({k: pd.Series([r.get(k) for r in rows], dtype=object) for k in names},
                         index=range(len(rows)))
    chunk = RawChunk(frame, list(range(1, len(rows) + 1)))
    bots: set[str] = set()
    if bot_limit > 0 and len(rows):
        parsed = _Parsed()
        bots = c.bots = _find_bots([chunk], c, "t", bot_limit, parsed)
        c.parsed_timestamps = iter(parsed)
    return c.clean(chunk, "t"), bots


def loose(raw: str) -> dict:
    return {k: v for k, v in json.loads(raw).items() if v is not None}


def assert_same(rows: list[dict], unknown: str = "keep", bot_limit: int = 0,
                strict: bool = False) -> bool:
    fast = clean_rows(cleaner(unknown, strict, bot_limit), rows, "t", bot_limit)
    if fast is None:
        return False
    slow, slow_bots = vectorised(cleaner(unknown, strict, bot_limit), rows, bot_limit)
    chunk, bots = fast
    pd.testing.assert_frame_equal(chunk.frame, slow.frame)
    assert [(r.line, r.reason, r.detail) for r in chunk.rejects] == \
        [(r.line, r.reason, r.detail) for r in slow.rejects]
    assert [loose(r.raw) for r in chunk.rejects] == [loose(r.raw) for r in slow.rejects]
    assert (chunk.in_chunk_duplicates, chunk.flagged_unknown) == \
        (slow.in_chunk_duplicates, slow.flagged_unknown)
    assert bots == slow_bots
    return True


def test_a_typical_batch_is_cleaned_row_by_row_and_matches() -> None:
    rows = [{"user_id": f"u{i % 3}", "item_id": "i1" if i % 2 else "zz", "type": "view",
             "timestamp": NOW - 60_000 * i, "dwell_seconds": 2.5, "request_id": None}
            for i in range(30)]
    rows += [{"user_id": "u9", "type": "search", "query": "red shoes",
              "timestamp": "2025-01-02T03:04:05+02:00"},
             {"user_id": "u9", "type": "buy", "item_id": 7, "timestamp": 1_700_000_000,
              "quantity": 2, "amount": "19.90", "position": 3, "request_id": "r1"},
             {"user_id": "u9", "type": "teleport", "item_id": "i1", "timestamp": NOW},
             {"user_id": "u9", "type": "view", "item_id": "i1", "timestamp": NOW + 10**9},
             {"user_id": "u9", "type": "view", "item_id": "i1", "timestamp": NOW,
              "rating": 11}]
    for unknown in ("keep", "flag", "drop"):
        assert assert_same(rows, unknown)
    fast = clean_rows(cleaner(), rows, "t")
    assert fast is not None
    assert [r.reason for r in fast[0].rejects] == ["unknown_type", "future_timestamp",
                                                  "invalid_rating"]


def test_bot_users_are_found_within_the_batch() -> None:
    rows = [{"user_id": "bot", "item_id": "i1", "type": "view", "timestamp": NOW - 1000 + i}
            for i in range(5)] + [{"user_id": "human", "item_id": "i2", "type": "view",
                                   "timestamp": NOW - 5000}]
    assert assert_same(rows, bot_limit=3)
    chunk, bots = clean_rows(cleaner(bot_limit=3), rows, "t", 3)  # type: ignore[misc]
    assert bots == {"bot"}
    assert list(chunk.frame["user_id"]) == ["human"]


@pytest.mark.parametrize("value", [True, [1], {"a": 1}, " padded", "x\ud800"])
def test_values_it_cannot_match_exactly_send_the_batch_to_the_vectorised_cleaner(
        value: object) -> None:
    rows = [{"user_id": value, "item_id": "i1", "type": "view", "timestamp": NOW}]
    assert clean_rows(cleaner(), rows, "t") is None


def test_rows_without_any_field_are_each_rejected() -> None:
    rows: list[dict] = [{}, {"user_id": "u"}]
    assert assert_same(rows)
    chunk, _ = clean_rows(cleaner(), rows, "t")  # type: ignore[misc]
    assert [(r.line, r.reason) for r in chunk.rejects] == [(1, "missing_user_id"),
                                                          (2, "missing_type")]
    assert loose(chunk.rejects[0].raw) == {}
    assert assert_same([{}])
    alone, _ = clean_rows(cleaner(), [{}], "t")  # type: ignore[misc]
    assert [(r.reason, r.raw) for r in alone.rejects] == [("missing_user_id", "{}")]


def test_a_strict_import_missing_a_required_column_is_left_to_the_vectorised_error() -> None:
    rows = [{"user_id": "u", "item_id": "i1", "timestamp": NOW}]
    assert clean_rows(cleaner(strict=True), rows, "t") is None
    assert clean_rows(cleaner(strict=False), rows, "t") is not None


def test_every_character_arrow_trims_is_one_python_sees_as_whitespace() -> None:
    # the row path declines text with whitespace (str.isspace) at either end, so it never
    # has to trim; that is exact only if Arrow's trim set is within Python's
    chars = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    trimmed = pc.utf8_trim_whitespace(pa.array([ch + "a" for ch in chars]))
    cut = pc.not_equal(pc.utf8_length(trimmed), 2).to_numpy(zero_copy_only=False)
    assert all(ch.isspace() for ch, c in zip(chars, cut, strict=True) if c)


TEXT = st.one_of(st.none(), st.sampled_from(["", "u1", "u2", "i1", "i2", "zz", "a\x00b"]),
                 st.integers(-3, 9), st.sampled_from([7.0, 2.5, float("nan"), float("inf")]))
TYPES = st.sampled_from([None, "", "view", "VIEW", "pv", "buy", "search", "click", "cart",
                         "purchase", "bogus", "Favourite", 3])
NUMBERS = st.one_of(st.none(), st.integers(-5, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["3.5", "-1", "abc", "1e400", "1e3", ".5", "5.", "", "٣",
                                     "2\n"]))
TIMES = st.one_of(
    st.none(), st.integers(-10**13, 10**19), st.floats(allow_nan=True, allow_infinity=True),
    st.integers(NOW - 10**10, NOW + 10**8),
    st.sampled_from(["", "2024-01-01T00:00:00Z", "2024-01-01 10:00", "2024-03-10T02:30:00",
                     "not a time", "1700000000", "3000-01-01T00:00:00Z", "1500-01-01",
                     "12/25/2024 10:00", "2024-06-01T12:00:00.123456789+05:30"]))
ROW = st.fixed_dictionaries(
    {"user_id": TEXT, "type": TYPES, "timestamp": TIMES},
    optional={"item_id": TEXT, "event_id": st.sampled_from([None, "", "e1", "e2"]),
              "query": st.sampled_from([None, "", "red shoes", "q\x00"]),
              "request_id": st.sampled_from([None, "r1"]), "text": st.sampled_from([None, "ok"]),
              "dwell_seconds": NUMBERS, "quantity": NUMBERS, "amount": NUMBERS,
              "rating": NUMBERS, "position": NUMBERS, "extra": st.just(1)})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(ROW, max_size=12), unknown=st.sampled_from(["keep", "flag", "drop"]),
       bot_limit=st.sampled_from([0, 1, 2]))
def test_row_cleaning_equals_vectorised_cleaning(rows: list[dict], unknown: str,
                                                 bot_limit: int) -> None:
    assert_same(rows, unknown, bot_limit)


def test_import_frame_of_dicts_reports_and_stores_as_before(tmp_path) -> None:
    rows = [{"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": NOW - 1000},
            {"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": NOW - 1000},
            {"user_id": "", "item_id": "i1", "type": "view", "timestamp": NOW - 1000}]
    with open_store(f"sqlite:///{tmp_path}/a.db") as a, open_store(
            f"sqlite:///{tmp_path}/b.db") as b:
        ra = import_frame(a, rows, "events")
        rb = import_frame(b, pd.DataFrame(rows), "events")
        for r in (ra, rb):
            assert (r.accepted, r.duplicates, r.rejected) == (1, 1, 1)
            assert r.rejected_by_reason == {"missing_user_id": 1}
        assert a.events().equals(b.events())
        assert len(a.quarantined()) == len(b.quarantined()) == 1


def test_a_rejected_row_with_an_integer_beyond_64_bits_is_quarantined_not_a_crash(
        tmp_path) -> None:
    frame = pd.DataFrame({"user_id": [None], "item_id": ["i1"], "type": ["view"],
                          "timestamp": [NOW - 1000], "quantity": [2**70]}, dtype=object)
    with open_store(f"sqlite:///{tmp_path}/a.db") as store:
        report = import_frame(store, frame, "events")
        assert report.rejected_by_reason == {"missing_user_id": 1}
        assert str(2**70) in report.first_rejected[0]["raw"]
