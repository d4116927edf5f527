"""One-shopper SASRec query cost (the model part of a served recommendation) into
docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_query.py [--queries 600]

Shapes of the synthetic shop (3,000 items, 384-d text vectors, histories of 60 interactions:
longer than max_len 50, so nothing is trimmed) and of the shipped configurations: one network
(`sasrec`, `sasrec:item_repr=id+text`) and the default five-network ensemble. The weights come
from one epoch on random sequences: the cost of a query depends on shapes, not on what was
learned. On one torch thread (as the service runs), interleaved, median per query: the
network alone (training forward pass, the query path ``_Net.last``, an ensemble's members in
one stacked pass) and ``SASRec.user_vectors`` as the service calls it, on the torch path and
through the model's ONNX graph (``attach_query_graph``, what ``tansuo serve`` uses).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from _docs import write_block

from tansuo.evaluation.protocols import interactions_from_events
from tansuo.models.base import TrainData
from tansuo.models.sasrec import SASRec, SASRecConfig, _Stacked

SPECS = [("sasrec", {}), ("sasrec:item_repr=id+text", {"item_repr": "id+text"}),
         ("sasrec:item_repr=id+text:members=5 (default)", {"item_repr": "id+text", "members": 5})]


def _data(rng: np.random.Generator, n_items: int = 3000, users: int = 300) -> TrainData:
    rows = [(f"u{u}", f"i{int(i)}", "view", 1_600_000_000_000 + t * 60_000)
            for u in range(users) for t, i in enumerate(rng.integers(0, n_items, size=60))]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "type", "timestamp"])
    inter = interactions_from_events(frame)
    text = rng.normal(size=(len(inter.items), 384)).astype(np.float32)
    return TrainData(inter, item_text=text)


def _timed(fn: Callable[[], object], reps: list[float]) -> None:
    t = time.perf_counter()
    fn()
    reps.append(time.perf_counter() - t)


def _steps(model: SASRec, nets: list, stacked: _Stacked | None, arrays: list[torch.Tensor],
           h: np.ndarray, graph: object) -> dict[str, Callable[[], object]]:
    def query(with_graph: bool) -> object:
        model._graph = graph if with_graph else None  # type: ignore[assignment]
        return model.user_vectors(np.array([-1]), [h])

    steps: dict[str, Callable[[], object]] = {
        "full": lambda: [n(*arrays)[:, -1] for n in nets],
        "last": lambda: [n.last(*arrays) for n in nets],
        "total": lambda: query(False), "onnx": lambda: query(True)}
    if stacked is not None:
        steps["stacked"] = lambda: stacked.last(*arrays)
    return steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=600)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    data = _data(rng)
    lines = []
    for name, over in SPECS:
        model = SASRec(SASRecConfig(epochs=1, threads=1, **over)).fit(data)
        for m in model.members or [model]:
            m._serving()
        queries = [rng.integers(0, data.n_items, size=60) for _ in range(args.queries)]
        nets = [m.net for m in model.members or [model]]
        first = (model.members or [model])[0]
        stacked: _Stacked | None = None
        if model.members:  # the ensemble's own snapshot, as its queries use it
            model.user_vectors(np.array([-1]), queries[:1])
            assert model._joint is not None
            stacked = model._joint[1]
        model.attach_query_graph()
        graph = model._graph
        times: dict[str, list[float]] = {"full": [], "last": [], "stacked": [], "total": [],
                                         "onnx": []}
        with torch.inference_mode():
            for i, h in enumerate(queries):
                arrays = [torch.as_tensor(a) for a in first._inputs([h], None)]
                warm = i < 30
                steps = _steps(model, nets, stacked, arrays, h, graph)
                for key, fn in steps.items():
                    _timed(fn, [] if warm else times[key])
        med = {k: np.median(v) * 1e3 if v else float("nan") for k, v in times.items()}
        stacked_cell = f"{med['stacked']:.2f} ms" if model.members else "—"
        lines.append(f"| `{name}` | {med['full']:.2f} ms | {med['last']:.2f} ms | "
                     f"{stacked_cell} | {med['total']:.2f} ms | {med['onnx']:.2f} ms |")
        print(lines[-1])
    text = "\n".join([
        "```", ".venv/bin/python benchmarks/bench_query.py", "```", "",
        f"One-shopper query, median of {args.queries} interleaved runs (history of 60 "
        "interactions, 3,000 items, one torch thread). Network only (inputs prepared "
        "beforehand): the training forward pass `forward(...)[:, -1]` member by member; the "
        "query path `_Net.last` member by member; an ensemble's members in one stacked pass "
        "(`_Stacked.last`). Last columns: `SASRec.user_vectors` as the service calls it "
        "(input preparation included), on the torch path and through the model's ONNX graph "
        "(ONNX Runtime, one thread; what `tansuo serve` uses).", "",
        "| model | full pass | last position | stacked members | user_vectors (torch) | "
        "user_vectors (ONNX graph) |",
        "|---|---|---|---|---|---|", *lines, "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread, "
        f"Python {platform.python_version()}."])
    if not args.no_write:
        write_block("bench_query", "Model query cost (issue 7)", text)


if __name__ == "__main__":
    main()
