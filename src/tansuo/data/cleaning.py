"""Cleaning rules: turn raw rows into valid events and items, and say why any row was rejected.

Rules for events, applied in this order (a row is rejected for the first rule it breaks):

====================  ===================================================================
malformed_row         a text field (ids, type, query, text) contains a NUL character, which
                      no store can keep as text (also the readers' reason for unsplittable rows)
missing_user_id       no user id
missing_type          no event type
unknown_type          the type (after the format's aliases) is not a Tansuo event type
missing_timestamp     no timestamp
bad_timestamp         not a date/time (ISO 8601) nor epoch seconds / milliseconds
future_timestamp      later than now + ``max_future_seconds``
too_old_timestamp     earlier than ``min_timestamp``
missing_item_id       an event other than ``search`` without an item
missing_query         a ``search`` with neither query text nor an item
invalid_<field>       dwell_seconds, quantity, amount, rating or position not a number, or
                      out of range (negative; dwell above ``max_dwell_seconds``; rating
                      outside ``rating_range``)
bot_user              the user has more than ``bot_max_events_per_minute`` events in one
                      calendar minute (UTC) in this source
unknown_item          the item is not in the catalogue and ``unknown_items="drop"``
====================  ===================================================================

Exact duplicates (the same ``event_id``, given or derived) are not rejections: they are
counted as duplicates and stored once.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tansuo.config import CleaningConfig
from tansuo.data.formats import Format, Kind, RawChunk
from tansuo.data.schema import _TS_MASK, EVENT_COLUMNS, ITEM_COLUMNS, EventType
from tansuo.data.store import QuarantineRow
from tansuo.errors import UnreadableSourceError

__all__ = ["EventCleaner", "ItemCleaner", "CleanChunk", "count_user_minutes"]

_EVENT_TYPES = {t.value for t in EventType}
_EVENT_TYPE_VALUES = pa.array(sorted(_EVENT_TYPES), type=pa.string())
#: Aliases understood for every format (lower-cased source value → Tansuo type).
TYPE_ALIASES: dict[str, str] = {
    "pv": "view",
    "pageview": "view",
    "page_view": "view",
    "impression": "view",
    "detail": "view",
    "addtocart": "cart",
    "add_to_cart": "cart",
    "add-to-cart": "cart",
    "transaction": "purchase",
    "buy": "purchase",
    "order": "purchase",
    "rating": "review",
    "rate": "review",
    "fav": "favorite",
    "favourite": "favorite",
    "like": "favorite",
    "wishlist": "favorite",
    "not_interested": "dislike",
    "hide": "dislike",
    "query": "search",
}
_TZ_SUFFIX = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$", re.IGNORECASE)
_SURROGATE = re.compile("[\ud800-\udfff]")
_NUMERIC_FIELDS: dict[str, str] = {
    "dwell_seconds": "float",
    "quantity": "int",
    "amount": "float",
    "rating": "float",
    "position": "int",
}


@dataclass(slots=True)
class CleanChunk:
    """Valid rows (canonical columns) and the rejected rows of one raw chunk."""

    frame: pd.DataFrame
    rejects: list[QuarantineRow]
    in_chunk_duplicates: int = 0
    flagged_unknown: int = 0


def _arrow_text(values: pd.Series) -> pa.Array:
    """Values as an Arrow string array: stripped, empty → null. Arrow-backed columns (from the
    CSV reader) are used as they are; other values are converted once."""
    if isinstance(values.dtype, pd.ArrowDtype) and pa.types.is_string(values.dtype.pyarrow_dtype):
        arr = pa.array(values.array)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
    else:
        try:
            arr = pa.array(values.to_numpy(dtype=object), type=pa.string(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
            arr = pa.array(_text_slow(values).to_numpy(), type=pa.string(), from_pandas=True)
    arr = pc.utf8_trim_whitespace(arr)
    return pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)


def _text(series: pd.Series) -> pd.Series:
    """Strings stripped; empty → None; integral floats lose their '.0' (ids from JSON)."""
    return _objects(_arrow_text(series), series.index)


def _objects(arr: pa.Array, index: pd.Index | None = None) -> pd.Series:
    """An Arrow text array as a pandas Series of Python strings (None for nulls)."""
    return pd.Series(arr.to_numpy(zero_copy_only=False), index=index, dtype=object)


def _text_slow(series: pd.Series) -> pd.Series:
    out = []
    for v in series.astype(object).tolist():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
            continue
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        # A lone UTF-16 surrogate cannot be stored as text: U+FFFD, as in file decoding.
        s = _SURROGATE.sub("\ufffd", str(v)).strip()
        out.append(s or None)
    return pd.Series(out, index=series.index, dtype=object)


_NUMBER = r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$"
_TZ_SUFFIX_RE = r"(?:[zZ]|[+-]\d{2}:?\d{2})$"


def parse_numbers(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(float values with NaN where missing or invalid, mask of given-but-invalid values)."""
    arr = _arrow_text(values)
    ok = pc.fill_null(pc.match_substring_regex(arr, _NUMBER), False)
    num = pc.cast(pc.if_else(ok, arr, pa.scalar(None, pa.string())), pa.float64())
    out = num.to_numpy(zero_copy_only=False)
    given = pc.is_valid(arr).to_numpy(zero_copy_only=False)
    ok_np = ok.to_numpy(zero_copy_only=False)
    return out, given & ~ok_np


