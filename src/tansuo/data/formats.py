"""Readers for every import format. Each turns a file into chunks of raw rows.

A reader never raises on a bad row: a row it cannot split into fields (wrong number of columns,
broken JSON) comes back as a :class:`RawReject`, with its line number, so the importer can
quarantine it. It raises :class:`UnreadableSourceError` only when the file itself cannot be read.

Public formats are column mappings onto Tansuo's schema (see ``FORMATS``):

=============  ==========================================================================
csv            header names are Tansuo's field names (or mapped with ``column_map``)
parquet        column names as for csv
jsonl          one JSON object per line, keys as for csv
retailrocket   RetailRocket ``events.csv``: timestamp (ms), visitorid, event, itemid
taobao         Taobao UserBehavior.csv, no header: user, item, category, behavior, ts (s)
amazon         Amazon Reviews JSON lines (2014/2018 ``reviewerID``/``asin``/``overall`` or
               2023 ``user_id``/``parent_asin``/``rating``); item metadata JSON lines too
movielens      ``ratings.csv`` (userId, movieId, rating, timestamp) → review events;
               ``movies.csv`` (movieId, title, genres) → items
=============  ==========================================================================
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pandas as pd

from tansuo.errors import UnreadableSourceError

__all__ = [
    "FORMATS",
    "Format",
    "RawChunk",
    "RawReject",
    "ReadOptions",
    "detect_format",
    "read_chunks",
]

Kind = Literal["events", "items"]
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True, slots=True)
class RawReject:
    """A row that could not even be split into fields."""

    line: int
    reason: str
    detail: str
    raw: str


@dataclass(slots=True)
class RawChunk:
    """Rows of one chunk: ``frame`` has source column names and string/number values;
    ``lines`` holds each row's line number in the source (1-based; row number for Parquet)."""

    frame: pd.DataFrame
    lines: list[int]
    rejects: list[RawReject] = field(default_factory=list)


@dataclass(frozen=True)
class ReadOptions:
    """How to read a file. ``column_map`` maps Tansuo field → source column."""

    chunk_size: int = 100_000
    column_map: Mapping[str, str] = field(default_factory=dict)
    delimiter: str | None = None  # None: sniff (",", "\t", ";", "|" or "::")
    header: bool | None = None  # None: decided by the format
    columns: tuple[str, ...] | None = None  # names for a header-less file
    encoding: str = "utf-8"
    only: tuple[str, ...] | None = None  # source columns to keep (CSV); None: all


@dataclass(frozen=True)
class Format:
    """A public format: how its columns and values map onto Tansuo's schema."""

    name: str
    container: Literal["csv", "jsonl", "parquet"]
    #: Tansuo field → source column, per kind.
    columns: Mapping[Kind, Mapping[str, str]] = field(default_factory=dict)
    #: source event type → Tansuo event type
    type_map: Mapping[str, str] = field(default_factory=dict)
    #: unit of numeric timestamps: "s", "ms" or "auto" (guess by magnitude)
    timestamp_unit: Literal["s", "ms", "auto"] = "auto"
    header: bool = True
    header_names: tuple[str, ...] | None = None  # for header-less files
    #: event fields set to a constant (e.g. every MovieLens rating is a review)
    constants: Mapping[str, str] = field(default_factory=dict)
    #: a function mapping one row dict to canonical values (for nested JSON formats)
    row_transform: Callable[[dict[str, Any], Kind], dict[str, Any]] | None = None


