"""Import events and catalogue items from files (or in-memory frames) into the store.

An import streams the source in chunks; each chunk — its clean events and its rejected rows —
is written in one transaction, so a failing or killed import never leaves a half-written
chunk, and re-running it completes the job (stored events are recognised by id and skipped).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from tansuo.config import CleaningConfig
from tansuo.data.cleaning import CleanChunk, EventCleaner, ItemCleaner, count_user_minutes
from tansuo.data.formats import (
    FORMATS,
    Format,
    Kind,
    RawChunk,
    RawReject,
    ReadOptions,
    detect_format,
    open_text,
    read_chunks,
)
from tansuo.data.row_cleaning import ROW_PATH_MAX, clean_rows
from tansuo.data.sqlite_writer import PreparedEvents, WriterProcess
from tansuo.data.store import EventStore, QuarantineRow, SQLiteStore, WriteResult
from tansuo.errors import StoreError, UnreadableSourceError
from tansuo.privacy.policy import PrivacyPolicy, check_store_key

__all__ = ["ImportOptions", "ImportReport", "import_events", "import_items", "import_frame"]

_FIRST_REJECTED = 20


@dataclass(frozen=True)
class ImportOptions:
    """How to read and clean a source. Every field has a default that works for Tansuo's own
    CSV/JSONL/Parquet layout."""

    format: str = "auto"
    """auto, csv, parquet, jsonl, retailrocket, taobao, amazon or movielens."""
    column_map: Mapping[str, str] = field(default_factory=dict)
    """Tansuo field → source column, e.g. ``{"user_id": "customer"}``."""
    type_map: Mapping[str, str] = field(default_factory=dict)
    """Source event type → Tansuo type, e.g. ``{"pageview": "view"}``."""
    timestamp_unit: str | None = None
    """Unit of numeric timestamps: s, ms or auto (default: the format's)."""
    timezone: str = "UTC"
    """Time zone of timestamps written without an offset."""
    delimiter: str | None = None
    header: bool | None = None
    columns: tuple[str, ...] | None = None
    chunk_size: int = 100_000
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)
    progress: bool | None = None
    """Show a progress bar on stderr (None: only on a terminal)."""
    privacy: PrivacyPolicy | None = None
    """Pseudonymisation and minimisation applied before any rule (None: off); see
    :meth:`PrivacyPolicy.from_settings`."""


@dataclass
class ImportReport:
    """What an import did. ``accepted`` counts rows newly stored."""

    kind: str
    source: str
    format: str
    import_id: int | None = None
    rows_read: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    flagged_unknown_items: int = 0
    bot_users: list[str] = field(default_factory=list)
    first_rejected: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    status: str = "running"

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0

    @property
    def nothing_imported(self) -> bool:
        return self.accepted == 0 and self.duplicates == 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows_per_second"] = round(self.rows_per_second, 1)
        return d

    def _add(self, chunk: CleanChunk, inserted: int, duplicates: int, raw_rows: int) -> None:
        self.rows_read += raw_rows
        self.accepted += inserted
        self.duplicates += duplicates + chunk.in_chunk_duplicates
        self.flagged_unknown_items += chunk.flagged_unknown
        for r in chunk.rejects:
            self.rejected += 1
            self.rejected_by_reason[r.reason] = self.rejected_by_reason.get(r.reason, 0) + 1
            if len(self.first_rejected) < _FIRST_REJECTED:
                self.first_rejected.append(
                    {"line": r.line, "reason": r.reason, "detail": r.detail, "raw": r.raw}
                )


def _resolve_format(path: Path, kind: Kind, name: str) -> Format:
    if name == "auto":
        name = detect_format(path, kind)
    if name not in FORMATS:
        raise UnreadableSourceError(
            f"unknown format {name!r}; expected auto or one of {sorted(FORMATS)}"
        )
    return FORMATS[name]


def _estimate_rows(path: Path, fmt: Format) -> int | None:
    try:
        if fmt.container == "parquet":
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
        size = path.stat().st_size
        with open_text(path) as fh:
            sample = fh.read(1 << 16)
        lines = max(sample.count("\n"), 1)
        if path.suffix.lower() in (".gz", ".bz2", ".xz"):
            return None
        return int(size / (len(sample.encode()) / lines)) if sample else 0
    except (OSError, UnicodeError, ValueError):
        return None