def parse_timestamps(values: pd.Series, unit: str = "auto", timezone: str = "UTC") -> pd.Series:
    """Parse mixed timestamps to epoch milliseconds (float, NaN where unparseable).

    Numbers are epoch seconds or milliseconds (``unit``; ``auto`` guesses by magnitude,
    also accepting micro- and nanoseconds). Strings are ISO 8601 (``Z``/offsets honoured;
    naive times are in ``timezone``), with a slower fallback for other common layouts.
    """
    out = np.full(len(values), np.nan)
    if not len(values):
        return pd.Series(out, index=values.index)
    num, _ = parse_numbers(values)
    is_num = np.isfinite(num)
    if is_num.any():
        v = num[is_num]
        if unit == "s":
            ms = v * 1000.0
        elif unit == "ms":
            ms = v
        else:
            mag = np.abs(v)
            with np.errstate(over="ignore", invalid="ignore"):  # every branch is computed;
                ms = np.select(                                # huge v overflows in one unused
                    [mag >= 1e17, mag >= 1e14, mag >= 1e11],
                    [v / 1e6, v / 1e3, v],
                    default=v * 1000.0,
                )
        out[is_num] = ms
    arr = _arrow_text(values)
    str_mask = ~is_num & pc.is_valid(arr).to_numpy(zero_copy_only=False)
    if str_mask.any():
        texts = pc.filter(arr, pa.array(str_mask))
        parsed = _iso_fast(texts, timezone)
        rest = np.isnan(parsed)
        if rest.any():
            parsed[rest] = _parse_texts(pd.Series(pc.filter(texts, pa.array(rest)).to_numpy(
                zero_copy_only=False), dtype=object), timezone)
        out[str_mask] = parsed
    return pd.Series(out, index=values.index)


# Plain ISO 8601 as most logs write it: a valid calendar layout, optional fraction, and "Z" or an
# offset (or nothing). Only these go to Arrow's C parser; anything else takes the general path.
_ISO_PLAIN = (r"^\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])[T ](?:[01]\d|2[0-3]):[0-5]\d:"
              r"[0-5]\d(?:\.\d{1,9})?(?:Z|[+-](?:[01]\d|2[0-3]):?[0-5]\d)?$")
_ISO_BLOCK = 4096


def _iso_fast(texts: pa.Array, timezone: str) -> np.ndarray:
    """Epoch ms of the texts in the plain ISO 8601 layout (:data:`_ISO_PLAIN`), parsed by
    Arrow in C (~10x faster than pandas); NaN for every other text, which
    :func:`_parse_texts` then reads. Naive times are taken here only when ``timezone`` is UTC.
    A block with a text Arrow refuses (an impossible date such as 30 February, a year beyond
    1677-2262) is left whole to the general path, so both paths agree on every text
    (tests/test_import_properties.py checks this with hypothesis)."""
    out = np.full(len(texts), np.nan)
    plain = pc.fill_null(pc.match_substring_regex(texts, _ISO_PLAIN), False)
    aware = pc.fill_null(pc.match_substring_regex(texts, _TZ_SUFFIX_RE), False)
    groups = [(pc.and_(plain, aware), pa.timestamp("ns", tz="UTC"))]
    if timezone == "UTC":
        groups.append((pc.and_(plain, pc.invert(aware)), pa.timestamp("ns")))
    for mask, typ in groups:
        rows = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
        if not len(rows):
            continue
        part = texts.take(pa.array(rows))
        got = _cast_ms(part, typ)  # usually every text at once
        if got is not None:
            out[rows] = got
            continue
        for lo in range(0, len(rows), _ISO_BLOCK):  # a text was refused: block by block
            got = _cast_ms(part.slice(lo, _ISO_BLOCK), typ)
            if got is not None:
                out[rows[lo:lo + len(got)]] = got
    return out


