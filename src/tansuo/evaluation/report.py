"""Evaluation inputs (a bundled dataset or the store) and outputs (table, JSON, HTML + plots)."""

from __future__ import annotations

import base64
import html
import io
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tansuo.data.dataset import Vocabulary
from tansuo.data.schema import split_category
from tansuo.data.store import EventStore, open_store
from tansuo.evaluation.protocols import Interactions, interactions_from_events
from tansuo.evaluation.runner import EvalReport

__all__ = ["load_events", "load_peers", "item_features", "write_html", "write_json"]


def load_events(dataset: str | None, store: EventStore | None, home: Path,
                columns: Sequence[str] = ("user_id", "item_id", "type", "timestamp")
                ) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(events ordered by user/time/ingestion, items, dataset label); ``columns`` of the
    event schema to read (MovieLens has only its own columns)."""
    if dataset is None:
        if store is None:
            raise ValueError("evaluate needs --dataset or a store")
        events = store.events(list(columns))
        erased = set(json.loads(store.get_meta("erased_users") or "[]"))
        if erased:  # users erased through the service never train a model again
            events = events[~events["user_id"].isin(erased)].reset_index(drop=True)
        return events, store.items(), str(store.get_meta("dataset") or "store")
    if dataset == "movielens-small":
        from tansuo.data.bundled import movielens_frames

        events, items = movielens_frames()
        order = np.lexsort((np.arange(len(events)), events["timestamp"].to_numpy(),
                            events["user_id"].to_numpy(dtype=str)))
        return events.iloc[order].reset_index(drop=True), items, dataset
    if dataset == "synthetic-shop":
        from tansuo.data.bundled import load_dataset

        with tempfile.TemporaryDirectory() as tmp:  # noqa: SIM117 - the path feeds the next
            with open_store(f"sqlite:///{Path(tmp) / 'eval.db'}") as tmp_store:
                load_dataset("synthetic-shop", tmp_store, home, progress=False)
                return (tmp_store.events(list(columns)),
                        tmp_store.items(), dataset)
    raise ValueError(f"cannot evaluate on dataset {dataset!r}; expected movielens-small or "
                     "synthetic-shop (or none: the store)")


def build_interactions(events: pd.DataFrame, items: pd.DataFrame) -> Interactions:
    ids = set(events["item_id"].dropna()) | set(items["item_id"]) if len(items) else None
    vocab = Vocabulary.from_ids(ids) if ids is not None else None
    return interactions_from_events(events, vocab)


def item_features(inter: Interactions, items: pd.DataFrame, train: Interactions,
                  dims: int = 64) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Category code per item (the full category path; -1 unknown) and item vectors for
    embedding diversity: a truncated SVD of the training matrix (collaborative space)."""
    category = None
    if len(items) and items["category"].notna().any():
        cats = items.set_index("item_id")["category"].map(
            lambda c: " > ".join(split_category(c)) if isinstance(c, str) else None)
        aligned = cats.reindex(inter.items.ids)
        codes, _ = pd.factorize(aligned)
        category = codes.astype(np.int64)
    m = sp.csr_matrix((np.ones(len(train), np.float32), (train.user, train.item)),
                      shape=(len(inter.users), len(inter.items)))
    k = min(dims, min(m.shape) - 1)
    vectors = None
    if k >= 2 and m.nnz:
        from scipy.sparse.linalg import svds

        _, s, vt = svds(m, k=k, random_state=0)
        vectors = (vt.T * s).astype(np.float32)
    return category, vectors