def _amazon_row(row: dict[str, Any], kind: Kind) -> dict[str, Any]:
    """Amazon Reviews: both the 2014/2018 and the 2023 field names."""
    if kind == "events":
        ts: Any = row.get("unixReviewTime")
        if ts is None and row.get("timestamp") is not None:
            ts = row["timestamp"]  # 2023 release: milliseconds
        elif ts is not None:
            ts = int(ts) * 1000 if str(ts).lstrip("-").isdigit() else ts
        text = row.get("reviewText", row.get("text"))
        summary = row.get("summary", row.get("title"))
        if summary and text:
            text = f"{summary}. {text}"
        return {
            "event_id": None,
            "user_id": row.get("reviewerID", row.get("user_id")),
            # 2023: parent_asin is the product the metadata files describe (asin is a variant)
            "item_id": row.get("parent_asin") or row.get("asin"),
            "type": "review",
            "timestamp": ts,
            "rating": row.get("overall", row.get("rating")),
            "text": text or summary,
        }
    categories = row.get("categories") or row.get("category") or []
    if categories and isinstance(categories[0], list):  # 2014: list of category paths
        categories = categories[0]
    if not categories and row.get("main_category"):
        categories = [row["main_category"]]
    description = row.get("description")
    if isinstance(description, list):
        description = " ".join(str(d) for d in description)
    price = row.get("price")
    if isinstance(price, str):
        price = price.replace("$", "").replace(",", "").strip() or None
    attrs = row.get("details") if isinstance(row.get("details"), dict) else {}
    return {
        "item_id": row.get("parent_asin") or row.get("asin"),
        "title": row.get("title"),
        "category": " > ".join(str(c) for c in categories) if categories else None,
        "brand": row.get("brand") or row.get("store"),
        "price": price,
        "description": description,
        "attributes": json.dumps(attrs) if attrs else None,
        "created_at": None,
    }


def _movielens_item(row: dict[str, Any], kind: Kind) -> dict[str, Any]:
    genres = [g for g in str(row.get("genres") or "").split("|") if g and g != "(no genres listed)"]
    return {
        "item_id": row.get("movieId"),
        "title": row.get("title"),
        "category": f"Movies > {genres[0]}" if genres else "Movies",
        "brand": None,
        "price": None,
        "description": None,
        "attributes": json.dumps({"genres": genres}) if genres else None,
        "created_at": None,
    }


FORMATS: dict[str, Format] = {
    "csv": Format("csv", "csv"),
    "parquet": Format("parquet", "parquet"),
    "jsonl": Format("jsonl", "jsonl"),
    "retailrocket": Format(
        "retailrocket",
        "csv",
        columns={
            "events": {"timestamp": "timestamp", "user_id": "visitorid", "type": "event",
                       "item_id": "itemid"},
            "items": {"item_id": "itemid", "category": "categoryid"},
        },
        type_map={"view": "view", "addtocart": "cart", "transaction": "purchase"},
        timestamp_unit="ms",
    ),
    "taobao": Format(
        "taobao",
        "csv",
        columns={
            "events": {"user_id": "user_id", "item_id": "item_id", "type": "behavior_type",
                       "timestamp": "timestamp"},
            "items": {"item_id": "item_id", "category": "category_id"},
        },
        type_map={"pv": "view", "buy": "purchase", "cart": "cart", "fav": "favorite"},
        timestamp_unit="s",
        header=False,
        header_names=("user_id", "item_id", "category_id", "behavior_type", "timestamp"),
    ),
    "amazon": Format("amazon", "jsonl", row_transform=_amazon_row, timestamp_unit="ms"),
    "movielens": Format(
        "movielens",
        "csv",
        columns={
            "events": {"user_id": "userId", "item_id": "movieId", "rating": "rating",
                       "timestamp": "timestamp"},
        },
        constants={"type": "review"},
        timestamp_unit="s",
        row_transform=None,
    ),
}
_MOVIELENS_ITEMS = _movielens_item
#: Column names of MovieLens '::'-separated ``.dat`` files (ML-1M, ML-10M), which have no header.
_MOVIELENS_DAT_NAMES: dict[Kind, tuple[str, ...]] = {
    "events": ("userId", "movieId", "rating", "timestamp"),
    "items": ("movieId", "title", "genres"),
}


