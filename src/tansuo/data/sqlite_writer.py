"""Writing prepared event batches into a SQLite store, in this process or in a child process.

A bulk import cleans chunk k+1 while chunk k is written. In one process the two take turns
on the GIL: the ``sqlite3`` module releases it for each row's insert and must take it back
before binding the next row, which it rarely gets while the cleaning thread runs Python
code, so a writer thread barely overlaps with cleaning. :class:`WriterProcess` runs the
writes in a child process on the other core instead. The child imports only the standard
library (it starts in tens of milliseconds), receives each batch already grouped into
columns (:class:`PreparedEvents`, pickled without a memo: ~20 ms per 100,000 events), commits
it in one transaction as the store itself would, and dies with its parent (``PR_SET_PDEATHSIG`` on
Linux; elsewhere it stops at the end of its input), so a killed import leaves whole batches
only, as with a writer thread.

This module must not import anything outside the standard library: the child runs it as
``python -m tansuo.data.sqlite_writer``.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tansuo.errors import StoreError  # standard library only, like this module

__all__ = [
    "EventGroup",
    "PAGE_SIZE",
    "PreparedEvents",
    "WriterProcess",
    "connect",
    "insert_event_groups",
    "write_prepared",
    "QUARANTINE_SQL",
]

#: Page size of a newly created store file (see :func:`connect`).
PAGE_SIZE = 16384

QUARANTINE_SQL = (
    "INSERT INTO quarantine (import_id, kind, source, line, reason, detail, raw, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (kind, source, line, reason) DO NOTHING"
)


#: Rows with the same filled columns: the database columns, and the values column by column,
#: led by a column of each row's position in the batch (its ``seq`` offset). Columns, not
#: rows: they pickle faster, and the rows are made one at a time while they are bound.
EventGroup = tuple[tuple[str, ...], list[list[Any]]]


@dataclass(frozen=True, slots=True)
class PreparedEvents:
    """One batch ready to bind, in groups (:data:`EventGroup`)."""

    groups: list[EventGroup]
    total: int
    """Rows in the batch as given (repeats within it included)."""
    quarantine: list[tuple[Any, ...]]
    """Rows for :data:`QUARANTINE_SQL`."""


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection to the store's file as every Tansuo connection opens it (WAL mode)."""
    conn = sqlite3.connect(path, isolation_level="DEFERRED", timeout=30.0,
                           check_same_thread=False)
    # A new file gets 16 KiB pages instead of SQLite's 4 KiB: a bulk import's inserts cost
    # ~5-10% less CPU (docs/benchmarks.md, "Data import"), while small live batches cost the
    # same (32 KiB pages made those slower). Without effect on an existing file.
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA cache_size=-65536")
    return conn


def insert_event_groups(conn: sqlite3.Connection, groups: list[EventGroup]) -> int:
    """Insert the groups inside the caller's write transaction; return events inserted.

    ``seq`` continues from the stored maximum in the batch's order, so events with equal
    timestamps keep their ingestion order. ``ON CONFLICT`` (not ``INSERT OR IGNORE``): only a
    repeated ``event_id`` is skipped; any other constraint violation fails the batch."""
    base = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]) + 1
    before = conn.total_changes
    for cols, columns in groups:
        conn.executemany(
            f"INSERT INTO events (seq, {', '.join(cols)}) "
            f"VALUES (? + {base}, {', '.join('?' * len(cols))}) "
            "ON CONFLICT (event_id) DO NOTHING",
            zip(*columns, strict=True),
        )
    return conn.total_changes - before