def _cast_ms(texts: pa.Array, typ: pa.DataType) -> np.ndarray | None:
    """Epoch ms of texts cast by Arrow to ``typ``, or None when Arrow refuses any of them."""
    try:
        ns = pc.cast(texts, typ).cast(pa.int64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return ns.astype(np.float64) / 1e6


def _parse_texts(strs: pd.Series, timezone: str) -> np.ndarray:
    """Epoch ms (NaN where unparseable) of timestamp texts that :func:`_iso_fast` left: ISO
    8601 through pandas (offsets honoured, naive times in ``timezone``), other common layouts
    through its mixed-format parser, and years pandas cannot hold."""
    has_tz = pc.match_substring_regex(pa.array(strs.to_numpy(), type=pa.string()),
                                      _TZ_SUFFIX_RE).to_numpy(zero_copy_only=False)
    parsed = np.full(len(strs), np.nan)
    for aware in (True, False):
        sel = has_tz if aware else ~has_tz
        if not sel.any():
            continue
        part = strs[sel]
        try:
            with warnings.catch_warnings():
                # texts without a zone suffix that carry a zone inside (malformed): pandas warns
                # that this will raise, and reads the group, or the texts after one, as aware
                warnings.simplefilter("ignore", FutureWarning)
                dt = pd.to_datetime(part, utc=aware, errors="coerce", format="ISO8601")
        except (ValueError, TypeError):
            dt = None
        if dt is None or not aware and not (dt.dtype.kind == "M" and dt.dt.tz is None):
            # read each text alone; in the naive group keep only the naive ones
            one = pd.Series([pd.to_datetime(t, utc=aware, errors="coerce", format="ISO8601")
                             for t in part], index=part.index, dtype=object)
            dt = pd.to_datetime(one, utc=True) if aware else _naive_only(one)
        rest = dt.isna()
        if rest.any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dt2 = pd.to_datetime(part[rest], utc=aware, errors="coerce", format="mixed")
            if aware:
                dt[rest] = dt2
            else:
                dt = pd.to_datetime(dt, errors="coerce")
                dt[rest] = _naive_only(dt2)
        if not aware:
            dt = dt.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
        ns = dt.dt.tz_convert("UTC").to_numpy(dtype="datetime64[ns]").astype("int64")
        vals = ns.astype("float64") / 1e6
        vals[dt.isna().to_numpy()] = np.nan
        parsed[sel] = vals
    for i in np.flatnonzero(np.isnan(parsed)).tolist():
        parsed[i] = _beyond_pandas_range(strs.iat[i], timezone)
    return parsed


def _naive_only(values: pd.Series) -> pd.Series:
    """Times the mixed-layout parser read from texts without a zone suffix, as naive times; one
    it read with a zone (an offset inside a malformed text, e.g. ``...+00:00 x``) is NaT."""
    if values.dtype.kind == "M" and getattr(values.dtype, "tz", None) is None:
        return values
    return pd.to_datetime(pd.Series(
        [v if isinstance(v, pd.Timestamp) and v.tzinfo is None else pd.NaT for v in values],
        index=values.index, dtype=object), errors="coerce")


_PANDAS_MS_RANGE = (pd.Timestamp.min.value / 1e6, pd.Timestamp.max.value / 1e6)


def _beyond_pandas_range(text: str, timezone: str) -> float:
    """Epoch ms of an ISO 8601 time pandas cannot hold (before 1677 or after 2262), so that
    year 2999 is a future timestamp and year 1500 a too-old one, not unparseable; else NaN."""
    try:
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=ZoneInfo(timezone))
        ms = dt.timestamp() * 1000.0
    except (ValueError, OverflowError, OSError, ZoneInfoNotFoundError):
        return np.nan
    lo, hi = _PANDAS_MS_RANGE
    return np.nan if lo <= ms <= hi else ms