def open_text(path: Path, encoding: str = "utf-8") -> IO[str]:
    """Open a text file, transparently decompressing .gz, .bz2 and .xz."""
    try:
        suffix = path.suffix.lower()
        if suffix == ".gz":
            return gzip.open(path, "rt", encoding=encoding, errors="replace", newline="")
        if suffix == ".bz2":
            return bz2.open(path, "rt", encoding=encoding, errors="replace", newline="")
        if suffix in (".xz", ".lzma"):
            return lzma.open(path, "rt", encoding=encoding, errors="replace", newline="")
        return open(path, encoding=encoding, errors="replace", newline="")  # noqa: SIM115
    except OSError as exc:
        raise UnreadableSourceError(f"cannot open {path}: {exc.strerror or exc}") from exc


def _head(path: Path, n: int = 5) -> list[str]:
    with open_text(path) as fh:
        try:
            return [line for _, line in zip(range(n), fh, strict=False)]
        except (OSError, EOFError, UnicodeError) as exc:
            raise UnreadableSourceError(f"cannot read {path}: {exc}") from exc


def _base_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in (".gz", ".bz2", ".xz", ".lzma"):
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def detect_format(path: Path, kind: Kind = "events") -> str:
    """Guess a file's format from its extension and first lines."""
    if not path.exists():
        raise UnreadableSourceError(f"{path} does not exist")
    if path.is_dir():
        raise UnreadableSourceError(f"{path} is a directory; give the path of one file")
    suffix = _base_suffix(path)
    if suffix in (".parquet", ".pq"):
        return "parquet"
    head = _head(path)
    if not head:
        raise UnreadableSourceError(f"{path} is empty")
    first = head[0].strip()
    if suffix in (".jsonl", ".json", ".ndjson") or first.startswith("{"):
        try:
            keys = set(json.loads(first))
        except (ValueError, TypeError):
            return "jsonl"
        amazon_keys = {"reviewerID", "asin", "overall", "parent_asin", "unixReviewTime"}
        return "amazon" if keys & amazon_keys else "jsonl"
    lowered = [c.strip().strip('"').lower() for c in first.replace("\t", ",").split(",")]
    if {"visitorid", "event", "itemid"} <= set(lowered) or (
        kind == "items" and {"itemid", "property", "value"} <= set(lowered)
    ):
        return "retailrocket"
    if {"userid", "movieid"} <= set(lowered) or (kind == "items" and lowered[:2] == ["movieid",
                                                                                       "title"]):
        return "movielens"
    parts = first.split(",")
    if len(parts) == 5 and parts[3].strip() in ("pv", "buy", "cart", "fav") and parts[0].isdigit():
        return "taobao"
    if "::" in first:
        return "movielens"
    return "csv"


