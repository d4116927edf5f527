"""A SASRec one-shopper query as an ONNX graph, run by ONNX Runtime (the service's hot path).

Why: a query is a 2-block transformer over at most ``max_len`` events. In torch much of its
cost on a 2-core box is per-operation dispatch, not arithmetic; ONNX Runtime runs the same
graph (exported with ``torch.onnx.export``, fused by its optimiser) with far less of it
(benchmarks/bench_query.py: 0.6 against 1.1 ms per query of one network, input preparation
included).

The graph is the query path of :func:`tansuo.models.sasrec._last` for one unpadded history
(what a request asks: one shopper, the padding columns dropped), for a single network or an
ensemble's stacked pass; any other query keeps the torch path. It is bound to the weights it
was exported from: :class:`~tansuo.models.sasrec.SASRec` uses it only while they are
unchanged. ``torch.onnx.export`` needs ``onnx`` and ``onnxscript``; running needs
``onnxruntime``. Exporting takes a few seconds, so the service keeps the graph next to the
model (``query.onnx``) for its other workers and restarts.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["QueryGraph"]

_INPUTS = ("tokens", "types", "gap_prev", "gap_next")


class QueryGraph:
    """An ONNX Runtime session of one model's query graph."""

    def __init__(self, data: bytes, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, arrays: tuple[np.ndarray, ...]) -> np.ndarray:
        """The query's vector (1 × width) from its unpadded inputs (1 × length each)."""
        return self.session.run(None, dict(zip(self.names, arrays, strict=True)))[0]

    @staticmethod
    def export(p: Any, table: Any, max_len: int, stacked: bool) -> bytes:
        """The ONNX graph of the query path of ``p`` (a ``_Net``, or a ``_Stacked`` with
        ``stacked``), reading item rows from ``table`` (None: ``p.items``)."""
        import torch

        from tansuo.models.sasrec import _embed, _head

        class Query(torch.nn.Module):
            def forward(self, tokens: Any, types: Any, gap_prev: Any, gap_next: Any) -> Any:
                x, _ = _embed(p, tokens, types, gap_prev, gap_next, False, table)
                out = _head(p, x, None)
                return out.transpose(0, 1).flatten(1) if stacked else out

        example = tuple(torch.ones((1, max_len), dtype=torch.int64) for _ in _INPUTS)
        example[0][0, 0] = 1  # the begin token, then items
        example[0][0, 1:] = 2
        seq = torch.export.Dim("seq", min=1, max=max_len)
        quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript")]
        levels = [q.level for q in quiet]
        try:
            for q in quiet:
                q.setLevel(logging.ERROR)
            with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(Query().eval(), example, dynamo=True, optimize=True,
                                            verbose=False,
                                            input_names=list(_INPUTS),
                                            dynamic_shapes=({1: seq},) * len(_INPUTS))
        finally:
            for q, level in zip(quiet, levels, strict=True):
                q.setLevel(level)
        return program.model_proto.SerializeToString()

    @classmethod
    def cached(cls, path: Path, make: Any, threads: int = 1) -> QueryGraph:
        """The graph saved at ``path``, or ``make()``'s, saved there for next time (written
        whole, then renamed: another process never reads half a file; an unwritable
        directory only costs the next process the export)."""
        if path.exists():
            return cls(path.read_bytes(), threads)
        data = make()
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        try:
            tmp.write_bytes(data)
            tmp.replace(path)
        except OSError:
            tmp.unlink(missing_ok=True)
        return cls(data, threads)
