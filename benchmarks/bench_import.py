"""Import and read throughput of the event store on the synthetic shop.

    .venv/bin/python benchmarks/bench_import.py [--repeats 3] [--postgres URL]

Generates the default synthetic shop (2,000 users, 3,000 items, ~314,000 event rows including
bots and malformed rows), imports it with every cleaning rule on into a fresh SQLite store and
(when a URL is given or TANSUO_TEST_POSTGRES_URL is set) a fresh PostgreSQL schema, then times
reading all user sequences. Writes its table into docs/benchmarks.md between markers.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from _docs import write_block

from tansuo.data.dataset import load_sequences
from tansuo.data.importer import ImportOptions, import_events, import_items
from tansuo.data.store import open_store
from tansuo.data.synthetic import ShopConfig, generate


def _import_once(url: str, files) -> tuple[float, int, float]:
    store = open_store(url)
    try:
        import_items(store, files.items, ImportOptions(progress=False))
        report = import_events(store, files.events, ImportOptions(progress=False))
        started = time.perf_counter()
        seqs = load_sequences(store)
        read_s = time.perf_counter() - started
        assert seqs.n_events > 0
        return report.rows_read / report.seconds, report.rows_read, read_s
    finally:
        store.close()


def _pg_schema(base: str) -> tuple[str, str]:
    import psycopg

    schema = "bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    return schema, f"{base}{sep}options=-csearch_path%3D{schema}"


def _drop_schema(base: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--postgres", default=os.environ.get("TANSUO_TEST_POSTGRES_URL"))
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        started = time.perf_counter()
        files = generate(ShopConfig(), tmpdir / "shop", progress=False)
        gen_s = time.perf_counter() - started
        rows: list[tuple[str, str, str]] = []
        results: dict[str, list[tuple[float, int, float]]] = {"SQLite": []}
        for i in range(args.repeats):
            results["SQLite"].append(_import_once(f"sqlite:///{tmpdir / f'b{i}.db'}", files))
        if args.postgres:
            results["PostgreSQL"] = []
            for _ in range(args.repeats):
                schema, url = _pg_schema(args.postgres)
                try:
                    results["PostgreSQL"].append(_import_once(url, files))
                finally:
                    _drop_schema(args.postgres, schema)
        for backend, runs in results.items():
            rates = [r[0] for r in runs]
            reads = [r[2] for r in runs]
            rows.append((backend, f"{statistics.median(rates):,.0f} events/s "
                                  f"(min {min(rates):,.0f}, max {max(rates):,.0f})",
                         f"{statistics.median(reads):.2f} s"))
        n_rows = results["SQLite"][0][1]

    table = [
        f"Synthetic shop generated in {gen_s:.1f} s: {n_rows:,} event rows "
        "(2,000 users incl. 10 bots, 3,000 items, 314 malformed rows), imported with every "
        "cleaning rule on (bot scan, timestamps, ids, quarantine).",
        "",
        "| store | bulk import (median of "
        f"{args.repeats}) | read all user sequences |",
        "|---|---|---|",
        *[f"| {b} | {r} | {t} |" for b, r, t in rows],
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}. Command: "
        "`.venv/bin/python benchmarks/bench_import.py"
        + (f" --repeats {args.repeats}" if args.repeats != 3 else "")
        + " --postgres postgresql://tansuo:tansuo@127.0.0.1:5432/tansuo_test`",
    ]
    text = "\n".join(table)
    print(text)
    if not args.no_write:
        write_block("bench_import", "Data import (issue: foundation)", text)

if __name__ == "__main__":
    main()