def _sniff_delimiter(path: Path, lines: int = 3) -> str:
    head = "".join(_head(path, lines))
    if "::" in head:
        return "::"
    counts = {d: head.count(d) for d in (",", "\t", ";", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _csv_rows(fh: IO[str], delimiter: str) -> Iterator[tuple[int, list[str] | None, str]]:
    """Yield (line number, fields or None if unparseable, error text) for each record."""
    if delimiter == "::":  # MovieLens 1M style; no quoting in that format
        for lineno, line in enumerate(fh, start=1):
            stripped = line.rstrip("\r\n")
            if stripped:
                yield lineno, stripped.split("::"), ""
        return
    reader = csv.reader(fh, delimiter=delimiter)
    last = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield last + 1, None, str(exc)
            last = reader.line_num
            continue
        start, last = last + 1, reader.line_num
        if fields:
            yield start, fields, ""


def _open_binary(path: Path) -> IO[bytes]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".gz":
            return gzip.open(path, "rb")
        if suffix == ".bz2":
            return bz2.open(path, "rb")
        if suffix in (".xz", ".lzma"):
            return lzma.open(path, "rb")
        return open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise UnreadableSourceError(f"cannot open {path}: {exc.strerror or exc}") from exc


def _header(path: Path, fmt: Format, opts: ReadOptions, delimiter: str,
            kind: Kind = "events") -> tuple[list[str], bool]:
    header = fmt.header if opts.header is None else opts.header
    dat_names = _MOVIELENS_DAT_NAMES.get(kind) if fmt.name == "movielens" and delimiter == "::" \
        else None
    if dat_names and opts.header is None:
        header = False  # ratings.dat / movies.dat start with data
    if header:
        with open_text(path, opts.encoding) as fh:
            first = next(_csv_rows(fh, delimiter), None)
        if first is None or first[1] is None:
            raise UnreadableSourceError(f"{path}: no readable header line")
        names = [n.strip().lstrip("\ufeff") for n in first[1]]
    else:
        names = list(opts.columns or fmt.header_names or dat_names or ())
        if not names:
            raise UnreadableSourceError(
                f"{path}: a file without a header needs column names (--columns a,b,c)"
            )
    if len(set(names)) != len(names):
        raise UnreadableSourceError(f"{path}: header has repeated column names {names}")
    return names, header


def _read_csv(path: Path, fmt: Format, opts: ReadOptions, kind: Kind = "events"
              ) -> Iterator[RawChunk]:
    """CSV in blocks of whole records: each block is parsed by Arrow's C++ reader, and by
    Python's csv module when Arrow cannot give exact line numbers (quoted newlines, bad
    encoding, odd quoting) — so every row keeps its true source line."""
    has_header = fmt.header if opts.header is None else opts.header
    # A header line alone decides: data rows may hold other delimiters in text ("a|b|c").
    delimiter = opts.delimiter or _sniff_delimiter(path, 1 if has_header else 3)
    names, header = _header(path, fmt, opts, delimiter, kind)
    if delimiter == "::" or len(delimiter) != 1:
        yield from _read_csv_python(path, names, header, delimiter, opts)
        return
    line_len = _mean_line_length(path)
    block_bytes = max(int(opts.chunk_size * line_len), 1 << 12)
    with _open_binary(path) as fh:
        try:
            base = 0
            if header:
                head = fh.readline()
                base = 1
                while head.count(b'"') % 2 and (more := fh.readline()):
                    head += more
                    base += 1
            while True:
                block = fh.read(block_bytes)
                if not block:
                    break
                block += fh.readline()
                while block.count(b'"') % 2 and (more := fh.readline()):
                    block += more  # never end a block inside a quoted field
                yield _parse_block(block, base, names, delimiter, opts)
                base += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
        except (OSError, EOFError) as exc:
            raise UnreadableSourceError(f"{path}: cannot read past line {base}: {exc}") from exc


def _mean_line_length(path: Path) -> float:
    with _open_binary(path) as fh:
        sample = fh.read(1 << 16)
    return len(sample) / max(sample.count(b"\n"), 1) if sample else 80.0


def _has_odd_quote_line(block: bytes) -> bool:
    """Whether some physical line has an odd number of double quotes (so a quoted field
    spans lines). Counted with numpy: per-line quote counts via the running line number."""
    data = np.frombuffer(block, dtype=np.uint8)
    newlines = np.flatnonzero(data == 10)  # \n
    quote_lines = np.searchsorted(newlines, np.flatnonzero(data == 34))  # line of each "
    return bool((np.bincount(quote_lines) & 1).any())


def _parse_block(block: bytes, base: int, names: list[str], delimiter: str,
                 opts: ReadOptions) -> RawChunk:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if b'"' in block and _has_odd_quote_line(block):  # a quoted newline: Arrow can't number it
        return _parse_block_python(block, base, names, delimiter, opts)
    try:  # Arrow cannot pass an undecodable bad row to on_invalid (it prints a traceback)
        block.decode(opts.encoding)
    except UnicodeDecodeError:
        return _parse_block_python(block, base, names, delimiter, opts)
    lines_in_block = block.splitlines()
    invalid: list[tuple[int | None, str]] = []

    def on_invalid(row: Any) -> str:
        invalid.append((row.number, row.text))
        return "skip"

    try:
        table = pacsv.read_csv(
            io.BytesIO(block),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=True,
                                           encoding=opts.encoding, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid,
                                              ignore_empty_lines=True),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                null_values=[""],  # not Arrow's defaults: "NA", "null", "NaN" are values
                include_columns=[n for n in names if opts.only is None or n in opts.only]),
        )
    except (pa.ArrowInvalid, UnicodeError):
        return _parse_block_python(block, base, names, delimiter, opts)
    if any(n is None for n, _ in invalid):
        return _parse_block_python(block, base, names, delimiter, opts)
    skip = {n for n, _ in invalid}
    if block.startswith((b"\n", b"\r")) or b"\n\n" in block or b"\n\r\n" in block:
        skip.update(i for i, line in enumerate(lines_in_block, start=1) if not line.strip())
    numbers = np.arange(base + 1, base + len(lines_in_block) + 1)
    if skip:
        numbers = np.delete(numbers, [i - 1 for i in skip if 0 < i <= len(numbers)])
    lines = numbers.tolist()
    if len(lines) != table.num_rows:
        return _parse_block_python(block, base, names, delimiter, opts)
    rejects = [
        RawReject(base + int(n or 0), "malformed_row",
                  f"has {text.count(delimiter) + 1} fields; expected {len(names)} "
                  f"({', '.join(names)})", text[:2000])
        for n, text in invalid if text.strip()
    ]
    keep = [n for n in names if opts.only is None or n in opts.only]
    frame = pd.DataFrame({n: pd.Series(pd.arrays.ArrowExtensionArray(table.column(n)))
                          for n in keep})
    return RawChunk(frame, lines, rejects)


