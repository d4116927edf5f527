"""Property tests of the importer (hypothesis, SQLite in temporary directories):
garbage never crashes it, valid rows are never dropped, timestamps round-trip."""

from __future__ import annotations

import csv
import gzip
import io
import json
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tansuo.data.cleaning import parse_timestamps
from tansuo.data.importer import ImportOptions, import_events, import_items
from tansuo.data.schema import EventType
from tansuo.data.store import open_store
from tansuo.errors import UnreadableSourceError

PROPS = settings(max_examples=60, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_MS = 631_152_000_000  # 1990-01-01
MAX_MS = int((datetime.now(UTC) - timedelta(days=1) - EPOCH) / timedelta(milliseconds=1))

# -- (a) garbage never crashes -------------------------------------------------------------

TOKENS = [b",", b"\t", b";", b"|", b"::", b'"', b'""', b"\x00", b"\xff", b"\xc3", b"\xe9",
          b"\n", b"\r", b"\r\n", b" ", b"u1", b"i1", b"view", b"search", b"pv", b"1700000000",
          b"1e30", b"-1", b"99999999999999999999999", b"2024-01-01T00:00:00Z", b"2999-01-01",
          b"{", b"}", b"[1]", b'{"user_id": "u"}', b"\xef\xbb\xbf", b'"\\ud800"', b"null",
          b"user_id,item_id,type,timestamp"]
HEADERS = [b"", b"user_id,item_id,type,timestamp\n", b"user_id\titem_id\ttype\ttimestamp\n",
           b"timestamp,visitorid,event,itemid,transactionid\n",
           b"userId,movieId,rating,timestamp\n", b"timestamp,itemid,property,value\n",
           b'{"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": 1700000000}\n',
           b'{"reviewerID": "A", "asin": "B", "overall": 5, "unixReviewTime": 1400000000}\n']
garbage_bytes = st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=6)),
                         max_size=80).map(b"".join)


@pytest.mark.slow
@PROPS
@given(header=st.sampled_from(HEADERS), body=garbage_bytes,
       suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".dat", ".txt", ".parquet"]),
       compress=st.sampled_from([None, "gz", "fake-gz"]),
       fmt=st.sampled_from(["auto", "csv", "jsonl", "taobao", "retailrocket", "amazon",
                            "movielens", "parquet"]),
       kind=st.sampled_from(["events", "events", "items"]),
       chunk_size=st.sampled_from([1, 3, 100_000]))
def test_garbage_never_crashes(header: bytes, body: bytes, suffix: str, compress: str | None,
                               fmt: str, kind: str, chunk_size: int) -> None:
    data = header + body
    if compress == "gz":
        suffix, data = suffix + ".gz", gzip.compress(data)
    elif compress == "fake-gz":
        suffix += ".gz"  # not really gzip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"garbage{suffix}"
        path.write_bytes(data)
        store = open_store(f"sqlite:///{tmp}/store.db")
        try:
            importer = import_events if kind == "events" else import_items
            try:
                report = importer(store, path, ImportOptions(format=fmt, chunk_size=chunk_size))
            except UnreadableSourceError as exc:
                assert str(exc)
                return
            assert report.status in ("done", "nothing_imported")
            assert min(report.rows_read, report.accepted, report.rejected,
                       report.duplicates) >= 0
            quarantined = store.quarantined()
            assert sum(report.rejected_by_reason.values()) == report.rejected
            if kind == "events":
                assert report.rows_read == report.accepted + report.duplicates + report.rejected
                assert len(quarantined) == report.rejected
                assert store.count_events() == report.accepted
                assert list(quarantined["line"]) == sorted(quarantined["line"]) or chunk_size > 1
                assert all(line >= 1 for line in quarantined["line"])
        finally:
            store.close()


# -- (b) valid rows are never dropped ------------------------------------------------------

ALIASES = {"pv": "view", "addtocart": "cart", "transaction": "purchase", "fav": "favorite",
           "VIEW": "view", "Click": "click"}
