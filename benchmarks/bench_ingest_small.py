"""CPU cost of small event batches (the service's POST /v1/events): row-by-row vs vectorised.

    .venv/bin/python benchmarks/bench_ingest_small.py [--repeats 200]

For batches of 20 to 2,000 view events (random users and catalogue items, epoch-ms times):
the row-by-row cleaner (``tansuo.data.row_cleaning.clean_rows``, with the bot scan) against the
vectorised ``EventCleaner.clean`` (without its bot scan, so a lower bound on that path); the
store's grouping of a clean batch for the SQLite write, row by row against vectorised; and a
whole ``import_frame`` into a fresh SQLite store given the rows as a list of dicts (row path)
or as a DataFrame (vectorised path). CPU time per batch (``time.process_time``), median of
``--repeats`` batches. Writes its table into docs/benchmarks.md between markers.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from _docs import write_block

from tansuo.config import CleaningConfig
from tansuo.data.cleaning import EventCleaner
from tansuo.data.formats import FORMATS, RawChunk
from tansuo.data.importer import ImportOptions, import_frame
from tansuo.data.row_cleaning import clean_rows
from tansuo.data.store import _event_groups_by_row, _event_groups_vectorised, open_store

SIZES = (20, 50, 200, 1000, 2000)
T0 = 1_700_000_000_000


def rows(rng: np.random.Generator, n: int, offset: int) -> list[dict[str, Any]]:
    return [{"user_id": f"u{int(rng.integers(2000))}", "item_id": f"i{int(rng.integers(3000))}",
             "type": "view", "timestamp": T0 + offset + j, "dwell_seconds": 3.5}
            for j in range(n)]


def cpu_ms(fn: Callable[[int], object], repeats: int) -> float:
    """Median CPU ms of ``fn(k)`` over ``repeats`` calls (k = call number)."""
    fn(-1)  # warm-up
    times = []
    for k in range(repeats):
        t = time.process_time()
        fn(k)
        times.append((time.process_time() - t) * 1000)
    return statistics.median(times)


def batch_costs(batch: list[dict[str, Any]], config: CleaningConfig, reps: int
                ) -> list[float]:
    """CPU ms of: row cleaning, vectorised cleaning, row grouping, vectorised grouping."""
    frame = pd.DataFrame(batch).astype(object)
    chunk = RawChunk(frame, list(range(1, len(batch) + 1)))
    cleaner = EventCleaner(FORMATS["jsonl"], config, strict_columns=False)
    limit = config.bot_max_events_per_minute
    result = clean_rows(cleaner, batch, "bench", limit)
    assert result is not None, "the row path declined a plain batch"
    clean = result[0].frame
    return [cpu_ms(lambda _: clean_rows(cleaner, batch, "bench", limit), reps),
            cpu_ms(lambda _: cleaner.clean(chunk, "bench"), reps),
            cpu_ms(lambda _: _event_groups_by_row(clean, 1), reps),
            cpu_ms(lambda _: _event_groups_vectorised(clean, 1), reps)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    config = CleaningConfig()
    lines = ["| events per batch | cleaning, row by row | cleaning, vectorised | write grouping, "
             "row by row | write grouping, vectorised |", "|---|---|---|---|---|"]
    for n in SIZES:
        cells = batch_costs(rows(rng, n, 0), config, max(5, args.repeats * 20 // n))
        lines.append(f"| {n:,} | " + " | ".join(f"{c:.2f} ms" for c in cells) + " |")

    whole = ["| events per batch | `import_frame` of a list of dicts (row path) | "
             "`import_frame` of a DataFrame (vectorised path) |", "|---|---|---|"]
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(3000)],
                          "title": [f"item {i}" for i in range(3000)]})
    options = ImportOptions()  # built once, as the service does (it reads the environment)
    with tempfile.TemporaryDirectory() as tmp:
        for n in (20, 50):
            cells = []
            for as_frame in (False, True):
                with open_store(f"sqlite:///{tmp}/{n}-{as_frame}.db") as store:
                    import_frame(store, items, "items")

                    def one(k: int, store: Any = store, as_frame: bool = as_frame,
                            n: int = n) -> None:
                        batch = rows(rng, n, (k + 2) * 10_000)  # new events every time
                        import_frame(store, pd.DataFrame(batch) if as_frame else batch,
                                     "events", source="bench", options=options)
                    cells.append(cpu_ms(one, args.repeats))
            whole.append(f"| {n} | {cells[0]:.2f} ms | {cells[1]:.2f} ms |")

    text = "\n".join([
        "```", ".venv/bin/python benchmarks/bench_ingest_small.py"
        + (f" --repeats {args.repeats}" if args.repeats != 200 else ""), "```", "",
        f"CPU time per batch, median; {platform.machine()}, {platform.python_version()}. View "
        "events of random users and items. The vectorised cleaning column leaves out that "
        "path's bot scan (the row path includes it).", "", *lines, "", *whole])
    print(text)
    if not args.no_write:
        write_block("bench_ingest_small", "Small event batches: row-by-row ingestion "
                    "(issue 7)", text)


if __name__ == "__main__":
    main()
