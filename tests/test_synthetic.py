"""Tests for the ``synthetic-shop`` generator (tansuo.data.synthetic)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tansuo.data.schema import EVENT_COLUMNS, ITEM_COLUMNS, EventType
from tansuo.data.synthetic import (
    MALFORMED_KINDS,
    ShopConfig,
    ShopFiles,
    generate,
    interest_taxonomy,
)

SMALL = ShopConfig(
    users=60,
    items=200,
    events_per_user=120.0,
    seed=7,
    bot_share=0.05,
    malformed_share=0.01,
)
TYPES = {t.value for t in EventType}


@dataclass
class Shop:
    files: ShopFiles
    items: pd.DataFrame
    events: pd.DataFrame  # all rows, as strings, plus parsed helper columns
    good: pd.DataFrame  # well-formed rows only
    truth: pd.DataFrame
    shifts: pd.DataFrame
    meta: dict[str, Any]


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _load(files: ShopFiles) -> Shop:
    items = _read(files.items)
    ev = _read(files.events)
    ev["row"] = np.arange(len(ev))
    ev["t"] = pd.to_datetime(ev["timestamp"], format="ISO8601", utc=True, errors="coerce")
    ev["dwell"] = pd.to_numeric(ev["dwell_seconds"], errors="coerce")
    ok = (
        ev["t"].notna()
        & (ev["t"].dt.year < 2100)
        & ev["type"].isin(TYPES)
        & (ev["user_id"] != "")
        & ~(ev["dwell"] < 0)
    )
    good = ev[ok].copy()
    cat = items.set_index("item_id")["category"]
    good["interest_cat"] = (
        good["item_id"].map(cat).fillna("").str.split(" > ").str[:2].str.join(" > ")
    )
    truth = _read(files.interests)
    for col in ("start", "end"):
        truth[col + "_t"] = pd.to_datetime(truth[col].replace("", None), utc=True,
                                           format="ISO8601")
    shifts = _read(files.shifts)
    shifts["t"] = pd.to_datetime(shifts["timestamp"], utc=True, format="ISO8601")
    meta = json.loads(files.meta.read_text())
    return Shop(files, items, ev, good, truth, shifts, meta)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Shop:
    return _load(generate(SMALL, tmp_path_factory.mktemp("shop"), progress=False))


def _bytes(files: ShopFiles) -> list[bytes]:
    return [p.read_bytes() for p in (files.items, files.events, files.interests, files.shifts,
                                     files.meta)]


# --------------------------------------------------------------------------------------------


def test_taxonomy_is_realistic() -> None:
    tax = interest_taxonomy()
    assert 35 <= len(tax) <= 45
    keys = [t.key for t in tax]
    assert len(set(keys)) == len(keys)
    assert "sports/running" in keys
    for t in tax:
        assert t.tag and t.phrases
        assert len(t.category.split(" > ")) == 2
        assert t.key.count("/") == 1
    departments = {t.category.split(" > ")[0] for t in tax}
    assert 8 <= len(departments) <= 10


def test_config_validation() -> None:
    for bad in ({"users": 0}, {"interests_per_user": (3, 2)}, {"bot_share": 1.5},
                {"start": "yesterday"}, {"days": 0}, {"seed": -1}):
        with pytest.raises(ValueError):
            ShopConfig(**bad)  # type: ignore[arg-type]


def test_deterministic(shop: Shop, tmp_path: Path) -> None:
    again = generate(SMALL, tmp_path / "again", progress=False)
    assert _bytes(again) == _bytes(shop.files)
    other = generate(ShopConfig(users=20, items=100, seed=8), tmp_path / "other",
                     progress=False)
    same_size = generate(ShopConfig(users=20, items=100, seed=9), tmp_path / "same",
                         progress=False)
    assert other.events.read_bytes() != same_size.events.read_bytes()
    assert other.items.read_bytes() != same_size.items.read_bytes()


def test_files_and_columns(shop: Shop) -> None:
    f = shop.files
    assert {f.items.name, f.events.name, f.interests.name, f.shifts.name, f.meta.name} == {
        "items.csv", "events.csv", "truth_interests.csv", "truth_shifts.csv", "meta.json"}
    assert tuple(_read(f.items).columns) == ITEM_COLUMNS
    assert tuple(_read(f.events).columns) == EVENT_COLUMNS
    assert list(shop.truth.columns[:8]) == [
        "user_id", "interest", "tag", "category", "start", "end", "weight", "latent"]
    assert list(shop.shifts.columns[:5]) == [
        "user_id", "timestamp", "left", "arrived", "event_index"]


def test_catalogue(shop: Shop) -> None:
    items = shop.items
    assert len(items) == SMALL.items
    assert items["item_id"].is_unique
    assert items["item_id"].str.fullmatch(r"I\d{6}").all()
    prefixes = {t.category for t in interest_taxonomy()}
    levels = items["category"].str.split(" > ")
    assert (levels.str.len() == 3).all()
    assert levels.str[:2].str.join(" > ").isin(prefixes).all()
    assert (items["title"].str.len() > 10).all()
    assert items["title"].str.contains(",").all()
    assert (items["description"].str.len() > 20).all()
    prices = items["price"].astype(float)
    assert (prices > 0).all()
    for raw in items["attributes"]:
        assert isinstance(json.loads(raw), dict)
    created = pd.to_datetime(items["created_at"], format="ISO8601", utc=True)
    start = pd.Timestamp(SMALL.start)
    assert (created < start).mean() > 0.8
    assert (created >= start).any()


def test_event_rows(shop: Shop) -> None:
    ev, good = shop.events, shop.good
    assert ev["user_id"].replace("", None).dropna().str.fullmatch(r"U\d{6}").all()
    assert good["timestamp"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z").all()
    assert set(good["type"]) <= TYPES
    assert set(good["type"]) == TYPES
    known = set(shop.items["item_id"])
    search = good["type"] == "search"
    assert (good.loc[search, "item_id"] == "").all()
    assert (good.loc[search, "query"] != "").all()
    assert good.loc[~search, "item_id"].isin(known).all()
    assert (ev["request_id"] == "").all() and (ev["position"] == "").all()
    filled = (ev["event_id"] != "").mean()
    assert 0.005 < filled < 0.10
    assert ev.loc[ev["event_id"] != "", "event_id"].str.startswith("E").all()
    assert ev.loc[ev["event_id"] != "", "event_id"].is_unique
    views = good[good["type"] == "view"]
    assert (views["dwell"] > 0).all()
    buys = good[good["type"] == "purchase"]
    qty = buys["quantity"].astype(int)
    assert qty.between(1, 3).all()
    price = buys["item_id"].map(shop.items.set_index("item_id")["price"].astype(float))
    assert np.allclose(buys["amount"].astype(float), (price * qty).round(2))
    reviews = good[good["type"] == "review"]
    assert reviews["rating"].astype(int).between(1, 5).all()
    assert (reviews["text"] != "").all()
    # Items are only touched once they exist.
    created = pd.to_datetime(good["item_id"].map(shop.items.set_index("item_id")["created_at"]),
                             format="ISO8601", utc=True)
    assert (created[~search] <= good.loc[~search, "t"]).all()


def test_order_grouped_by_user_and_time(shop: Shop) -> None:
    users = shop.events["user_id"].replace("", None).ffill()
    assert users.is_monotonic_increasing
    for _, g in shop.good.groupby("user_id"):
        assert g["t"].is_monotonic_increasing


def test_events_follow_true_interests(shop: Shop) -> None:
    bots = set(shop.meta["counts"]["bots"])
    truth = shop.truth[shop.truth["latent"] == "0"]
    far = pd.Timestamp("2200-01-01", tz="UTC")
    checked = 0
    for user, g in shop.good[shop.good["type"] != "search"].groupby("user_id"):
        if user in bots or len(g) < 40:
            continue
        spans = truth[truth["user_id"] == user]
        hit = np.zeros(len(g), dtype=bool)
        for _, s in spans.iterrows():
            end = s["end_t"] if pd.notna(s["end_t"]) else far
            hit |= ((g["interest_cat"] == s["category"]) & (g["t"] >= s["start_t"])
                    & (g["t"] < end)).to_numpy()
        assert hit.mean() >= 0.7, (user, hit.mean())
        checked += 1
    assert checked >= 20


def test_latent_interests_are_event_free(shop: Shop) -> None:
    latent = shop.truth[shop.truth["latent"] == "1"]
    assert len(latent) == shop.meta["counts"]["humans"] * SMALL.latent_interests
    pairs = set(zip(latent["user_id"], latent["category"], strict=True))
    touched = set(zip(shop.good["user_id"], shop.good["interest_cat"], strict=True))
    assert not pairs & touched


def test_shifts(shop: Shop) -> None:
    shifts = shop.shifts
    humans = shop.meta["counts"]["humans"]
    assert 0.3 * humans < shifts["user_id"].nunique() < 0.9 * humans
    assert len(shifts) == shop.meta["counts"]["shifts"]
    by_cat = {t.key: t.category for t in interest_taxonomy()}
    items = shop.good[shop.good["type"] != "search"]
    before_arrived = after_arrived = before_n = after_n = after_left = 0
    single = shifts.groupby("user_id").filter(lambda g: len(g) == 1)
    for _, s in single.iterrows():
        g = items[items["user_id"] == s["user_id"]]
        pre, post = g[g["t"] < s["t"]], g[g["t"] >= s["t"]]
        before_arrived += (pre["interest_cat"] == by_cat[s["arrived"]]).sum()
        after_arrived += (post["interest_cat"] == by_cat[s["arrived"]]).sum()
        after_left += (post["interest_cat"] == by_cat[s["left"]]).sum()
        before_n += len(pre)
        after_n += len(post)
    assert after_n > 200 and before_n > 200
    assert after_arrived / after_n > 0.3
    assert before_arrived / before_n < 0.05
    assert after_left / after_n < 0.05
    # event_index points at the first well-formed event at or after the shift.
    for _, s in shifts.iterrows():
        g = shop.good[shop.good["user_id"] == s["user_id"]]
        after = np.flatnonzero((g["t"] >= s["t"]).to_numpy())
        expected = str(after[0]) if len(after) else ""
        assert s["event_index"] == expected


def test_bots_burst(shop: Shop) -> None:
    bots = shop.meta["counts"]["bots"]
    assert len(bots) == round(SMALL.users * SMALL.bot_share)

    def max_per_minute(g: pd.DataFrame) -> int:
        t = np.sort(g["t"].astype("int64").to_numpy() // 1_000_000)
        return int((np.searchsorted(t, t + 60_000, side="left") - np.arange(len(t))).max())

    per_user = {u: max_per_minute(g) for u, g in shop.good.groupby("user_id")}
    for b in bots:
        assert per_user[b] > 100
    assert max(v for u, v in per_user.items() if u not in bots) < 100


def test_malformed_counts_match_meta(shop: Shop) -> None:
    ev = shop.events
    found = {
        "bad_timestamp": int((ev["timestamp"] == "not-a-date").sum()),
        "future_timestamp": int(ev["timestamp"].str.startswith("2199").sum()),
        "unknown_type": int((~ev["type"].isin(TYPES)).sum()),
        "missing_user": int((ev["user_id"] == "").sum()),
        "negative_dwell": int((ev["dwell"] < 0).sum()),
    }
    assert set(found) == set(MALFORMED_KINDS)
    assert shop.meta["counts"]["malformed"] == found
    assert sum(found.values()) >= 5
    assert len(ev) - len(shop.good) == sum(found.values())


def test_funnel_and_meta(shop: Shop) -> None:
    n = shop.good["type"].value_counts()
    assert n["view"] > n["click"] > n["cart"] > n["purchase"] > 0
    human = shop.good[~shop.good["user_id"].isin(shop.meta["counts"]["bots"])]
    h = human["type"].value_counts()
    assert 0.2 < h["click"] / h["view"] < 0.4
    assert 0.01 < h["purchase"] / h["view"] < 0.06
    assert n["search"] > 0 and n["review"] > 0 and n["favorite"] > 0 and n["dislike"] > 0
    counts = shop.meta["counts"]
    assert counts["events"] == len(shop.events)
    assert counts["items"] == SMALL.items and counts["users"] == SMALL.users
    assert counts["by_type"] == {t: int(n.get(t, 0)) for t in counts["by_type"]}
    assert shop.meta["config"]["seed"] == SMALL.seed
    assert shop.meta["generator"] == "synthetic-shop"


def test_tiny_and_empty_configs(tmp_path: Path) -> None:
    files = generate(ShopConfig(users=3, items=5, events_per_user=0.0, bot_share=0.0),
                     tmp_path / "empty", progress=False)
    assert tuple(_read(files.events).columns) == EVENT_COLUMNS
    assert len(_read(files.events)) == 0
    files = generate(ShopConfig(users=5, items=3, events_per_user=30.0), tmp_path / "few",
                     progress=False)
    ev = _read(files.events)
    assert len(ev) > 0
    assert set(ev.loc[ev["item_id"] != "", "item_id"]) <= set(_read(files.items)["item_id"])
