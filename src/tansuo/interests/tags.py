"""Interest tags in words: a tag vocabulary and zero-shot matching of interest centroids.

The default vocabulary is built from the catalogue itself — every node of the category tree
(its last segment, e.g. ``Running`` from ``Sports > Running``) and the frequent words and word
pairs of item titles and search queries — so tags read like the shop's own language. Users can
supply their own list instead (or in addition). Every tag is embedded with the same text
encoder as the items, so an interest's centroid in text space is compared with every tag by
cosine similarity; the confidence of a tag is a softmax over the vocabulary at a stated
temperature (the probability mass the centroid puts on that tag).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from tansuo.data.schema import split_category

__all__ = ["Tag", "TagVocabulary", "category_tags", "frequent_phrases"]

#: Function words never used as a tag on their own.
_STOPWORDS_TEXT = ("a an and are as at be by for from has in is it its of on or the to "
                   "with without your you our we this that these those "
                   "new set pack pcs x vs de la le el about just how what when who why all "
                   "one two my me not no up out into over after before under more most some "
                   "can will do get go his her him she he they them their there here part")
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
_WORD = re.compile(r"[^\W\d_][\w'&-]*", re.UNICODE)


@dataclass(frozen=True)
class Tag:
    text: str
    confidence: float
    source: str
    """"category" (from the category tree) or "text" (zero-shot match of the centroid)."""

    def to_dict(self) -> dict[str, object]:
        return {"tag": self.text, "confidence": round(self.confidence, 4), "source": self.source}


def category_tags(categories: Iterable[object], max_share: float = 0.5) -> list[str]:
    """Every node of the category tree, named by its last segment (deduplicated, sorted),
    except nodes above more than ``max_share`` of the items (a root like "Movies")."""
    counts: Counter[str] = Counter()
    n = 0
    for c in categories:
        n += 1
        counts.update(set(split_category(c if isinstance(c, str) else None)))
    return sorted(seg for seg, k in counts.items() if n == 1 or k <= max_share * n)


def frequent_phrases(texts: Iterable[object], min_count: int = 5, top: int = 300,
                     max_share: float = 0.2) -> list[str]:
    """The ``top`` most frequent words and word pairs (no stopwords at either end) appearing
    in at least ``min_count`` texts and in at most ``max_share`` of them (a word every item
    carries, like "movie" in a film shop, names no interest)."""
    counts: Counter[str] = Counter()
    n = 0
    for t in texts:
        if not isinstance(t, str) or not t:
            continue
        n += 1
        words = [w.lower() for w in _WORD.findall(t)]
        grams = {w for w in words if len(w) > 2 and w not in STOPWORDS}
        grams |= {f"{a} {b}" for a, b in zip(words, words[1:], strict=False)
                  if a not in STOPWORDS and b not in STOPWORDS and len(a) > 1 and len(b) > 1}
        counts.update(grams)
    cap = max(max_share * n, min_count)
    return [g for g, k in counts.most_common() if min_count <= k <= cap][:top]


class TagVocabulary:
    """Tags and their unit-length embeddings; ``match`` scores centroids against them."""

    def __init__(self, tags: Sequence[str], vectors: np.ndarray,
                 temperature: float = 0.05) -> None:
        if len(tags) != len(vectors):
            raise ValueError(f"{len(tags)} tags but {len(vectors)} vectors")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.tags = list(tags)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True) if len(vectors) else None
        self.vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32) \
            if norms is not None else np.zeros((0, 0), dtype=np.float32)
        self.temperature = temperature

    def __len__(self) -> int:
        return len(self.tags)

    @classmethod
    def build(cls, encoder_fn: object, *, categories: Iterable[object] = (),
              titles: Iterable[object] = (), queries: Iterable[object] = (),
              extra: Sequence[str] = (), include_defaults: bool = True,
              temperature: float = 0.05) -> TagVocabulary:
        """Vocabulary from the catalogue (and ``extra`` user tags), embedded by
        ``encoder_fn(list[str]) -> array``."""
        tags: list[str] = []
        if include_defaults:
            tags += category_tags(categories)
            tags += frequent_phrases([*titles, *queries])
        tags += [t.strip() for t in extra if t and t.strip()]
        seen: set[str] = set()
        unique = [t for t in tags if not (t.lower() in seen or seen.add(t.lower()))]
        if not unique:
            raise ValueError("empty tag vocabulary: the catalogue has no categories or titles "
                             "and no tags were supplied")
        vectors = np.asarray(encoder_fn(unique), dtype=np.float32)  # type: ignore[operator]
        return cls(unique, vectors, temperature)

    def match(self, centroids: np.ndarray, top: int = 3,
              background: np.ndarray | None = None) -> list[list[Tag]]:
        """Best ``top`` tags per centroid with softmax confidences (zero centroid → none).

        With a ``background`` (the mean of all items), a tag's score is its similarity to the
        centroid minus its similarity to the background: what sets the interest apart, not what
        every item shares (no "movie" for every interest of a film shop)."""
        if len(self) == 0:
            return [[] for _ in range(len(centroids))]
        c = np.asarray(centroids, dtype=np.float32)
        norms = np.linalg.norm(c, axis=1, keepdims=True)
        sims = (c / np.maximum(norms, 1e-12)) @ self.vectors.T
        if background is not None and np.linalg.norm(background) > 0:
            b = np.asarray(background, dtype=np.float32).ravel()
            sims = sims - (b / np.linalg.norm(b)) @ self.vectors.T
        logits = sims / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        out: list[list[Tag]] = []
        for row in range(len(c)):
            if norms[row, 0] < 1e-9:
                out.append([])
                continue
            best = np.argsort(-probs[row], kind="stable")[:top]
            out.append([Tag(self.tags[j], float(probs[row, j]), "text") for j in best])
        return out