TYPES = {t.value: t.value for t in EventType} | ALIASES

ident = st.text(st.characters(codec="utf-8", exclude_characters="\x00\r"), min_size=1,
                max_size=12).filter(lambda s: s == s.strip() and s.strip())


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    written_type = draw(st.sampled_from(sorted(TYPES)))
    typ = TYPES[written_type]
    ms = draw(st.integers(MIN_MS, MAX_MS))
    style = draw(st.sampled_from(["ms", "s", "s_frac", "iso_offset", "iso_z"]))
    if style == "ms":
        ts = str(ms)
    elif style == "s":
        ms -= ms % 1000
        ts = str(ms // 1000)
    elif style == "s_frac":
        ts = f"{ms // 1000}.{ms % 1000:03d}"
    else:
        offset = draw(st.integers(-14 * 60, 14 * 60)) if style == "iso_offset" else 0
        dt = (EPOCH + timedelta(milliseconds=ms)).astimezone(timezone(timedelta(minutes=offset)))
        ts = dt.isoformat(timespec="milliseconds")
        if style == "iso_z":
            ts = ts.replace("+00:00", "Z")
    item = draw(ident)
    query = draw(st.none() | ident)
    if typ == "search":
        query = query or "q"
        item = draw(st.none() | st.just(item))
    return {
        "user_id": draw(ident), "item_id": item, "type": written_type, "timestamp": ts,
        "query": query,
        "rating": draw(st.none() | st.floats(0, 10).map(repr)),
        "quantity": draw(st.none() | st.integers(0, 10**6).map(str)),
        "dwell_seconds": draw(st.none() | st.floats(0, 86_400).map(repr)),
        "position": draw(st.none() | st.integers(0, 500).map(str)),
        "request_id": draw(st.none() | ident),
        "_key": (None, item, typ, ms),
    }


# no quote (a stray quote opens a field that may legally run to the end of the file),
# no line break, not blank
garbage_line = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters='"\r\n'), min_size=1,
            max_size=40).map(str.encode),
    st.binary(min_size=1, max_size=30),  # invalid UTF-8, NULs
).filter(lambda b: not {34, 10, 13} & set(b) and b.decode("utf-8", "replace").strip())
FIELDS = ["user_id", "item_id", "type", "timestamp", "query", "rating", "quantity",
          "dwell_seconds", "position", "request_id"]