def count_user_minutes(users: pd.Series, ts_ms: pd.Series) -> pd.Series:
    """Events per (user, calendar minute UTC) — the input of the bot rule. Returns a Series
    indexed by (user, minute)."""
    ts = ts_ms.to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):  # absurd times (rejected later) would overflow int64
        ok = users.notna().to_numpy() & (np.abs(ts) < 2.0**62)
    codes, uniques = pd.factorize(users[ok])
    minutes = (ts[ok] // 60_000).astype(np.int64)
    if not len(minutes):
        return pd.Series([], dtype=np.int64, index=pd.MultiIndex.from_arrays([[], []]))
    # minutes are factorized too, so both halves of the packed key fit in 32 bits
    mcodes, muniques = pd.factorize(minutes)
    keys, counts = np.unique((codes.astype(np.int64) << 32) | mcodes.astype(np.int64),
                             return_counts=True)
    index = pd.MultiIndex.from_arrays(
        [np.asarray(uniques, dtype=object)[keys >> 32],
         np.asarray(muniques, dtype=np.int64)[keys & 0xFFFFFFFF]],
        names=["user", "minute"])
    return pd.Series(counts, index=index)


#: Event fields a strict table must have a column for.
_REQUIRED_EVENT_FIELDS = ("user_id", "type", "timestamp")
_EVENT_TEXT_FIELDS = ("event_id", "user_id", "item_id", "type", "query", "text", "request_id")
_ITEM_TEXT_FIELDS = ("item_id", "title", "category", "brand", "description", "attributes")


def _checked_texts(rj: _Rejector, cols: Mapping[str, pd.Series], fields: tuple[str, ...]
                   ) -> dict[str, pa.Array]:
    """The text fields as :func:`_arrow_text` gives them; rows whose value contains a NUL
    character (which PostgreSQL text cannot hold) are rejected."""
    out = {}
    for name in fields:
        arr = _arrow_text(cols[name])
        nul = pc.fill_null(pc.match_substring(arr, "\x00"), False)
        rj.reject(nul.to_numpy(zero_copy_only=False), "malformed_row",
                  f"field '{name}' contains a NUL (0x00) character")
        out[name] = arr
    return out


def _reader_rejects(kind: Kind, source: str, chunk: RawChunk) -> list[QuarantineRow]:
    """The reader's rejects as quarantine rows (NULs replaced: the store keeps text)."""
    return [QuarantineRow(kind, source, r.line, r.reason, r.detail.replace("\x00", "\ufffd"),
                          r.raw.replace("\x00", "\ufffd"))
            for r in chunk.rejects]


def _raw_json(frame: pd.DataFrame, positions: np.ndarray) -> list[str]:
    """The rejected source rows as JSON text (via Arrow and orjson: no per-cell Python)."""
    if not len(positions):
        return []
    part = frame.iloc[positions]
    if not len(part.columns):  # rows without any field (Arrow would give no rows at all)
        return ["{}"] * len(positions)
    try:
        # Arrow gives None for nulls; a float NaN is written as null by orjson
        records = pa.Table.from_pandas(part, preserve_index=False).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # mixed Python objects or
        # ints beyond 64 bits: the slow, safe way
        records = part.astype(object).where(part.notna(), None).to_dict(orient="records")
    return [_json_text(rec)[:4000] for rec in records]


def _json_text(record: dict[str, Any]) -> str:
    try:
        return orjson.dumps(record, default=str).decode()
    except (TypeError, orjson.JSONEncodeError):  # ints beyond 64 bits, non-str keys
        clean = {k: (None if v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v)
                 for k, v in record.items()}
        return json.dumps(clean, default=str, ensure_ascii=False)


@dataclass
class _Rejector:
    """Collects rejections for one chunk: first broken rule wins."""

    n: int
    reason: np.ndarray = field(init=False)
    detail: list[str | None] = field(init=False)
    alive: np.ndarray = field(init=False)
    """Rows not rejected so far."""

    def __post_init__(self) -> None:
        self.reason = np.full(self.n, "", dtype=object)
        self.detail = [None] * self.n
        self.alive = np.ones(self.n, dtype=bool)

    def reject(self, mask: np.ndarray, reason: str, detail: Any) -> None:
        """Reject rows in ``mask`` that are still alive; ``detail`` is a str or a row → str."""
        hit = np.flatnonzero(mask & self.alive)
        self.alive[hit] = False
        for i in hit.tolist():
            self.reason[i] = reason
            self.detail[i] = detail(i) if callable(detail) else detail

    def quarantine(self, kind: Kind, source: str, raw: pd.DataFrame,
                   lines: list[int]) -> list[QuarantineRow]:
        dead = np.flatnonzero(~self.alive)
        texts = _raw_json(raw, dead)
        return [
            QuarantineRow(kind, source, int(lines[i]), str(self.reason[i]), self.detail[i] or "",
                          t)
            for i, t in zip(dead.tolist(), texts, strict=True)
        ]


def _resolve_columns(
    frame: pd.DataFrame, fields: tuple[str, ...], fmt: Format, kind: Kind,
    column_map: Mapping[str, str], constants: Mapping[str, str], required: tuple[str, ...],
    source: str,
) -> dict[str, pd.Series]:
    mapping = {**fmt.columns.get(kind, {}), **column_map}
    cols: dict[str, pd.Series] = {}
    present = set(frame.columns)
    for name in fields:
        src = mapping.get(name, name)
        if name in constants:
            cols[name] = pd.Series([constants[name]] * len(frame), index=frame.index, dtype=object)
        elif src in present:
            cols[name] = frame[src]
        else:
            cols[name] = pd.Series([None] * len(frame), index=frame.index, dtype=object)
            if name in required and len(frame):
                raise UnreadableSourceError(
                    f"{source}: no column for required field '{name}' (looked for '{src}'); "
                    f"columns are {sorted(present)}. Map one with --map {name}=COLUMN"
                )
    return cols


@dataclass
class EventCleaner:
    """Applies the event rules to raw chunks of one source."""

    fmt: Format
    config: CleaningConfig = field(default_factory=CleaningConfig)
    column_map: Mapping[str, str] = field(default_factory=dict)
    type_map: Mapping[str, str] = field(default_factory=dict)
    timestamp_unit: str | None = None
    timezone: str = "UTC"
    known_items: set[str] | None = None
    bots: set[str] = field(default_factory=set)
    now_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    #: Timestamps already parsed by the bot scan, one array per chunk, in reading order.
    parsed_timestamps: Iterator[np.ndarray] | None = None
    #: A missing required column fails the import (None: yes, except for JSON lines).
    strict_columns: bool | None = None
    #: Pseudonymisation and minimisation (:class:`tansuo.privacy.policy.PrivacyPolicy`),
    #: applied to each raw chunk before any rule sees it.
    privacy: Any = None

    def __post_init__(self) -> None:
        self._value_sets: dict[str, tuple[set[str], int, pa.Array]] = {}
        self._types = {**TYPE_ALIASES, **{k.lower(): v for k, v in self.fmt.type_map.items()},
                       **{k.lower(): v for k, v in self.type_map.items()}}
        bad = sorted({v for v in self._types.values() if v not in _EVENT_TYPES})
        if bad:
            raise UnreadableSourceError(
                f"type map targets {bad} are not event types; expected one of "
                f"{sorted(_EVENT_TYPES)}"
            )
        self._unit = self.timestamp_unit or self.fmt.timestamp_unit
        self._min_ms = float(
            pd.Timestamp(self.config.min_timestamp).tz_convert("UTC").value // 1_000_000
            if pd.Timestamp(self.config.min_timestamp).tzinfo
            else pd.Timestamp(self.config.min_timestamp, tz="UTC").value // 1_000_000
        )

    @property
    def strict(self) -> bool:
        """Whether a required field without a column fails the source. A table (CSV, Parquet,
        a DataFrame) without a required column is unusable as a whole; JSON lines have no
        header, so a key that a chunk never uses is just a missing value, rejected row by row
        (otherwise the outcome would depend on chunk size)."""
        return self.strict_columns if self.strict_columns is not None else (
            self.fmt.container != "jsonl")

    def columns(self, chunk: RawChunk, source: str) -> dict[str, pd.Series]:
        return _resolve_columns(
            chunk.frame, EVENT_COLUMNS, self.fmt, "events", self.column_map, self.fmt.constants,
            _REQUIRED_EVENT_FIELDS if self.strict else (), source,
        )

    def protected(self, chunk: RawChunk) -> RawChunk:
        """The chunk as the privacy policy lets ingestion see it (itself when none)."""
        from tansuo.privacy.policy import WITHHELD

        if self.privacy is None or not self.privacy.active:
            return chunk
        sources = dict(zip(EVENT_COLUMNS, self.source_columns(*EVENT_COLUMNS), strict=True))
        frame = self.privacy.protect(chunk.frame, sources)
        rejects = chunk.rejects
        if self.privacy.pseudonymizer is not None:  # a raw id may be anywhere in such a row
            rejects = [replace(r, raw=WITHHELD) for r in rejects]
        return RawChunk(frame, chunk.lines, rejects)

    def source_columns(self, *fields: str) -> tuple[str, ...]:
        """Source column names that feed the given Tansuo fields."""
        mapping = {**self.fmt.columns.get("events", {}), **self.column_map}
        return tuple(mapping.get(f, f) for f in fields)

    def users_and_times(self, chunk: RawChunk, source: str) -> tuple[pd.Series, pd.Series]:
        """Just the user ids and parsed timestamps (the bot rule's first pass)."""
        chunk = self.protected(chunk)
        fields = ("user_id", "timestamp")
        # Not required here: the scan reads only these columns, so a "no column" error would
        # list the wrong ones. The import pass checks them against the whole header.
        cols = _resolve_columns(chunk.frame, fields, self.fmt, "events", self.column_map,
                                self.fmt.constants, (), source)
        return _text(cols["user_id"]), parse_timestamps(cols["timestamp"], self._unit,
                                                        self.timezone)

    def clean(self, chunk: RawChunk, source: str) -> CleanChunk:
        # Text stays in Arrow until the kept rows are taken out as Python strings: masks and
        # set lookups run in C, and rejected rows are never converted.
        chunk = self.protected(chunk)
        raw = _zero_based(chunk.frame)
        cols = {k: _zero_based(v) for k, v in self.columns(chunk, source).items()}
        n = len(raw)
        rj = _Rejector(n)
        texts = _checked_texts(rj, cols, _EVENT_TEXT_FIELDS)
        user, item, query, typ_raw = (texts[f] for f in ("user_id", "item_id", "query", "type"))
        typ = _mapped(pc.utf8_lower(typ_raw), self._types)  # aliases; other values unchanged
        user_missing, item_missing, query_missing = (
            _null_mask(a) for a in (user, item, query))

        rj.reject(user_missing, "missing_user_id", "field 'user_id' is empty")
        rj.reject(_null_mask(typ), "missing_type", "field 'type' is empty")
        rj.reject(
            ~_in_set(typ, _EVENT_TYPE_VALUES),
            "unknown_type",
            lambda i: f"type {typ_raw[i].as_py()!r} is not one of {sorted(_EVENT_TYPES)}",
        )
        ts_raw = cols["timestamp"]
        ts = next(self.parsed_timestamps, None) if self.parsed_timestamps is not None else None
        if ts is None or len(ts) != n:
            ts = parse_timestamps(ts_raw, self._unit, self.timezone).to_numpy()
        rj.reject(ts_raw.isna().to_numpy() | _null_mask(_arrow_text(ts_raw)),
                  "missing_timestamp", "field 'timestamp' is empty")
        rj.reject(
            np.isnan(ts),
            "bad_timestamp",
            lambda i: f"timestamp {ts_raw[i]!r} is not ISO 8601 nor epoch seconds/milliseconds",
        )
        limit = self.now_ms + self.config.max_future_seconds * 1000
        with np.errstate(invalid="ignore"):
            rj.reject(ts > limit, "future_timestamp",
                      lambda i: f"timestamp {ts_raw[i]!r} is in the future (after now + "
                                f"{self.config.max_future_seconds:g} s)")
            rj.reject(ts < self._min_ms, "too_old_timestamp",
                      lambda i: f"timestamp {ts_raw[i]!r} is before {self.config.min_timestamp}")
        is_search = pc.fill_null(pc.equal(typ, "search"), False).to_numpy(zero_copy_only=False)
        rj.reject(item_missing & ~is_search, "missing_item_id",
                  lambda i: f"field 'item_id' is empty for a {typ[i].as_py()} event")
        rj.reject(is_search & query_missing & item_missing, "missing_query",
                  "a search needs 'query' text (or an item)")

        numeric: dict[str, np.ndarray] = {}
        for name, kind in _NUMERIC_FIELDS.items():
            given = cols[name]
            val, bad = parse_numbers(given)
            bad |= ~np.isfinite(val) & ~np.isnan(val)
            with np.errstate(invalid="ignore"):
                if kind == "int":
                    bad |= np.isfinite(val) & (val != np.round(val))
                if name == "rating":
                    lo, hi = self.config.rating_range
                    bad |= (val < lo) | (val > hi)
                elif name == "dwell_seconds":
                    bad |= (val < 0) | (val > self.config.max_dwell_seconds)
                else:
                    bad |= val < 0
            expected = numeric_expectation(name, kind, self.config)
            rj.reject(bad, f"invalid_{name}",
                      lambda i, g=given, f=name, e=expected: f"{f} {g[i]!r} is not {e}")
            numeric[name] = val

        if self.bots:
            rj.reject(_in_set(user, self._value_set("bots", self.bots)), "bot_user",
                      f"user sends more than {self.config.bot_max_events_per_minute} events "
                      "in one minute")
        unknown = np.zeros(n, dtype=bool)
        if self.known_items is not None:
            unknown = ~item_missing & ~_in_set(item, self._value_set("items", self.known_items))
            if self.config.unknown_items == "drop":
                rj.reject(unknown, "unknown_item",
                          lambda i: f"item {item[i].as_py()!r} is not in the catalogue")

        rejects = _reader_rejects("events", source, chunk)
        rejects += rj.quarantine("events", source, raw, chunk.lines)
        rejects.sort(key=lambda r: r.line)
        keep = rj.alive.copy()
        kept = pa.array(keep)
        # the kept rows of each text field, filtered once: for the frame and the derived ids
        kept_texts = {name: pc.filter(arr, kept) for name, arr in {**texts, "type": typ}.items()}

        def strings(name: str) -> np.ndarray:
            return kept_texts[name].to_numpy(zero_copy_only=False)

        out = pd.DataFrame({  # copy=False: fresh arrays, and no copying into 2-D blocks
            "user_id": strings("user_id"),
            "item_id": strings("item_id"),
            "type": strings("type"),
            "timestamp": np.round(ts[keep]).astype("int64"),
            "dwell_seconds": numeric["dwell_seconds"][keep],
            "query": strings("query"),
            "quantity": numeric["quantity"][keep],
            "amount": numeric["amount"][keep],
            "rating": numeric["rating"][keep],
            "text": strings("text"),
            "request_id": strings("request_id"),
            "position": numeric["position"][keep],
        }, copy=False)
        out.insert(0, "event_id", _event_ids(out, kept_texts["event_id"], kept_texts))
        if self.privacy is not None and self.privacy.pseudonymizer is not None:
            out["key_id"] = self.privacy.pseudonymizer.key_id
        flagged = unknown[keep]
        out["unknown_item"] = flagged.astype("int8") if self.config.unknown_items == "flag" else 0
        before = len(out)
        if len(set(out["event_id"].tolist())) < before:  # (pandas' duplicated(): ~50 ms)
            out = out.drop_duplicates("event_id", keep="first").reset_index(drop=True)
        return CleanChunk(out, rejects, before - len(out),
                          int(flagged.sum()) if self.config.unknown_items == "flag" else 0)

    def _value_set(self, name: str, values: set[str]) -> pa.Array:
        """``values`` as an Arrow array for :func:`_in_set`, built again only when another set
        is assigned or the set changes size (the importer assigns, never edits, these)."""
        cached = self._value_sets.get(name)
        if cached is None or cached[0] is not values or cached[1] != len(values):
            cached = (values, len(values), pa.array(sorted(values), type=pa.string()))
            self._value_sets[name] = cached
        return cached[2]


_Indexed = TypeVar("_Indexed", pd.DataFrame, pd.Series)


def _zero_based(obj: _Indexed) -> _Indexed:
    """``obj`` indexed 0..n-1; copied (by ``reset_index``) only when it is not already."""
    idx = obj.index
    if isinstance(idx, pd.RangeIndex) and idx.start == 0 and idx.step == 1:
        return obj
    return obj.reset_index(drop=True)


def _null_mask(arr: pa.Array) -> np.ndarray:
    return pc.is_null(arr).to_numpy(zero_copy_only=False)


def _in_set(arr: pa.Array, values: pa.Array) -> np.ndarray:
    """Rows whose value is in ``values`` (a null is in no set)."""
    return pc.fill_null(pc.is_in(arr, value_set=values), False).to_numpy(zero_copy_only=False)


def _mapped(arr: pa.Array, mapping: Mapping[str, str]) -> pa.Array:
    """Each value replaced by ``mapping[value]`` where it has one (per distinct value)."""
    encoded = pc.dictionary_encode(arr)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    uniques = encoded.dictionary.to_pylist()
    replaced = pa.array([mapping.get(v, v) for v in uniques], type=pa.string())
    return replaced.take(encoded.indices)


def numeric_expectation(name: str, kind: str, config: CleaningConfig) -> str:
    """What a numeric event field must be, as the ``invalid_<field>`` detail says it."""
    if name == "rating":
        lo, hi = config.rating_range
        return f"a number in [{lo:g}, {hi:g}]"
    if name == "dwell_seconds":
        return f"seconds in [0, {config.max_dwell_seconds:g}]"
    return "a non-negative " + ("integer" if kind == "int" else "number")


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_TS_NIBBLES = np.arange(40, -1, -4, dtype=np.int64)  # the 11 hex digits of a masked timestamp


def _event_ids(frame: pd.DataFrame, given: pa.Array, texts: Mapping[str, pa.Array]
               ) -> np.ndarray | list[str]:
    """Given ids, or ids derived exactly as :func:`derive_event_id` does: the key joined by
    Arrow from the frame's text columns (``texts``, as Arrow arrays) and numbers, one BLAKE2b
    digest per row (no vectorised BLAKE2b exists), and the text
    ``d:<11 hex digits of the time><32 hex digits of the digest>`` assembled in numpy."""
    n = len(frame)
    if not n:
        return []  # (as the row path makes an empty frame's column)
    parts = [texts["user_id"], texts["item_id"], texts["type"],
             pc.cast(pa.array(frame["timestamp"].to_numpy()), pa.string()),
             texts["query"], texts["request_id"]]
    pos = frame["position"].to_numpy(dtype="float64")
    parts.append(pc.cast(pa.array(np.where(np.isnan(pos), 0, pos).astype(np.int64),
                                  mask=np.isnan(pos)), pa.string()))
    keys = pc.binary_join_element_wise(*parts, "\x1f", null_handling="replace",
                                       null_replacement="")
    # copying a fresh 16-byte hasher costs less than making one (no keyword parsing): ~30%
    # less than ``blake2b(k, digest_size=16).digest()`` per row, the same digests
    fresh = hashlib.blake2b(digest_size=16).copy
    digests: list[bytes] = []
    for k in pc.cast(keys, pa.binary()).to_pylist():
        h = fresh()
        h.update(k)
        digests.append(h.digest())
    text = np.empty((n, 45), dtype=np.uint8)
    text[:, 0], text[:, 1] = ord("d"), ord(":")
    stamps = frame["timestamp"].to_numpy(dtype=np.int64) & _TS_MASK
    text[:, 2:13] = _HEX_DIGITS[(stamps[:, None] >> _TS_NIBBLES) & 0xF]
    d = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(n, 16)
    text[:, 13::2], text[:, 14::2] = _HEX_DIGITS[d >> 4], _HEX_DIGITS[d & 0xF]
    # the rows as str objects through Arrow (a third of the cost of numpy's S45 -> U45)
    derived = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(45), n, [None, pa.py_buffer(text)]).cast(pa.binary()).cast(pa.string())
    if given.null_count < len(given):  # a given id wins where it is not empty
        derived = pc.if_else(pc.fill_null(pc.not_equal(given, ""), False), given, derived)
    return derived.to_numpy(zero_copy_only=False)