def _progress(total: int | None, desc: str, enabled: bool | None) -> tqdm:
    return tqdm(total=total, desc=desc, unit="rows", unit_scale=True, file=sys.stderr,
                disable=(None if enabled is None else not enabled), leave=False)


def _read_options(opts: ImportOptions) -> ReadOptions:
    return ReadOptions(chunk_size=opts.chunk_size, column_map=dict(opts.column_map),
                       delimiter=opts.delimiter, header=opts.header, columns=opts.columns)


class _TimestampSpill:
    """Parsed timestamps of each chunk, written to a temporary file by the bot scan and read
    back by the import pass, so a large file's timestamps are parsed once and never all held
    in memory."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self._sizes: list[int] = []

    def write(self, ts: np.ndarray) -> None:
        np.ascontiguousarray(ts, dtype=np.float64).tofile(self._file)
        self._sizes.append(len(ts))

    def read(self) -> Iterator[np.ndarray]:
        self._file.seek(0)
        for size in self._sizes:
            yield np.fromfile(self._file, dtype=np.float64, count=size)

    def close(self) -> None:
        self._file.close()


class _Parsed(list[np.ndarray]):
    """In-memory stand-in for :class:`_TimestampSpill` (one chunk held in memory anyway)."""

    def write(self, values: np.ndarray) -> None:
        self.append(values)


def _find_bots(chunks: Iterable[RawChunk], cleaner: EventCleaner, source: str,
               limit: int, spill: _TimestampSpill | _Parsed | None = None) -> set[str]:
    parts: list[pd.Series] = []
    pending = 0
    for chunk in chunks:
        users, ts = cleaner.users_and_times(chunk, source)
        if spill is not None:
            spill.write(ts.to_numpy())
        part = count_user_minutes(users, ts)
        parts.append(part)
        pending += len(part)
        if pending > 5_000_000:  # compact so memory follows distinct user-minutes, not rows
            parts = [pd.concat(parts).groupby(level=[0, 1]).sum()]
            pending = len(parts[0])
    if not parts:
        return set()
    counts = pd.concat(parts).groupby(level=[0, 1]).sum()
    return set(counts[counts > limit].index.get_level_values(0))


#: A batch as ``store.write_events`` takes it: clean events, import id, quarantined rows.
_Batch = tuple[pd.DataFrame, int | None, list[QuarantineRow]]


class _ThreadWriter:
    """Writes each batch with ``store.write_events`` on one writer thread (the store's
    connection is used by that thread alone until the import ends)."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tansuo-writer")
        self._pending: Future[WriteResult] | None = None

    def prepare(self, clean: CleanChunk, import_id: int | None) -> _Batch:
        return clean.frame, import_id, clean.rejects

    def submit(self, prepared: _Batch) -> None:
        self._pending = self._pool.submit(self._store.write_events, *prepared)

    def result(self) -> WriteResult:
        assert self._pending is not None
        future, self._pending = self._pending, None
        return future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class _ProcessWriter:
    """Writes each batch in a child process (:mod:`tansuo.data.sqlite_writer`): the batch is
    grouped into columns here, and bound and committed there, on the other core. A child
    that cannot start (it has nothing written yet) hands the import to a writer thread."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._child = WriterProcess(store.path)
        self._thread: _ThreadWriter | None = None
        self._total = 0

    def prepare(self, clean: CleanChunk, import_id: int | None) -> PreparedEvents | _Batch:
        if self._thread is None:
            try:
                self._child.ready()  # started during the bot scan: no wait as a rule
            except StoreError as exc:
                logging.getLogger("tansuo.data").warning(
                    "%s: writing from a thread of the importing process instead", exc)
                self._child.close()
                self._thread = _ThreadWriter(self._store)
        if self._thread is not None:
            return self._thread.prepare(clean, import_id)
        return self._store.prepare_events(clean.frame, import_id, clean.rejects)

    def submit(self, prepared: PreparedEvents | _Batch) -> None:
        if not isinstance(prepared, PreparedEvents):
            assert self._thread is not None
            self._thread.submit(prepared)
            return
        self._total = prepared.total
        self._child.submit(prepared)

    def result(self) -> WriteResult:
        if self._thread is not None:
            return self._thread.result()
        inserted = self._child.result()
        return WriteResult(inserted=inserted, duplicates=self._total - inserted)

    def close(self) -> None:
        self._child.close()
        if self._thread is not None:
            self._thread.close()


#: Rows in the first piece a bulk import hands to a writer process (see :func:`_ramped`).
_FIRST_PIECE = 16_000


def _ramped(chunks: Iterable[RawChunk], first: int, cap: int) -> Iterator[RawChunk]:
    """``chunks`` cut into pieces that grow from ``first`` rows by a quarter each, up to
    ``cap``; from then on the chunks as they come.

    For a writer process, which writes a row in ~1.25× the time the importer takes to clean
    it: the writer starts once a small piece is cleaned instead of a whole chunk, and the
    cleaning of each next piece ends before the writing of the previous one. The same cuts
    in the bot scan and the import pass keep the scan's parsed timestamps in step."""
    size = first
    for chunk in chunks:
        n = len(chunk.frame)
        if size >= cap or n <= size:
            size = min(cap, size + size // 4)
            yield chunk
            continue
        cuts = []  # (first row, end) of each piece
        start = 0
        while start < n:
            end = min(n, start + size)
            if n - end < size // 4:  # no sliver at the chunk's end
                end = n
            cuts.append((start, end))
            start = end
            size = min(cap, size + size // 4)
        # each reject goes with the first piece that reaches its line (else the last): once
        highs = [chunk.lines[end - 1] for _, end in cuts[:-1]]
        rejects: list[list[RawReject]] = [[] for _ in cuts]
        for r in chunk.rejects:
            rejects[next((i for i, h in enumerate(highs) if r.line <= h), len(cuts) - 1)] \
                .append(r)
        for (start, end), its in zip(cuts, rejects, strict=True):
            yield RawChunk(chunk.frame.iloc[start:end].reset_index(drop=True),
                           chunk.lines[start:end], its)


def _writer(store: EventStore, separate_process: bool) -> _ThreadWriter | _ProcessWriter:
    # only a store in a file can be opened by another process (":memory:" is this one's)
    if separate_process and isinstance(store, SQLiteStore) and store.path.is_file():
        return _ProcessWriter(store)
    return _ThreadWriter(store)


def _run_events(
    store: EventStore, chunks: Iterator[RawChunk], cleaner: EventCleaner,
    report: ImportReport, bar: tqdm, writer: _ThreadWriter | _ProcessWriter,
) -> None:
    """Clean (and prepare) chunk k+1 while chunk k is written."""
    pending: tuple[CleanChunk, int] | None = None
    for chunk in chunks:
        clean = cleaner.clean(chunk, report.source)
        prepared = writer.prepare(clean, report.import_id)
        if pending is not None:
            _settle(writer, *pending, report, bar)
        writer.submit(prepared)
        pending = (clean, len(chunk.frame) + len(chunk.rejects))
    if pending is not None:
        _settle(writer, *pending, report, bar)


def _settle(writer: _ThreadWriter | _ProcessWriter, clean: CleanChunk, size: int,
            report: ImportReport, bar: tqdm) -> None:
    result = writer.result()
    report._add(clean, result.inserted, result.duplicates, size)
    bar.update(size)


def _finish(store: EventStore, report: ImportReport, started: float, log: bool = True
            ) -> ImportReport:
    """Close a successful import: its status, duration and (``log``) report in the import
    log."""
    report.status = "nothing_imported" if report.nothing_imported else "done"
    report.seconds = time.perf_counter() - started
    if log:
        store.finish_import(report.import_id, report.status, report.to_dict())
    return report


def import_events(store: EventStore, path: str | Path, options: ImportOptions | None = None
                  ) -> ImportReport:
    """Import behaviour events from a file. Returns the report; never raises for bad rows."""
    opts = options or ImportOptions()
    path = Path(path)
    fmt = _resolve_format(path, "events", opts.format)
    source = str(path.resolve())
    read = _read_options(opts)
    known = store.item_ids() if opts.cleaning.unknown_items != "keep" else None
    cleaner = EventCleaner(fmt, opts.cleaning, dict(opts.column_map), dict(opts.type_map),
                           opts.timestamp_unit, opts.timezone, known, privacy=opts.privacy)
    check_store_key(store, opts.privacy.pseudonymizer if opts.privacy else None)
    report = ImportReport("events", source, fmt.name)
    started = time.perf_counter()
    total = _estimate_rows(path, fmt)
    # A source of several chunks is written by a process of its own where the store allows
    # (SQLite): started now, it is ready when the first chunk is.
    writer = _writer(store, total is None or total > opts.chunk_size)

    def pieces(chunks: Iterator[RawChunk]) -> Iterator[RawChunk]:
        if isinstance(writer, _ProcessWriter):
            return _ramped(chunks, min(_FIRST_PIECE, opts.chunk_size), opts.chunk_size)
        return chunks
    spill = _TimestampSpill()
    try:
        if opts.cleaning.bot_max_events_per_minute > 0:
            with _progress(total, "scanning for bots", opts.progress) as bar:
                only = cleaner.source_columns("user_id", "timestamp")
                scan = replace(read, only=only) if fmt.row_transform is None else read

                def counted() -> Iterator[RawChunk]:
                    for c in pieces(read_chunks(path, fmt, "events", scan)):
                        bar.update(len(c.frame) + len(c.rejects))
                        yield c
                cleaner.bots = _find_bots(counted(), cleaner, source,
                                          opts.cleaning.bot_max_events_per_minute, spill)
                cleaner.parsed_timestamps = spill.read()
        report.bot_users = sorted(cleaner.bots)
        report.import_id = store.begin_import("events", source, fmt.name)
        try:
            with _progress(total, f"importing {path.name}", opts.progress) as bar:
                _run_events(store, pieces(read_chunks(path, fmt, "events", read)), cleaner,
                            report, bar, writer)
        except BaseException:
            writer.close()  # first: a batch still in flight is not committed
            report.status = "failed"
            report.seconds = time.perf_counter() - started
            store.finish_import(report.import_id, "failed", report.to_dict())
            raise
    finally:
        writer.close()
        spill.close()
    return _finish(store, report, started)


def import_items(store: EventStore, path: str | Path, options: ImportOptions | None = None
                 ) -> ImportReport:
    """Import (upsert) catalogue items from a file."""
    opts = options or ImportOptions()
    path = Path(path)
    fmt = _resolve_format(path, "items", opts.format)
    source = str(path.resolve())
    cleaner = ItemCleaner(fmt, dict(opts.column_map), opts.timezone)
    report = ImportReport("items", source, fmt.name)
    started = time.perf_counter()
    report.import_id = store.begin_import("items", source, fmt.name)
    try:
        with _progress(_estimate_rows(path, fmt), f"importing {path.name}", opts.progress) as bar:
            for chunk in read_chunks(path, fmt, "items", _read_options(opts)):
                clean = cleaner.clean(chunk, source)
                written = store.upsert_items(clean.frame, clean.rejects, report.import_id)
                report._add(clean, written, 0, len(chunk.frame) + len(chunk.rejects))
                bar.update(len(chunk.frame) + len(chunk.rejects))
    except BaseException:
        report.status = "failed"
        store.finish_import(report.import_id, "failed", report.to_dict())
        raise
    return _finish(store, report, started)


def _to_pandas(data: Any) -> pd.DataFrame:
    """Accept pandas, polars, Arrow tables or a list of dicts."""
    if isinstance(data, pd.DataFrame):
        return data
    if hasattr(data, "to_pandas"):  # polars DataFrame, pyarrow Table / RecordBatch
        return data.to_pandas()
    if isinstance(data, list):
        return pd.DataFrame.from_records(data)
    raise TypeError(
        f"expected a pandas/polars DataFrame, an Arrow table or a list of dicts, "
        f"got {type(data).__name__}"
    )


def import_frame(
    store: EventStore, data: Any, kind: Kind = "events", source: str = "<frame>",
    options: ImportOptions | None = None, strict_columns: bool = True, log: bool = True,
) -> ImportReport:
    """Import in-memory rows (pandas, polars, Arrow or a list of dicts) with the same rules.

    Row numbers in the report are 1-based positions in ``data``. ``strict_columns``: a
    required event field that no row has fails the import (False: each row is rejected for
    it, as in a JSON-lines file). A list of up to ``ROW_PATH_MAX`` event dicts is cleaned row
    by row (:mod:`tansuo.data.row_cleaning`), with identical results. ``log``: record the
    import in the store's import log (a row with its report); the service's API batches are
    not (their answer carries the report), or the log would grow by a row per batch.
    """
    opts = options or ImportOptions()
    fmt = FORMATS["jsonl"] if opts.format == "auto" else FORMATS[opts.format]
    cleaner: EventCleaner | None = None
    if kind == "events":
        check_store_key(store, opts.privacy.pseudonymizer if opts.privacy else None)
        cleaner = _frame_cleaner(store, opts, fmt, strict_columns)
        if isinstance(data, list) and len(data) <= ROW_PATH_MAX:
            report = _import_rows(store, data, source, cleaner, opts, log)
            if report is not None:
                return report
    frame = _to_pandas(data).reset_index(drop=True)
    frame = frame.astype(object).where(frame.notna(), None)
    chunk = RawChunk(frame, list(range(1, len(frame) + 1)))
    report = ImportReport(kind, source, fmt.name)
    started = time.perf_counter()
    report.import_id = store.begin_import(kind, source, fmt.name) if log else None
    if kind == "items":
        clean = ItemCleaner(fmt, dict(opts.column_map), opts.timezone).clean(chunk, source)
        report._add(clean, store.upsert_items(clean.frame, clean.rejects, report.import_id), 0,
                    len(frame))
    else:
        assert cleaner is not None
        if opts.cleaning.bot_max_events_per_minute > 0 and len(frame):
            parsed = _Parsed()  # the scan's parsed timestamps, reused by the cleaning pass
            cleaner.bots = _find_bots([chunk], cleaner, source,
                                      opts.cleaning.bot_max_events_per_minute, parsed)
            cleaner.parsed_timestamps = iter(parsed)
            report.bot_users = sorted(cleaner.bots)
        # one chunk: cleaned and written in this thread (no writer thread to overlap with)
        clean = cleaner.clean(chunk, report.source)
        written = store.write_events(clean.frame, report.import_id, clean.rejects)
        report._add(clean, written.inserted, written.duplicates, len(frame) + len(chunk.rejects))
    return _finish(store, report, started, log)


def _frame_cleaner(store: EventStore, opts: ImportOptions, fmt: Format,
                   strict_columns: bool) -> EventCleaner:
    known = store.item_ids() if opts.cleaning.unknown_items != "keep" else None
    return EventCleaner(fmt, opts.cleaning, dict(opts.column_map), dict(opts.type_map),
                        opts.timestamp_unit, opts.timezone, known, strict_columns=strict_columns,
                        privacy=opts.privacy)


def _import_rows(store: EventStore, rows: list[Any], source: str, cleaner: EventCleaner,
                 opts: ImportOptions, log: bool = True) -> ImportReport | None:
    """``import_frame`` for a small list of event dicts, cleaned row by row; None where the
    rows need the vectorised cleaner (see :func:`tansuo.data.row_cleaning.clean_rows`)."""
    if not all(isinstance(r, dict) for r in rows):
        return None
    started = time.perf_counter()
    result = clean_rows(cleaner, rows, source, opts.cleaning.bot_max_events_per_minute)
    if result is None:
        return None
    clean, bots = result
    name = cleaner.fmt.name
    report = ImportReport("events", source, name)
    report.bot_users = sorted(bots)
    report.import_id = store.begin_import("events", source, name) if log else None
    written = store.write_events(clean.frame, report.import_id, clean.rejects)
    report._add(clean, written.inserted, written.duplicates, len(rows))
    return _finish(store, report, started, log)