def _parse_block_python(block: bytes, base: int, names: list[str], delimiter: str,
                        opts: ReadOptions) -> RawChunk:
    text = io.StringIO(block.decode(opts.encoding, errors="replace"), newline="")
    chunks = list(_rows_to_chunks(_csv_rows(text, delimiter), names, delimiter,
                                  len(block) + 1, base))
    if not chunks:
        return RawChunk(_frame([], names), [])
    return chunks[0]


def _read_csv_python(path: Path, names: list[str], header: bool, delimiter: str,
                     opts: ReadOptions) -> Iterator[RawChunk]:
    with open_text(path, opts.encoding) as fh:
        rows = _csv_rows(fh, delimiter)
        if header:
            next(rows, None)
        try:
            yield from _rows_to_chunks(rows, names, delimiter, opts.chunk_size, 0)
        except (OSError, EOFError, UnicodeError, ValueError) as exc:
            raise UnreadableSourceError(f"{path}: cannot read: {exc}") from exc


def _rows_to_chunks(rows: Iterator[tuple[int, list[str] | None, str]], names: list[str],
                    delimiter: str, chunk_size: int, base: int) -> Iterator[RawChunk]:
    width = len(names)
    buf: list[list[str]] = []
    lines: list[int] = []
    rejects: list[RawReject] = []
    for lineno, fields, err in rows:
        if fields is None:
            rejects.append(RawReject(base + lineno, "malformed_row", err, ""))
        elif len(fields) != width:
            if len(fields) == 1 and not fields[0].strip():
                continue  # blank line
            rejects.append(RawReject(
                base + lineno, "malformed_row",
                f"has {len(fields)} fields; expected {width} ({', '.join(names)})",
                delimiter.join(fields)[:2000]))
        else:
            buf.append(fields)
            lines.append(base + lineno)
        if len(buf) >= chunk_size:
            yield RawChunk(_frame(buf, names), lines, rejects)
            buf, lines, rejects = [], [], []
    if buf or rejects:
        yield RawChunk(_frame(buf, names), lines, rejects)


