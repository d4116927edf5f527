"""The interest space: the catalogue partitioned into interest units, each named in words.

Items live in one representation space: their text embedding (title, category path, brand,
description) joined with the trained model's item vector when one is given (each part
L2-normalised, the model part weighted by ``model_weight``). Interest units are k-means
clusters of that space:

- when the catalogue has a category tree, the clustering starts from the nodes of one level of
  the tree (the deepest level with at most ``max_units`` nodes, or ``category_level``) — the
  shop's own taxonomy is the prior, the representation space the evidence — and each unit is
  named after the category most of its items carry;
- without categories, k-means++ runs for several unit counts in ``units_range`` and keeps the
  count with the best silhouette (cosine, on a seeded sample of at most 5,000 items).

Each unit gets zero-shot text tags (:mod:`tansuo.interests.tags`). A user's interests are the
units of the items they engaged with (:mod:`tansuo.interests.profile`); fixing the units for
the whole shop is what makes timelines, shifts, trends and segments comparable across time and
users. Items added later are placed in the nearest unit from their text alone.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from tansuo.data.schema import split_category
from tansuo.interests.tags import Tag, TagVocabulary

__all__ = ["SpaceConfig", "InterestSpace", "build_space", "combine_vectors"]


@dataclass(frozen=True)
class SpaceConfig:
    units: int | None = None
    """Fixed number of interest units (None: from the category tree, or by silhouette)."""
    units_range: tuple[int, int] = (4, 64)
    """Smallest and largest number of units considered."""
    category_level: int | None = None
    """Category-tree level seeding the units (1 = top; None: deepest level within range)."""
    use_categories: bool = True
    """Seed the units from the category tree when the catalogue has one."""
    model_weight: float = 0.5
    """Weight of the model's item vectors against the text vectors (0 = text only)."""
    iterations: int = 5
    """k-means iterations after seeding from the category tree."""
    seed: int = 0

    def __post_init__(self) -> None:
        lo, hi = self.units_range
        if not 1 <= lo <= hi:
            raise ValueError(f"units_range must be (min, max) with 1 ≤ min ≤ max, got "
                             f"{self.units_range}")
        if self.units is not None and self.units < 1:
            raise ValueError(f"units must be ≥ 1, got {self.units}")
        if self.category_level is not None and self.category_level < 1:
            raise ValueError(f"category_level must be ≥ 1, got {self.category_level}")
        if self.model_weight < 0:
            raise ValueError(f"model_weight must be ≥ 0, got {self.model_weight}")


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def combine_vectors(text: np.ndarray, model: np.ndarray | None, model_weight: float
                    ) -> np.ndarray:
    """Unit-length [text ⊕ √w·model] rows (rows without any signal stay zero)."""
    parts = [_unit(text) * (np.linalg.norm(text, axis=1, keepdims=True) > 0)]
    if model is not None and model_weight > 0:
        m = np.asarray(model, dtype=np.float32)
        parts.append(_unit(m) * (np.linalg.norm(m, axis=1, keepdims=True) > 0)
                     * np.float32(np.sqrt(model_weight)))
    joined = np.hstack(parts)
    norms = np.linalg.norm(joined, axis=1, keepdims=True)
    return np.where(norms > 0, joined / np.maximum(norms, 1e-12), 0).astype(np.float32)


def _prefix(category: object, level: int) -> str | None:
    parts = split_category(category if isinstance(category, str) else None)
    return " > ".join(parts[:level]) if len(parts) >= level else None


