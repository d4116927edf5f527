"""From events and a catalogue to a filled :class:`InterestTracker`, in one call.

Item text is encoded through the data directory's embedding cache (only new or changed items
are encoded); the tag vocabulary is built from the catalogue's categories, titles and the
users' search queries (plus any tags given); the interest space joins the text with a trained
model's item vectors when a model that has them is passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tansuo.interests.profile import InterestTracker, ProfileConfig
from tansuo.interests.space import SpaceConfig, build_space
from tansuo.interests.tags import TagVocabulary

__all__ = ["build_tracker", "model_item_vectors"]


def model_item_vectors(model: object, item_ids: Sequence[str], model_items: Sequence[str]
                       ) -> np.ndarray | None:
    """The model's item vectors aligned with ``item_ids`` (zeros where the model has none);
    None when the model has no item vectors (e.g. popularity, item-kNN)."""
    get = getattr(model, "item_vectors", None)
    if get is None:
        return None
    vectors = np.asarray(get() if callable(get) else get, dtype=np.float32)
    row = {str(i): r for r, i in enumerate(model_items)}
    out = np.zeros((len(item_ids), vectors.shape[1]), dtype=np.float32)
    for r, i in enumerate(item_ids):
        j = row.get(str(i))
        if j is not None and j < len(vectors):
            out[r] = vectors[j]
    return out


def build_tracker(events: pd.DataFrame, items: pd.DataFrame, home: Path,
                  text_model: str | None = None, *, model_vectors: np.ndarray | None = None,
                  space_config: SpaceConfig | None = None,
                  profile_config: ProfileConfig | None = None, tags: Sequence[str] = (),
                  default_tags: bool = True, progress: bool | None = None) -> InterestTracker:
    """Encode, cluster, tag and fold every event in (see the module docstring).

    ``model_vectors`` are aligned with ``items`` rows (see :func:`model_item_vectors`).
    """
    from tansuo.text.encoder import (
        EmbeddingCache,
        cache_path,
        encode_items,
        encode_texts,
        open_encoder,
    )

    if items.empty:
        raise ValueError("interests need the item catalogue (titles, categories): import it "
                         "with `tansuo import items`")
    encoder = open_encoder(text_model)
    queries = events["query"].dropna() if "query" in events.columns else []
    with EmbeddingCache(cache_path(home)) as cache:
        ids, text, _ = encode_items(items, encoder, cache, progress)
        try:
            vocabulary: TagVocabulary | None = TagVocabulary.build(
                lambda t: encode_texts(t, encoder, cache, progress)[0],
                categories=items["category"], titles=items["title"], queries=queries,
                extra=tags, include_defaults=default_tags)
        except ValueError:
            vocabulary = None  # a catalogue of bare ids: interests keep their category names
    if vocabulary is None and tags:
        raise ValueError("no tag could be built from the tags given")
    space = build_space(ids.tolist(), text, items["category"].tolist(), model_vectors,
                        vocabulary, space_config)
    tracker = InterestTracker(space, profile_config, vocabulary)
    tracker.update_frame(events, progress)
    return tracker