def write_prepared(conn: sqlite3.Connection, batch: PreparedEvents) -> int:
    """Write one batch (events and quarantined rows) in one transaction; return events
    inserted."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        inserted = insert_event_groups(conn, batch.groups)
        if batch.quarantine:
            conn.executemany(QUARANTINE_SQL, batch.quarantine)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return inserted


def _dump(obj: Any, fh: IO[bytes]) -> None:
    """One message: its length, then its pickle. The reader takes the bytes off the pipe in
    one go and unpickles them afterwards, so the writer is not held up while it unpickles."""
    # No memo: the batch holds no shared or cyclic objects, and memoising every string is
    # most of the cost of pickling a batch (~170 ms instead of ~20 ms per 100,000 events).
    buf = io.BytesIO()
    buf.write(b"\0" * 8)
    pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True
    pickler.dump(obj)
    view = buf.getbuffer()
    view[:8] = (len(view) - 8).to_bytes(8, "little")
    fh.write(view)
    fh.flush()


def _load(fh: IO[bytes]) -> Any:
    """The next message written by :func:`_dump`; EOFError at the end of the stream."""
    head = fh.read(8)
    if len(head) < 8:
        raise EOFError("end of stream")
    size = int.from_bytes(head, "little")
    data = fh.read(size)
    if len(data) < size:
        raise EOFError("stream ended inside a message")
    return pickle.loads(data)


class WriterProcess:
    """The parent's handle on a child that writes batches into the SQLite file at ``path``.

    :meth:`submit` hands a batch over (it waits only for the previous one to be picked up);
    :meth:`result` waits for the oldest batch's outcome. One batch may be pending at a time.
    """

    def __init__(self, path: str | Path) -> None:
        # the child finds this copy of Tansuo whatever the parent's sys.path was made of
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", self.module, str(path), str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )
        self._pending = False
        self._ready = False

    #: The module the child runs (a test points it elsewhere to see a child fail to start).
    module = "tansuo.data.sqlite_writer"

    def ready(self) -> None:
        """Wait until the child has opened the store; StoreError when it could not start."""
        if self._ready:
            return
        assert self._proc.stdout is not None
        try:
            status, _ = _load(self._proc.stdout)
        except (EOFError, pickle.UnpicklingError, OSError) as exc:
            raise StoreError(f"the SQLite writer process did not start (exit status "
                             f"{self._proc.wait()}; its error is above)") from exc
        self._ready = status == "ready"

    def submit(self, batch: PreparedEvents) -> None:
        if self._pending:
            raise RuntimeError("the previous batch's result was not read")
        self.ready()
        assert self._proc.stdin is not None
        try:
            _dump(batch, self._proc.stdin)
        except (BrokenPipeError, OSError) as exc:
            raise self._died() from exc
        self._pending = True

    def result(self) -> int:
        """Events inserted by the pending batch; raises what its write raised."""
        assert self._proc.stdout is not None
        try:
            status, value = _load(self._proc.stdout)
        except (EOFError, pickle.UnpicklingError, OSError) as exc:
            raise self._died() from exc
        self._pending = False
        if status == "ok":
            return int(value)
        kind, message = value
        error = getattr(sqlite3, kind, None)
        if isinstance(error, type) and issubclass(error, sqlite3.Error):
            raise error(message)  # as the same write in this process would raise it
        raise StoreError(f"the SQLite writer process failed: {kind}: {message}")

    def _died(self) -> StoreError:
        code = self._proc.wait()
        return StoreError(f"the SQLite writer process exited (status {code}) before it "
                          "acknowledged a batch; that batch was written whole or not at all, "
                          "and running the import again completes it")

    def close(self) -> None:
        """Stop the child: after its last batch normally; at once when that was not read
        (an import that fails or is interrupted does not commit what is still in flight)."""
        if self._proc.poll() is None and self._pending:
            self._proc.kill()
        for fh in (self._proc.stdin, self._proc.stdout):
            if fh is not None:
                with contextlib.suppress(OSError):  # a pipe the child already closed
                    fh.close()
        self._proc.wait()

    def __enter__(self) -> WriterProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _die_with_parent(parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _serve(path: str, stdin: IO[bytes], stdout: IO[bytes]) -> None:
    conn = connect(path)
    _dump(("ready", None), stdout)
    try:
        while True:
            try:
                batch = _load(stdin)
            except EOFError:
                return
            try:
                reply: tuple[str, Any] = ("ok", write_prepared(conn, batch))
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
                reply = ("error", (type(exc).__name__, str(exc)))
            _dump(reply, stdout)
    finally:
        conn.close()


if __name__ == "__main__":
    _die_with_parent(int(sys.argv[2]))
    _serve(sys.argv[1], sys.stdin.buffer, sys.stdout.buffer)