@dataclass
class ItemCleaner:
    """Rules for catalogue rows: an item id is required; price must be a non-negative number;
    attributes must be a JSON object; created_at a parseable time. Repeated ids: last wins."""

    fmt: Format
    column_map: Mapping[str, str] = field(default_factory=dict)
    timezone: str = "UTC"
    #: RetailRocket properties: latest (timestamp, value) per (item, property) in this source,
    #: so an item's category survives a later chunk that only updates its availability.
    _latest: dict[tuple[str, str], tuple[float, Any]] = field(default_factory=dict, init=False,
                                                              repr=False)

    def clean(self, chunk: RawChunk, source: str) -> CleanChunk:
        from tansuo.data.formats import item_row_transform

        raw = _zero_based(chunk.frame)
        frame = raw
        lines = chunk.lines
        transform = item_row_transform(self.fmt)
        fmt, column_map = self.fmt, self.column_map
        if {"property", "value", "itemid"} <= set(raw.columns):  # RetailRocket properties
            frame, positions = _retailrocket_items(raw, self._latest)
            lines = [chunk.lines[p] for p in positions]
        elif transform is not None and self.fmt.container == "csv":
            frame = pd.DataFrame([transform(r, "items") for r in raw.to_dict(orient="records")],
                                 columns=list(ITEM_COLUMNS))
        if frame is not raw:  # already canonical columns: the source mapping no longer applies
            fmt, column_map = replace(self.fmt, columns={}), {}
        cols = {k: _zero_based(v) for k, v in _resolve_columns(
            frame, ITEM_COLUMNS, fmt, "items", column_map, {}, ("item_id",), source,
        ).items()}
        rj = _Rejector(len(frame))
        texts = {k: _objects(v, cols[k].index)
                 for k, v in _checked_texts(rj, cols, _ITEM_TEXT_FIELDS).items()}
        item = texts["item_id"]
        rj.reject(item.isna().to_numpy(), "missing_item_id", "field 'item_id' is empty")
        price_s = _text(cols["price"])
        price = pd.to_numeric(price_s, errors="coerce").to_numpy(dtype="float64")
        with np.errstate(invalid="ignore"):
            bad_price = price_s.notna().to_numpy() & (~np.isfinite(price) | (price < 0))
        rj.reject(bad_price, "invalid_price",
                  lambda i: f"price {price_s[i]!r} is not a non-negative number")
        attrs = texts["attributes"]
        parsed_attrs: list[str | None] = []
        bad_attrs = np.zeros(len(frame), dtype=bool)
        for i, a in enumerate(attrs.tolist()):
            if a is None:
                parsed_attrs.append(None)
                continue
            try:
                obj = json.loads(a)
            except ValueError:
                obj = None
            if not isinstance(obj, dict):
                bad_attrs[i] = True
                parsed_attrs.append(None)
            else:
                parsed_attrs.append(json.dumps(obj, sort_keys=True, ensure_ascii=False))
        rj.reject(bad_attrs, "invalid_attributes",
                  lambda i: f"attributes {attrs[i]!r} is not a JSON object")
        created_s = cols["created_at"]
        created = parse_timestamps(created_s, "auto", self.timezone).to_numpy()
        lo, hi = _PANDAS_MS_RANGE  # beyond years 1677..2262 is no creation date (nor an int64)
        created[(created < lo) | (created > hi)] = np.nan
        rj.reject(_text(created_s).notna().to_numpy() & np.isnan(created), "invalid_created_at",
                  lambda i: f"created_at {created_s[i]!r} is not a date/time")
        keep = rj.alive.copy()
        rejects = _reader_rejects("items", source, chunk)
        rejects += rj.quarantine("items", source, frame, lines)
        rejects.sort(key=lambda r: r.line)
        created_kept = created[keep]
        out = pd.DataFrame({
            "item_id": item[keep].to_numpy(dtype=object),
            "title": texts["title"][keep].to_numpy(dtype=object),
            "category": texts["category"][keep].to_numpy(dtype=object),
            "brand": texts["brand"][keep].to_numpy(dtype=object),
            "price": price[keep],
            "description": texts["description"][keep].to_numpy(dtype=object),
            "attributes": np.array(parsed_attrs, dtype=object)[keep] if len(frame) else [],
            "created_at": pd.array(
                [None if np.isnan(c) else int(round(c)) for c in created_kept], dtype="Int64"
            ),
        })
        before = len(out)
        out = out.drop_duplicates("item_id", keep="last").reset_index(drop=True)
        return CleanChunk(out, rejects, before - len(out))