def _csv_line(event: dict[str, Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(
        ["" if event[f] is None else event[f] for f in FIELDS])
    return buf.getvalue()


@pytest.mark.slow
@PROPS
@given(items=st.lists(st.tuples(st.booleans(), events(), garbage_line), max_size=40),
       container=st.sampled_from(["csv", "jsonl"]),
       chunk_size=st.sampled_from([1, 4, 100_000]))
def test_valid_rows_are_never_dropped(items: list[tuple[bool, dict[str, Any], bytes]],
                                      container: str, chunk_size: int) -> None:
    parts: list[bytes] = [",".join(FIELDS).encode() + b"\n"] if container == "csv" else []
    expected: set[tuple[Any, ...]] = set()
    n_valid = n_garbage = 0
    for is_valid, event, junk in items:
        if is_valid:
            n_valid += 1
            expected.add((event["user_id"], *event["_key"][1:]))
            if container == "csv":
                parts.append(_csv_line(event).encode())
            else:
                parts.append(json.dumps({f: event[f] for f in FIELDS}).encode() + b"\n")
        else:
            n_garbage += 1
            parts.append(junk + b"\n")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"events.{container}"
        path.write_bytes(b"".join(parts))
        store = open_store(f"sqlite:///{tmp}/store.db")
        try:
            if not parts:
                with pytest.raises(UnreadableSourceError, match="is empty"):
                    import_events(store, path)
                return
            report = import_events(store, path, ImportOptions(format=container,
                                                              chunk_size=chunk_size))
            frame = store.events(["user_id", "item_id", "type", "timestamp"])
            stored = {tuple(r) for r in frame.itertuples(index=False, name=None)}
            count = store.count_events()
        finally:
            store.close()
    assert expected <= stored, report.first_rejected
    assert report.rows_read == n_valid + n_garbage
    assert report.rows_read == report.accepted + report.duplicates + report.rejected
    assert report.accepted == count


# -- (c) timestamps round-trip -------------------------------------------------------------

offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
instants = st.integers(-2_208_988_800_000, 7_258_118_400_000)  # 1900 .. 2200, in ms


def _to_ms(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(milliseconds=1)


@settings(PROPS, max_examples=200)
@given(ms=st.lists(instants, min_size=1, max_size=20), data=st.data())
def test_iso_timestamps_with_offsets_round_trip(ms: list[int], data: st.DataObject) -> None:
    texts = []
    for m in ms:
        tz = data.draw(offsets)
        dt = (EPOCH + timedelta(milliseconds=m)).astimezone(tz)
        style = data.draw(st.sampled_from(["iso", "space", "nocolon", "z", "seconds"]))
        if style == "seconds":  # whole seconds, no fraction
            m -= m % 1000
            dt = (EPOCH + timedelta(milliseconds=m)).astimezone(tz)
            text = dt.isoformat(timespec="seconds")
        else:
            text = dt.isoformat(timespec="milliseconds")
        if style == "space":
            text = text.replace("T", " ")
        elif style == "nocolon":
            text = text[:-3] + text[-2:]
        elif style == "z":
            text = (EPOCH + timedelta(milliseconds=m)).isoformat(
                timespec="milliseconds").replace("+00:00", "Z")
        texts.append((text, m))
    got = parse_timestamps(pd.Series([t for t, _ in texts], dtype=object))
    assert [round(v) for v in got] == [m for _, m in texts], texts


@settings(PROPS, max_examples=200)
@given(ms=st.lists(instants, min_size=1, max_size=20),
       zone=st.sampled_from(["UTC", "Etc/GMT-8", "Etc/GMT+5", "Asia/Kolkata"]))
def test_naive_iso_in_a_fixed_offset_zone(ms: list[int], zone: str) -> None:
    offset = {"UTC": 0, "Etc/GMT-8": 480, "Etc/GMT+5": -300, "Asia/Kolkata": 330}[zone]
    if zone == "Asia/Kolkata":  # one offset since 1945
        ms = [max(m, -757_382_400_000) for m in ms]
    texts = [(EPOCH + timedelta(milliseconds=m + offset * 60_000)).replace(tzinfo=None)
             .isoformat(timespec="milliseconds") for m in ms]
    got = parse_timestamps(pd.Series(texts, dtype=object), timezone=zone)
    assert [round(v) for v in got] == ms, texts


@settings(PROPS, max_examples=200)
@given(values=st.lists(instants, min_size=1, max_size=20), unit=st.sampled_from(["s", "ms"]))
def test_epoch_numbers_round_trip(values: list[int], unit: str) -> None:
    seconds = [v - v % 1000 for v in values]
    if unit == "s":
        texts = [str(v // 1000) for v in seconds]
        expected = seconds
    else:
        texts, expected = [str(v) for v in values], values
    assert [round(v) for v in parse_timestamps(pd.Series(texts, dtype=object), unit)] == \
        expected
    # auto tells the units apart wherever they cannot be confused (|ms| >= 1e11, |s| < 1e11)
    auto = parse_timestamps(pd.Series(texts, dtype=object), "auto")
    for text, want, got in zip(texts, expected, auto, strict=True):
        if unit == "s" or abs(int(text)) >= 10**11:
            assert round(got) == want, text


@PROPS
@given(values=st.lists(st.integers(MIN_MS, MAX_MS), min_size=1, max_size=20))
def test_epoch_forms_of_one_instant_agree(values: list[int]) -> None:
    forms = []
    for v in values:
        dt = EPOCH + timedelta(milliseconds=v)
        forms.append([str(v), f"{v // 1000}.{v % 1000:03d}",
                      dt.isoformat(timespec="milliseconds"),
                      str(v * 1000), str(v * 1_000_000)])  # ms, s, ISO, µs, ns
    for column in zip(*forms, strict=True):
        got = parse_timestamps(pd.Series(list(column), dtype=object))
        assert [round(x) for x in got] == values, column


def test_parse_timestamps_edge_cases() -> None:
    values = pd.Series(["", None, "  ", "garbage", "2024-02-30T00:00:00Z", "0x10",
                        "2999-01-01T00:00:00Z", 1_700_000_000, 1.7e12, "1e400"], dtype=object)
    got = parse_timestamps(values).tolist()
    assert all(v != v for v in got[:6])  # NaN
    assert got[6:9] == [32_472_144_000_000.0, 1_700_000_000_000.0, 1_700_000_000_000.0]
    assert got[9] != got[9]
    # an offset inside a malformed text next to a naive time: unparseable, not a crash
    mixed = parse_timestamps(pd.Series(["2024-01-01T00:00:00+00:00 x", "2024-01-01T00:00:00",
                                        "garbage"], dtype=object)).tolist()
    assert mixed[0] != mixed[0] and mixed[1] == 1_704_067_200_000.0 and mixed[2] != mixed[2]


# ISO-looking texts, valid or not: any year (beyond pandas' 1677-2262 too), days up to 31 in
# every month (30 February), fractions of 1-9 digits, "Z", offsets with and without a colon,
# "T" or a space, and near misses (hour 24, second 60, lower-case z, a trailing character).
_iso_texts = st.builds(
    lambda y, mo, d, h, mi, se, frac, sep, zone, tail:
        f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{se:02d}{frac}{zone}{tail}",
    st.one_of(st.integers(1900, 2100), st.integers(1, 9999)), st.integers(1, 12),
    st.integers(1, 31), st.integers(0, 24),
    st.integers(0, 59), st.integers(0, 60),
    st.one_of(st.just(""), st.integers(1, 9).flatmap(
        lambda n: st.integers(0, 10**n - 1).map(lambda v: f".{v:0{n}d}"))),
    st.sampled_from(["T", " "]),
    st.one_of(st.sampled_from(["", "Z", "z"]), st.builds(
        lambda sign, hh, mm, colon: f"{sign}{hh:02d}{colon}{mm:02d}",
        st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59), st.sampled_from([":", ""]))),
    st.sampled_from(["", "", "", " x", "0"]))


@settings(PROPS, max_examples=300)
@given(texts=st.lists(st.one_of(_iso_texts, st.text(max_size=30)), min_size=1, max_size=40),
       zone=st.sampled_from(["UTC", "Asia/Kolkata"]))
def test_the_arrow_fast_path_agrees_with_the_general_parser(texts: list[str], zone: str) -> None:
    """Timestamps Arrow parses (plain ISO 8601) come out exactly as the general pandas-based
    path reads them; everything else is left to that path."""
    import numpy as np
    import pyarrow as pa

    from tansuo.data.cleaning import _iso_fast, _parse_texts, parse_numbers

    texts = [t.strip() for t in texts if t.strip()]
    if not texts:
        return
    fast = _iso_fast(pa.array(texts, type=pa.string()), zone)
    general = _parse_texts(pd.Series(texts, dtype=object), zone)
    took = ~np.isnan(fast)
    np.testing.assert_array_equal(fast[took], general[took], err_msg=str(texts))
    # and the public parser gives the general path's answer for every text that is not a
    # number (numbers are epoch times)
    words = np.isnan(parse_numbers(pd.Series(texts, dtype=object))[0])
    np.testing.assert_array_equal(
        parse_timestamps(pd.Series(texts, dtype=object), timezone=zone).to_numpy()[words],
        general[words], err_msg=str(texts))
