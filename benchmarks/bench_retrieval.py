"""Exact vs approximate (HNSW) top-k retrieval: latency and recall@k against exact.

    .venv/bin/python benchmarks/bench_retrieval.py [--items 200000,500000] [--dim 64]

Item and query vectors are random unit vectors (no cluster structure: the hard case for an
approximate index). Writes its table into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from _docs import write_block

from tansuo.models.retrieval import ExactIndex, HNSWIndex, RetrievalConfig, recall_at_k


def _unit(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default="200000,500000")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    queries = _unit(args.queries, args.dim, rng)
    rows = []
    for n in (int(x) for x in args.items.split(",")):
        items = _unit(n, args.dim, rng)
        exact = ExactIndex(items)
        started = time.perf_counter()
        truth, _ = exact.search(queries, 100)
        exact_ms = (time.perf_counter() - started) * 1000 / len(queries)
        started = time.perf_counter()
        hnsw = HNSWIndex(items, RetrievalConfig())
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        found, _ = hnsw.search(queries, 100)
        hnsw_ms = (time.perf_counter() - started) * 1000 / len(queries)
        rows.append(f"| {n:,} | {args.dim} | {exact_ms:.2f} | {build_s:.0f} | {hnsw_ms:.2f} | "
                    f"{recall_at_k(found[:, :10], truth[:, :10]):.3f} | "
                    f"{recall_at_k(found, truth):.3f} |")
        print(rows[-1], flush=True)
    text = "\n".join([
        f"{args.queries:,} random unit queries against random unit item vectors (inner "
        "product); per-query latency from batched search on "
        f"{os.cpu_count()} cores ({platform.machine()}). HNSW: M=32, efConstruction=200, "
        "efSearch=128. Tansuo searches exactly up to 200,000 items and uses HNSW beyond.",
        "",
        "| items | dim | exact ms/query | HNSW build s | HNSW ms/query | recall@10 | "
        "recall@100 |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Command: `.venv/bin/python benchmarks/bench_retrieval.py --items {args.items} "
        f"--dim {args.dim}`",
    ])
    if not args.no_write:
        write_block("bench_retrieval", "Retrieval: exact vs approximate", text)


if __name__ == "__main__":
    main()