class InterestSpace:
    """Items → interest units, with each unit's centroid, name and tags."""

    def __init__(self, item_ids: Sequence[str], vectors: np.ndarray, text_vectors: np.ndarray,
                 categories: Sequence[object], unit_of: np.ndarray, names: Sequence[str],
                 tags: Sequence[Sequence[Tag]], config: SpaceConfig,
                 method: str = "") -> None:
        self.item_ids = [str(i) for i in item_ids]
        self._row = {i: r for r, i in enumerate(self.item_ids)}
        self.vectors = np.asarray(vectors, dtype=np.float32)
        self.text_vectors = np.asarray(text_vectors, dtype=np.float32)
        self.categories = list(categories)
        self.unit_of = np.asarray(unit_of, dtype=np.int64)
        self.names = list(names)
        self.tags = [list(t) for t in tags]
        self.config = config
        self.method = method
        self.centroids = self._centroids(self.vectors)
        self.text_centroids = self._centroids(self.text_vectors)
        #: mean text vector of the catalogue: what every item shares (see TagVocabulary.match)
        self.background = self.text_vectors.mean(axis=0) if len(self.text_vectors) else None

    def _centroids(self, vectors: np.ndarray) -> np.ndarray:
        out = np.zeros((self.n_units, vectors.shape[1]), dtype=np.float32)
        ok = self.unit_of >= 0
        np.add.at(out, self.unit_of[ok], vectors[ok])
        return _unit(out) * (np.abs(out).sum(axis=1, keepdims=True) > 0)

    @property
    def n_units(self) -> int:
        return len(self.names)

    def row(self, item_id: object) -> int:
        """Row of one item id (-1 for an unknown or missing id): ``rows`` for one event."""
        return self._row.get(item_id, -1) if isinstance(item_id, str) else -1

    def rows(self, item_ids: Sequence[object]) -> np.ndarray:
        """Row of each item id in the space (-1 for unknown or missing ids)."""
        return np.array([self._row.get(str(i), -1) if isinstance(i, str) else -1
                         for i in item_ids], dtype=np.int64)

    def units(self, item_ids: Sequence[object]) -> np.ndarray:
        """Interest unit of each item id (-1: unknown item, or an item without any vector)."""
        r = self.rows(item_ids)
        return np.where(r >= 0, self.unit_of[np.maximum(r, 0)], -1)

    def add_items(self, item_ids: Sequence[str], text_vectors: np.ndarray,
                  categories: Sequence[object] | None = None) -> np.ndarray:
        """Place new (or changed) items in the nearest unit by their text; returns units."""
        tv = _unit(text_vectors)
        sims = tv @ self.text_centroids.T
        units = np.where(np.abs(tv).sum(axis=1) > 0, sims.argmax(axis=1), -1)
        vec = combine_vectors(tv, None, 0.0)
        if vec.shape[1] != self.vectors.shape[1]:  # model part unknown for new items: zeros
            vec = np.hstack([vec, np.zeros((len(vec), self.vectors.shape[1] - vec.shape[1]),
                                           dtype=np.float32)])
        cats = list(categories) if categories is not None else [None] * len(item_ids)
        for i, item in enumerate(item_ids):
            row = self._row.get(str(item))
            if row is None:
                row = len(self.item_ids)
                self._row[str(item)] = row
                self.item_ids.append(str(item))
                self.vectors = np.vstack([self.vectors, vec[i:i + 1]])
                self.text_vectors = np.vstack([self.text_vectors, tv[i:i + 1]])
                self.categories.append(cats[i])
                self.unit_of = np.append(self.unit_of, units[i])
            else:
                self.vectors[row], self.text_vectors[row] = vec[i], tv[i]
                self.categories[row], self.unit_of[row] = cats[i], units[i]
        return units

    def describe(self) -> list[dict[str, Any]]:
        sizes = np.bincount(self.unit_of[self.unit_of >= 0], minlength=self.n_units)
        return [{"unit": u, "name": self.names[u], "items": int(sizes[u]),
                 "tags": [t.to_dict() for t in self.tags[u]]} for u in range(self.n_units)]

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path / "space.npz", vectors=self.vectors,
                            text_vectors=self.text_vectors, unit_of=self.unit_of)
        meta = {"item_ids": self.item_ids, "categories": [c if isinstance(c, str) else None
                                                          for c in self.categories],
                "names": self.names, "tags": [[t.to_dict() for t in ts] for ts in self.tags],
                "config": asdict(self.config), "method": self.method}
        (path / "space.json").write_text(json.dumps(meta))
        return path

    @classmethod
    def load(cls, path: str | Path) -> InterestSpace:
        path = Path(path)
        meta = json.loads((path / "space.json").read_text())
        arrays = np.load(path / "space.npz")
        cfg = meta["config"]
        cfg["units_range"] = tuple(cfg["units_range"])
        tags = [[Tag(t["tag"], t["confidence"], t["source"]) for t in ts] for ts in meta["tags"]]
        return cls(meta["item_ids"], arrays["vectors"], arrays["text_vectors"],
                   meta["categories"], arrays["unit_of"], meta["names"], tags,
                   SpaceConfig(**cfg), meta["method"])


def _category_level(categories: Sequence[object], cfg: SpaceConfig) -> int | None:
    depth = max((len(split_category(c if isinstance(c, str) else None)) for c in categories),
                default=0)
    if cfg.category_level is not None:
        return cfg.category_level if cfg.category_level <= depth else None
    lo, hi = cfg.units_range
    best = None
    for level in range(1, depth + 1):
        n = len({p for c in categories if (p := _prefix(c, level)) is not None})
        if n > hi:
            break
        if n >= lo:
            best = level
    return best