def _retailrocket_items(raw: pd.DataFrame, latest: dict[tuple[str, str], tuple[float, Any]]
                        ) -> tuple[pd.DataFrame, list[int]]:
    """RetailRocket item_properties: keep the latest categoryid / available per item. Returns
    one row per item and, for each, the position in ``raw`` of its first property row (so a
    rejected item is reported at a line of the file, not of the pivoted table).

    ``latest`` carries the values seen in earlier chunks of the same file (an item's rows are
    spread over the whole file), so each chunk's rows hold every known property of its items.
    """
    props = raw[raw["property"].isin(["categoryid", "available"])].copy()
    first = {item: pos for pos, item in reversed(list(zip(props.index.tolist(),
                                                          props["itemid"].tolist(),
                                                          strict=True)))}
    props["ts"] = pd.to_numeric(props["timestamp"], errors="coerce")
    props = props.sort_values("ts", kind="stable").drop_duplicates(["itemid", "property"],
                                                                   keep="last")
    for item, prop, value, ts in zip(props["itemid"].tolist(), props["property"].tolist(),
                                     props["value"].tolist(), props["ts"].tolist(), strict=True):
        old = latest.get((item, prop))
        if old is None or not ts < old[0]:
            latest[(item, prop)] = (ts, value)
    items = sorted(set(props["itemid"].tolist()), key=lambda i: (i is None, str(i)))
    category = [latest.get((i, "categoryid"), (0.0, None))[1] for i in items]
    available = [latest.get((i, "available"), (0.0, None))[1] for i in items]
    out = pd.DataFrame({"item_id": pd.Series(items, dtype=object),
                        "category": pd.Series(category, dtype=object)})
    if any(a is not None for a in available):
        out["attributes"] = [None if a is None else json.dumps({"available": a == "1"})
                             for a in available]
    return out, [first[i] for i in items]
