"""Interest space, tags, profiles, trends and segments on tiny hand-built data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tansuo.interests.profile import InterestTracker, ProfileConfig, trend_of
from tansuo.interests.segments import population_trends, segment_users
from tansuo.interests.space import InterestSpace, SpaceConfig, build_space, combine_vectors
from tansuo.interests.tags import TagVocabulary, category_tags, frequent_phrases

DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
CATS = ["Sports > Running", "Home > Baking", "Tech > Audio"]


def _catalogue(n_per: int = 10, dim: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids, cats, vecs = [], [], []
    for c, cat in enumerate(CATS):
        for j in range(n_per):
            ids.append(f"{cat.split(' > ')[1][0]}{j}")
            cats.append(f"{cat} > Leaf{j % 2}")
            v = rng.normal(0, 0.15, dim)
            v[c] += 1.0
            vecs.append(v)
    return ids, cats, np.asarray(vecs, dtype=np.float32)


class _FakeEncoder:
    """Words → fixed directions: 'running' → axis 0, 'baking' → 1, 'audio' → 2."""

    AXES = {"running": 0, "baking": 1, "audio": 2}

    def __call__(self, texts):
        out = np.zeros((len(texts), 12), dtype=np.float32)
        for r, t in enumerate(texts):
            for word, axis in self.AXES.items():
                if word in t.lower():
                    out[r, axis] += 1.0
            out[r, 11] += 0.3  # a little shared direction, so every tag has a vector
        return out


def _space(**cfg) -> InterestSpace:
    """Level 3 has 6 nodes, level 2 has 3: a range up to 4 makes level 2 the seeding level."""
    cfg.setdefault("units_range", (2, 4))
    ids, cats, vecs = _catalogue()
    vocab = TagVocabulary.build(_FakeEncoder(), categories=cats, titles=[], extra=["audio gear"])
    return build_space(ids, vecs, cats, vocabulary=vocab, config=SpaceConfig(**cfg))


# -- space ---------------------------------------------------------------------------------------
def test_units_follow_the_category_tree_and_are_named_after_it():
    space = _space()
    assert space.n_units == 3 and sorted(space.names) == sorted(CATS)
    assert space.method.startswith("category level 2")
    for item, unit in zip(space.item_ids, space.unit_of, strict=True):
        assert space.names[unit].split(" > ")[1][0] == item[0]
    running = space.names.index("Sports > Running")
    assert space.tags[running][0].text == "Running" and space.tags[running][0].source == "text"


def test_without_categories_the_unit_count_comes_from_the_silhouette():
    ids, _, vecs = _catalogue(n_per=20)
    space = build_space(ids, vecs, None, config=SpaceConfig(units_range=(2, 8)))
    assert space.n_units == 3 and "silhouette" in space.method
    groups = {frozenset(np.flatnonzero(space.unit_of == u)) for u in range(3)}
    assert groups == {frozenset(range(i * 20, (i + 1) * 20)) for i in range(3)}
    # categories present but not used for seeding: the units still get their names
    ids, cats, vecs = _catalogue(n_per=20)
    named = build_space(ids, vecs, cats, config=SpaceConfig(units_range=(2, 8),
                                                            use_categories=False))
    assert "silhouette" in named.method and sorted(named.names) == sorted(CATS)


def test_new_items_land_in_the_nearest_unit_and_the_space_round_trips(tmp_path):
    space = _space()
    v = np.zeros((1, 12), dtype=np.float32)
    v[0, 2] = 1.0
    (unit,) = space.add_items(["NEW"], v, ["Tech > Audio > Headphones"])
    assert space.names[unit] == "Tech > Audio" and space.units(["NEW", "nope", None])[1] == -1
    loaded = InterestSpace.load(space.save(tmp_path / "space"))
    assert loaded.names == space.names and loaded.item_ids == space.item_ids
    np.testing.assert_array_equal(loaded.unit_of, space.unit_of)
    assert [t.text for t in loaded.tags[0]] == [t.text for t in space.tags[0]]


def test_model_vectors_join_the_text_and_bad_configs_are_refused():
    text = np.array([[1.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    model = np.array([[0.0, 2.0], [0.0, 0.0]], dtype=np.float32)
    joined = combine_vectors(text, model, 1.0)
    np.testing.assert_allclose(joined[0], [2 ** -0.5, 0, 0, 2 ** -0.5], atol=1e-6)
    assert not joined[1].any()
    for bad, message in [({"units_range": (5, 2)}, "units_range"), ({"units": 0}, "units"),
                         ({"model_weight": -1.0}, "model_weight"),
                         ({"category_level": 0}, "category_level")]:
        with pytest.raises(ValueError, match=message):
            SpaceConfig(**bad)
    with pytest.raises(ValueError, match="same length"):
        build_space(["a", "b"], np.ones((1, 2)), None)
    with pytest.raises(ValueError, match="nothing to cluster"):
        build_space(["a"], np.zeros((1, 2)), None)


# -- tags ----------------------------------------------------------------------------------------
def test_tag_vocabulary_from_categories_and_phrases():
    cats = ["Sports > Running > Shoes", "Sports > Yoga", None]
    assert category_tags(cats) == ["Running", "Shoes", "Yoga"]  # "Sports" tops 2 of 3 items
    assert category_tags(cats, max_share=1.0) == ["Running", "Shoes", "Sports", "Yoga"]
    texts = ["Trail running shoes", "trail running jacket", "Road running shoes", "The cake tin"]
    assert set(frequent_phrases(texts, min_count=2, max_share=1.0)) == {
        "running", "trail", "shoes", "trail running", "running shoes"}
    # "running" is in 3 of 4 texts: above a 60% share it names nothing
    assert "running" not in frequent_phrases(texts, min_count=2, max_share=0.6)
    assert "the" not in frequent_phrases(texts, min_count=1, max_share=1.0)
    with pytest.raises(ValueError, match="empty tag vocabulary"):
        TagVocabulary.build(_FakeEncoder(), categories=[], titles=[])


def test_zero_shot_match_confidences():
    vocab = TagVocabulary.build(_FakeEncoder(), categories=[], titles=[],
                                extra=["running", "baking", "audio"], temperature=0.1)
    c = np.zeros((2, 12), dtype=np.float32)
    c[0, 1] = 1.0
    best = vocab.match(c, top=3)
    assert best[0][0].text == "baking" and best[0][0].confidence > 0.9
    assert sum(t.confidence for t in best[0]) == pytest.approx(1.0, abs=1e-5)
    assert best[1] == []  # a zero centroid has no tags
    with pytest.raises(ValueError, match="temperature"):
        TagVocabulary(["a"], np.ones((1, 2)), temperature=0)


# -- profiles ------------------------------------------------------------------------------------
def _tracker(space: InterestSpace | None = None, **cfg) -> InterestTracker:
    return InterestTracker(space or _space(), ProfileConfig(shifts=False, **cfg))


def test_long_term_weights_decay_and_purchases_count_more():
    tr = _tracker(half_life_days=10)
    for d in range(5):  # five old runs, then two recent baking views
        tr.update("u", T0 + d * DAY, f"R{d}", "view")
    tr.update("u", T0 + 60 * DAY, "B1", "view")
    tr.update("u", T0 + 60 * DAY + 1000, "B2", "view")
    names = [i.name for i in tr.interests("u")]
    assert names[0] == "Home > Baking"  # 5 views 56+ days (5.6 half-lives) old weigh ~0.1
    tr2 = _tracker(half_life_days=1000)
    for d in range(3):
        tr2.update("v", T0 + d * DAY, f"R{d}", "view")
    tr2.update("v", T0 + 4 * DAY, "A1", "purchase")  # weight 8 beats 3 views
    top = tr2.interests("v")[0]
    assert top.name == "Tech > Audio" and top.weight == pytest.approx(8 / 11, rel=2e-3)
    assert top.items == ["A1"] and top.events == 1


def test_dislikes_lower_an_interest_and_unknown_items_are_ignored():
    tr = _tracker(half_life_days=1000)
    tr.update("u", T0, "R1", "view")
    tr.update("u", T0 + 1, "B1", "view")
    tr.update("u", T0 + 2, "B2", "view")
    tr.update("u", T0 + 3, "B3", "dislike")
    tr.update("u", T0 + 4, "ZZZ", "purchase")
    tr.update("u", T0 + 5, None, "search", query="running socks")
    weights = {i.name: i.weight for i in tr.interests("u")}
    assert weights == {"Sports > Running": 1.0}  # baking 2 − 5 → floored at 0
    p = tr.profile("u")
    assert p.queries == ["running socks"] and p.stats["events"] == 6
    assert p.stats["by_type"] == {"view": 3, "dislike": 1, "purchase": 1, "search": 1}
    assert p.recent_items[0] == "B3" and "ZZZ" not in p.recent_items
    with pytest.raises(KeyError):
        tr.profile("nobody")
    assert tr.interests("nobody") == []


def test_short_term_view_and_statistics():
    tr = _tracker(short_term_events=3)
    for k, item in enumerate(["R1", "R2", "R3", "A1", "A2", "B1"]):
        tr.update("u", T0 + k * 3_600_000, item, "view", dwell=10.0 * (k + 1))
    tr.update("u", T0 + 7 * 3_600_000, "A3", "purchase", amount=99.5)
    p = tr.profile("u")
    assert [s["name"] for s in p.short_term] == ["Tech > Audio", "Home > Baking"]
    assert p.short_term[0]["share"] == pytest.approx(2 / 3, abs=1e-4)
    assert p.stats["spend"] == 99.5 and p.stats["mean_dwell_seconds"] == 35.0
    assert p.stats["active_days"] == 1 and p.long_term_vector is not None
    assert np.linalg.norm(p.short_term_vector) == pytest.approx(1.0, abs=1e-5)


def test_update_frame_equals_event_by_event_updates():
    rng = np.random.default_rng(1)
    ids, _, _ = _catalogue()
    rows = [{"user_id": f"u{rng.integers(4)}", "item_id": ids[rng.integers(len(ids))],
             "type": rng.choice(["view", "click", "purchase", "dislike"]),
             "timestamp": T0 + int(rng.integers(0, 90 * DAY))} for _ in range(300)]
    frame = pd.DataFrame(rows)
    a, b = _tracker(), _tracker()
    a.update_frame(frame.sample(frac=1.0, random_state=3), progress=False)
    for r in frame.sort_values(["user_id", "timestamp"], kind="stable").itertuples():
        b.update(r.user_id, r.timestamp, r.item_id, r.type)
    for u in b.users:
        assert [(i.name, round(i.weight, 9)) for i in a.interests(u)] == [
            (i.name, round(i.weight, 9)) for i in b.interests(u)]
    with pytest.raises(ValueError, match="timestamp"):
        a.update_frame(frame.drop(columns="timestamp"))


@pytest.mark.parametrize(("counts", "expected"), [
    ((0, 50, 5, 20, True), "new"),
    ((20, 50, 0, 20, False), "gone"),      # (1 − 0.4)^20 ≈ 4e-5
    ((1, 50, 0, 3, False), "stable"),      # (1 − 0.02)^3 ≈ 0.94: no evidence
    ((5, 100, 15, 30, False), "rising"),   # 5% → 50%
    ((40, 100, 2, 40, False), "fading"),   # 40% → 5%
    ((20, 100, 6, 30, False), "stable"),   # 20% → 20%
    ((1000, 10_000, 1100, 10_000, False), "stable"),  # z ≈ 2.3 but only +10%: too small
    ((0, 0, 0, 0, False), "stable"),
])
def test_trend_rule(counts, expected):
    *c, first_recently = counts
    assert trend_of(*c, alpha=0.05, first_seen_recently=first_recently) == expected


def test_timeline_and_trends_follow_a_change_of_taste():
    tr = _tracker(window_days=7, recent_windows=1, history_windows=4)
    t = T0
    for week in range(6):
        for k in range(10):
            item = f"R{k % 10}" if week < 5 else f"B{k % 10}"
            tr.update("u", t + week * 7 * DAY + k * 3_600_000, item, "view")
    timeline = tr.timeline("u")
    assert len(timeline) == 6 and timeline[0]["interests"] == {"Sports > Running": 1.0}
    assert timeline[-1]["interests"] == {"Home > Baking": 1.0}
    trends = {i.name: i.trend for i in tr.interests("u")}
    assert trends == {"Home > Baking": "new", "Sports > Running": "gone"}


def test_config_errors_name_the_field():
    for bad, message in [({"half_life_days": 0}, "half_life_days"),
                         ({"alpha": 1.5}, "alpha"), ({"window_days": -1}, "window_days"),
                         ({"max_interests": 0}, "max_interests")]:
        with pytest.raises(ValueError, match=message):
            ProfileConfig(**bad)


# -- segments and population trends ----------------------------------------------------------
def test_segments_find_the_two_groups_and_population_trends_rise():
    tr = _tracker(window_days=7, recent_windows=1, history_windows=3)
    for u in range(40):
        letter = "R" if u < 25 else "A"
        for k in range(6):
            week = k % 3 if letter == "R" else 3  # audio fans arrive in the last week
            tr.update(f"u{u}", T0 + week * 7 * DAY + k * 60_000, f"{letter}{k}", "view")
    segs = segment_users(tr, k_range=(2, 5))
    assert segs.k == 2 and sorted(s["users"] for s in segs.segments) == [15, 25]
    big = segs.segments[0]
    assert big["users"] == 25 and big["top_interests"][0]["name"] == "Sports > Running"
    assert set(segs.to_dict()) >= {"k", "silhouette", "criterion", "tried", "segments"}
    trends = {r["name"]: r["trend"] for r in population_trends(tr)}
    assert trends["Tech > Audio"] == "new" and trends["Sports > Running"] == "gone"
    with pytest.raises(ValueError, match="k must be"):
        segment_users(tr, k=1000)
    with pytest.raises(ValueError, match="at least 2 users"):
        segment_users(_tracker())