def build_space(item_ids: Sequence[str], text_vectors: np.ndarray,
                categories: Sequence[object] | None = None, model_vectors: np.ndarray | None
                = None, vocabulary: TagVocabulary | None = None,
                config: SpaceConfig | None = None) -> InterestSpace:
    """Cluster the catalogue into interest units (see the module docstring for the rule)."""
    cfg = config or SpaceConfig()
    cats: list[object] = list(categories) if categories is not None else [None] * len(item_ids)
    if len(cats) != len(item_ids) or len(text_vectors) != len(item_ids):
        raise ValueError(f"item_ids ({len(item_ids)}), text_vectors ({len(text_vectors)}) and "
                         f"categories ({len(cats)}) must have the same length")
    vectors = combine_vectors(text_vectors, model_vectors, cfg.model_weight)
    have = np.flatnonzero(np.abs(vectors).sum(axis=1) > 0)
    if len(have) == 0:
        raise ValueError("no item has text or a model vector: nothing to cluster")
    X = vectors[have]
    level = _category_level(cats, cfg) if cfg.units is None and cfg.use_categories else None
    method: str
    if level is not None:
        prefixes = [_prefix(cats[i], level) for i in have]
        nodes = sorted({p for p in prefixes if p is not None})
        seeds = np.stack([_unit(X[[j for j, p in enumerate(prefixes) if p == n]].mean(axis=0))
                          for n in nodes])
        km = KMeans(len(nodes), init=seeds, n_init=1, max_iter=max(cfg.iterations, 1),
                    random_state=cfg.seed).fit(X)
        labels, method = km.labels_, f"category level {level} seeds + k-means"
    else:
        labels, k = _silhouette_kmeans(X, cfg, min(cfg.units_range[1], len(have)))
        method = (f"k-means, {k} units fixed" if cfg.units is not None else
                  f"k-means, {k} units by silhouette in {cfg.units_range}")
    unit_of = np.full(len(item_ids), -1, dtype=np.int64)
    unit_of[have] = labels
    # drop empty units and renumber densely
    used = np.unique(labels)
    remap = np.full(labels.max() + 1, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    unit_of[have] = remap[labels]
    names = _unit_names(unit_of, cats, level, len(used))
    space = InterestSpace(item_ids, vectors, text_vectors, cats, unit_of, names,
                          [[] for _ in range(len(used))], cfg, method)
    if vocabulary is not None and len(vocabulary):
        space.tags = vocabulary.match(space.text_centroids, background=space.background)
    return space


def _silhouette_kmeans(X: np.ndarray, cfg: SpaceConfig, cap: int) -> tuple[np.ndarray, int]:
    if cfg.units is not None:
        k = min(cfg.units, len(X))
        return KMeans(k, n_init=3, random_state=cfg.seed).fit(X).labels_, k
    lo = min(cfg.units_range[0], cap)
    candidates = sorted({int(round(x)) for x in np.geomspace(max(lo, 2), max(cap, 2), 8)
                         if 2 <= round(x) < len(X)}) or [1]
    rng = np.random.default_rng(cfg.seed)
    sample = rng.choice(len(X), min(len(X), 5000), replace=False)
    best: tuple[float, np.ndarray, int] | None = None
    for k in candidates:
        labels = KMeans(k, n_init=3, random_state=cfg.seed).fit(X).labels_
        score = (silhouette_score(X[sample], labels[sample], metric="cosine")
                 if k > 1 and len(np.unique(labels[sample])) > 1 else -1.0)
        if best is None or score > best[0]:
            best = (float(score), labels, k)
    assert best is not None
    return best[1], best[2]


def _unit_names(unit_of: np.ndarray, cats: Sequence[object], level: int | None, n: int
                ) -> list[str]:
    """Each unit's majority category (at the seeding level, else level 2 or 1), unique: units
    are named largest first, and a unit whose majority name is taken gets its most common
    free category, else the name with a number."""
    lv = level or 2
    counts = []
    for u in range(n):
        members = np.flatnonzero(unit_of == u)
        counts.append(Counter(p for i in members
                              if (p := _prefix(cats[i], lv) or _prefix(cats[i], 1))))
    names: list[str | None] = [None] * n
    taken: set[str] = set()
    for u in sorted(range(n), key=lambda u: -sum(counts[u].values())):
        free = [c for c, _ in counts[u].most_common() if c not in taken]
        if free:
            name = free[0]
        else:
            base = counts[u].most_common(1)[0][0] if counts[u] else "interest"
            name = next(f"{base} ({k})" for k in range(2, n + 2) if f"{base} ({k})" not in taken)
        taken.add(name)
        names[u] = name
    return [str(x) for x in names]