def load_peers(directory: Path, dataset: str) -> dict[str, dict[str, Any]]:
    """Peer results written by ``benchmarks/peers/run_peers.py``: every ``*.json`` in
    ``directory`` with a ``name`` and ``test`` metrics (others, such as cross-checks, are
    skipped). A peer whose ``protocol`` does not name ``dataset`` is an error: its numbers
    would sit next to ours on a different split."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError("not a directory")
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path.name} is not JSON ({exc})") from exc
        if not isinstance(doc, dict) or "name" not in doc or "test" not in doc:
            continue
        if dataset not in str(doc.get("protocol", "")):
            raise ValueError(f"{path.name} was not run on {dataset} (its protocol: "
                             f"{doc.get('protocol')!r})")
        out[str(doc["name"])] = {
            "library": doc.get("library"), "model": doc.get("model"),
            "metrics": doc["test"], "ci": doc.get("ci") or {},
            "train_seconds": doc.get("train_seconds"), "protocol": doc.get("protocol"),
            "note": doc.get("evaluation"),
            "stopped_by_time_budget": doc.get("stopped_by_time_budget")}
    if not out:
        raise ValueError("no peer result files (*.json with name and test metrics)")
    return out


def write_json(report: EvalReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _plots(report: EvalReport) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report.models)
    out: list[tuple[str, str]] = []
    k = min(report.config.ks)
    for metric in (f"ndcg@{k}", f"hr@{k}", f"mrr@{k}"):
        fig, ax = plt.subplots(figsize=(6.5, 3.2))
        means = [report.models[n].metrics[metric] for n in names]
        lo = [means[i] - report.models[n].ci[metric][0] for i, n in enumerate(names)]
        hi = [report.models[n].ci[metric][1] - means[i] for i, n in enumerate(names)]
        ax.bar(names, means, yerr=[lo, hi], capsize=4, color="#4C78A8")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} with 95% bootstrap CI")
        out.append((f"{metric} by model", _png(fig)))
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    segs = list(next(iter(report.models.values())).segments)
    width = 0.8 / max(len(names), 1)
    for i, n in enumerate(names):
        vals = [report.models[n].segments[s].get(f"ndcg@{k}") or 0.0 for s in segs]
        ax.bar(np.arange(len(segs)) + i * width, vals, width, label=n)
    ax.set_xticks(np.arange(len(segs)) + width * (len(names) - 1) / 2)
    ax.set_xticklabels([f"{s}\n{report.models[names[0]].segments[s]['users']} users"
                        for s in segs])
    ax.set_ylabel(f"ndcg@{k}")
    ax.set_title("by user activity (training interactions)")
    ax.legend(fontsize=8)
    out.append(("per-segment", _png(fig)))
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    for n in names:
        exposure = report.models[n].exposure
        if exposure is None or exposure.sum() == 0:
            continue
        share = np.sort(exposure)[::-1].cumsum() / exposure.sum()
        ax.plot(np.arange(1, len(share) + 1) / len(share), share, label=n)
    ax.plot([0, 1], [0, 1], ":", color="grey", label="even exposure")
    ax.set_xlabel("share of catalogue (most exposed first)")
    ax.set_ylabel(f"share of top-{k} slots")
    ax.set_title("popularity bias: concentration of exposure")
    ax.legend(fontsize=8)
    out.append(("popularity-bias curve", _png(fig)))
    return out


def write_html(report: EvalReport, path: Path) -> None:
    """A self-contained HTML report (plots embedded as PNG)."""
    d = report.to_dict()
    rows = []
    metric_names = list(next(iter(report.models.values())).metrics) if report.models else []
    for name, r in report.models.items():
        cells = "".join(
            f"<td>{r.metrics[m]:.4f}<br><small>[{r.ci[m][0]:.4f}, {r.ci[m][1]:.4f}]</small></td>"
            for m in metric_names)
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}<td>{r.train_seconds:.2f}</td>"
                    f"<td>{r.score_seconds:.2f}</td><td>{r.peak_rss_mb:.0f}</td></tr>")
    beyond_rows = []
    beyond_names = list(next(iter(report.models.values())).beyond) if report.models else []
    for name, r in report.models.items():
        cells = "".join(f"<td>{r.beyond[m]:.4f}</td>" for m in beyond_names)
        beyond_rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    figures = "".join(f"<figure><img alt='{html.escape(t)}' src='data:image/png;base64,{b}'>"
                      f"<figcaption>{html.escape(t)}</figcaption></figure>"
                      for t, b in _plots(report))
    paired = "".join(f"<li>{html.escape(k)}: Δ{v['metric']} = {v['mean_difference']:.4f} "
                      f"[{v['ci'][0]:.4f}, {v['ci'][1]:.4f}], p = {v['p_value']:.3g}</li>"
                      for k, v in report.paired.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>Tansuo evaluation — {html.escape(report.dataset)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;
text-align:right}}small{{color:#666}}figure{{display:inline-block;margin:1em}}</style></head>
<body><h1>Tansuo evaluation: {html.escape(report.dataset)} ({html.escape(report.protocol)})</h1>
<p>Full ranking over the whole catalogue; history items {'excluded' if report.config.exclude_seen
else 'included'}; 95% bootstrap CIs over users ({report.config.n_boot} resamples).
Split: {html.escape(json.dumps(d['split']))}</p>
<h2>Accuracy</h2><table><tr><th>model</th>{''.join(f'<th>{m}</th>' for m in metric_names)}
<th>train s</th><th>score s</th><th>peak RSS MB</th></tr>{''.join(rows)}</table>
<h2>Beyond accuracy</h2><table><tr><th>model</th>
{''.join(f'<th>{m}</th>' for m in beyond_names)}</tr>{''.join(beyond_rows)}</table>
<h2>Paired tests (same users)</h2><ul>{paired}</ul>
<h2>Plots</h2>{figures}</body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)


def item_text_matrix(items_vocab: Vocabulary, items: pd.DataFrame, home: Path,
                     model: str | None = None) -> np.ndarray:
    """Text embeddings aligned with a vocabulary (zero rows for items without text), through
    the data directory's cache so only new or changed texts are encoded."""
    from tansuo.text.encoder import EmbeddingCache, cache_path, encode_items, open_encoder

    encoder = open_encoder(model)
    with EmbeddingCache(cache_path(home)) as cache:
        ids, vectors, _ = encode_items(items, encoder, cache)
    out = np.zeros((len(items_vocab), vectors.shape[1]), dtype=np.float32)
    rows = np.asarray(items_vocab.index(ids.tolist()))
    out[rows[rows >= 0]] = vectors[rows >= 0]
    return out