def _frame(rows: list[list[str]], names: list[str]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame({n: pd.Series([], dtype=object) for n in names})
    cols = list(zip(*rows, strict=True))
    return pd.DataFrame({n: pd.Series(c, dtype=object) for n, c in zip(names, cols, strict=True)})


def _read_jsonl(path: Path, fmt: Format, kind: Kind, opts: ReadOptions) -> Iterator[RawChunk]:
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    rejects: list[RawReject] = []
    with open_text(path, opts.encoding) as fh:
        try:
            for lineno, line in enumerate(fh, start=1):
                text = line.strip()
                if not text:
                    continue
                try:
                    obj = json.loads(text)
                except ValueError as exc:
                    rejects.append(RawReject(lineno, "malformed_row", f"not valid JSON: {exc}",
                                             text[:2000]))
                    continue
                if not isinstance(obj, dict):
                    rejects.append(RawReject(lineno, "malformed_row",
                                             "expected a JSON object per line", text[:2000]))
                    continue
                if "\\ud" in text.lower() and _has_lone_surrogate(obj):
                    rejects.append(RawReject(lineno, "malformed_row",
                                             "has a \\u escape of an unpaired UTF-16 surrogate "
                                             "(not valid Unicode text)", text[:2000]))
                    continue
                if fmt.row_transform is not None:
                    try:
                        obj = fmt.row_transform(obj, kind)
                    except (TypeError, ValueError, AttributeError, IndexError, KeyError) as exc:
                        rejects.append(RawReject(lineno, "malformed_row",
                                                 f"unexpected {fmt.name} record: {exc}",
                                                 text[:2000]))
                        continue
                records.append(obj)
                lines.append(lineno)
                if len(records) >= opts.chunk_size:
                    yield RawChunk(_records_frame(records), lines, rejects)
                    records, lines, rejects = [], [], []
        except (OSError, EOFError, UnicodeError) as exc:
            raise UnreadableSourceError(f"{path}: cannot read: {exc}") from exc
    if records or rejects:
        yield RawChunk(_records_frame(records), lines, rejects)


def _has_lone_surrogate(obj: Any) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    for col in frame.columns:
        if frame[col].dtype != object:
            frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
        else:  # nested values become JSON text rather than Python objects
            frame[col] = frame[col].map(
                lambda v: json.dumps(v) if isinstance(v, dict | list) else v
            )
    return frame


def _read_parquet(path: Path, opts: ReadOptions) -> Iterator[RawChunk]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise UnreadableSourceError(f"{path} is not a readable Parquet file: {exc}") from exc
    row = 0
    for batch in pf.iter_batches(batch_size=opts.chunk_size):
        frame = batch.to_pandas()
        for col in frame.columns:
            if pd.api.types.is_datetime64_any_dtype(frame[col]):
                ts = frame[col]
                if ts.dt.tz is None:  # naive: left naive, so the import's timezone applies
                    frame[col] = ts.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").astype(object)
                else:
                    frame[col] = ts.dt.tz_convert("UTC").dt.strftime(
                        "%Y-%m-%dT%H:%M:%S.%fZ").astype(object)
            frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
        n = len(frame)
        yield RawChunk(frame, list(range(row + 1, row + n + 1)))
        row += n


def read_chunks(path: Path, fmt: Format, kind: Kind, opts: ReadOptions) -> Iterator[RawChunk]:
    """Read ``path`` in ``fmt`` as raw chunks (source column names)."""
    if not path.exists():
        raise UnreadableSourceError(f"{path} does not exist")
    if fmt.container == "parquet":
        yield from _read_parquet(path, opts)
    elif fmt.container == "jsonl":
        yield from _read_jsonl(path, fmt, kind, opts)
    else:
        yield from _read_csv(path, fmt, opts, kind)


def item_row_transform(fmt: Format) -> Callable[[dict[str, Any], Kind], dict[str, Any]] | None:
    """The per-row transform for catalogue files of a format (MovieLens movies.csv)."""
    if fmt.name == "movielens":
        return _MOVIELENS_ITEMS
    return fmt.row_transform
