"""User profiles, multi-interest and interest evolution, kept up to date one event at a time.

:class:`InterestTracker` folds each event into a small per-user state (:class:`UserState`):

- **statistics** — events by type, active days and hours, dwell, purchases and spend;
- **long-term view** — every interest unit's weight, decayed with a half-life
  (``weight × 0.5^(age / half_life)``, the event weight by type: a purchase counts more than a
  view, a dislike subtracts), and a decayed mean vector of the items in the representation space;
- **short-term view** — the last ``short_term_events`` events (the current session and before);
- **timeline** — weight per unit per time window (day or week);
- **shifts** — an incremental detector (:mod:`tansuo.interests.shifts`) on the unit sequence.

An update costs O(1) plus the detector's window; reading a profile costs O(units the user
touched). Nothing is recomputed from history, so the service can call both per request.

**Trend rule** (per interest, at read time): the last ``recent_windows`` windows are compared
with the ``history_windows`` before them on event counts. *new*: no events before, some
recently; *gone*: some before, none recently, and zero recent events would have probability
below ``alpha`` had the earlier share held (``(1 − p_before)^n_recent < alpha``); *rising* /
*fading*: a two-proportion z-test of the recent against the earlier share is significant at
``alpha`` (two-sided) and the share moved by at least ``min_change`` of its earlier value (with
many events a tiny move is significant without mattering); otherwise *stable*.
"""

from __future__ import annotations

import functools
import math
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm
from tqdm import tqdm

from tansuo.data.schema import DEFAULT_EVENT_WEIGHTS
from tansuo.interests.space import InterestSpace
from tansuo.interests.tags import Tag, TagVocabulary

__all__ = ["ProfileConfig", "InterestTracker", "UserProfile", "UserInterest", "UserState",
           "trend_of"]

_MS_DAY = 86_400_000
_MS_HOUR = 3_600_000


@dataclass(frozen=True)
class ProfileConfig:
    half_life_days: float = 30.0
    """Long-term view: an event's weight halves every this many days."""
    short_term_events: int = 20
    """Short-term view: the user's last N events."""
    max_interests: int = 5
    """K: most interests reported per user."""
    min_share: float = 0.03
    """Interests below this share of the user's long-term weight are not reported."""
    representative_items: int = 3
    window_days: float = 7.0
    """Timeline window: 1 = daily, 7 = weekly."""
    recent_windows: int = 2
    history_windows: int = 8
    alpha: float = 0.05
    """Significance level of the trend rule."""
    min_change: float = 0.25
    """Rising/fading also need the share to move by this fraction of its earlier value."""
    event_weights: Mapping[str, float] = field(default_factory=lambda: dict(
        DEFAULT_EVENT_WEIGHTS))
    track_items: int = 20
    """Most-weighted items remembered per user and interest (representatives, text tags)."""
    shifts: bool = True
    """Run the shift detector on each user's interest sequence."""

    def __post_init__(self) -> None:
        checks = [(self.half_life_days > 0, "half_life_days must be > 0"),
                  (self.short_term_events >= 1, "short_term_events must be ≥ 1"),
                  (self.max_interests >= 1, "max_interests must be ≥ 1"),
                  (0 <= self.min_share < 1, "min_share must be in [0, 1)"),
                  (self.window_days > 0, "window_days must be > 0"),
                  (self.recent_windows >= 1 and self.history_windows >= 1,
                   "recent_windows and history_windows must be ≥ 1"),
                  (0 < self.alpha < 1, "alpha must be in (0, 1)"),
                  (self.track_items >= 1, "track_items must be ≥ 1")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class UserState:
    """Everything the tracker keeps about one user (small; JSON-able via ``to_dict``)."""

    user_id: str
    events: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    first_ts: int | None = None
    last_ts: int | None = None
    active_days: int = 0
    hours: list[int] = field(default_factory=lambda: [0] * 24)
    dwell_sum: float = 0.0
    dwell_n: int = 0
    spend: float = 0.0
    ref_ts: int = 0
    """Decayed quantities below are stored scaled by exp(λ (t − ref_ts)) (see _growth)."""
    unit_weight: dict[int, float] = field(default_factory=dict)
    unit_events: dict[int, int] = field(default_factory=dict)
    unit_first: dict[int, int] = field(default_factory=dict)
    unit_last: dict[int, int] = field(default_factory=dict)
    unit_items: dict[int, dict[int, float]] = field(default_factory=dict)
    """unit → {item row: decayed weight}, the ``track_items`` heaviest kept."""
    long_sum: np.ndarray | None = None
    recent: deque[tuple[int, int, str, int]] = field(default_factory=deque)
    """(timestamp, item row, type, unit) of the last events."""
    queries: deque[str] = field(default_factory=lambda: deque(maxlen=10))
    disliked: deque[int] = field(default_factory=lambda: deque(maxlen=50))
    windows: dict[int, dict[int, int]] = field(default_factory=dict)
    """window index → {unit: events}: the timeline."""
    detector: Any = None
    shifts: list[Any] = field(default_factory=list)


@dataclass
class UserInterest:
    unit: int
    name: str
    weight: float
    """Share of the user's long-term (decayed) positive weight."""
    tags: list[Tag]
    items: list[str]
    first_seen: int
    last_seen: int
    events: int
    trend: str = "stable"

    def to_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "tag": self.tags[0].text if self.tags else self.name,
                "name": self.name, "weight": round(self.weight, 4), "trend": self.trend,
                "tags": [t.to_dict() for t in self.tags], "items": self.items,
                "first_seen": _iso(self.first_seen), "last_seen": _iso(self.last_seen),
                "events": self.events}


@dataclass
class UserProfile:
    user_id: str
    stats: dict[str, Any]
    interests: list[UserInterest]
    short_term: list[dict[str, Any]]
    long_term_vector: np.ndarray | None
    short_term_vector: np.ndarray | None
    recent_items: list[str]
    queries: list[str]
    timeline: list[dict[str, Any]]
    shifts: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "stats": self.stats,
                "interests": [i.to_dict() for i in self.interests],
                "short_term": self.short_term, "recent_items": self.recent_items,
                "queries": self.queries, "timeline": self.timeline, "shifts": self.shifts}


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").isoformat().replace("+00:00", "Z")


@functools.lru_cache(maxsize=16)
def _critical(alpha: float) -> float:
    """Two-sided critical value of the standard normal (cached: scipy's ppf is slow)."""
    return float(norm.ppf(1 - alpha / 2))


def trend_of(before: int, n_before: int, recent: int, n_recent: int, alpha: float,
             first_seen_recently: bool = False, min_change: float = 0.25) -> str:
    """The stated trend rule (module docstring) on event counts."""
    if n_recent == 0 or (before == 0 and recent == 0):
        return "stable"
    if before == 0:
        return "new" if first_seen_recently or n_before == 0 else "rising"
    p_before = before / n_before if n_before else 0.0
    if recent == 0:
        return "gone" if (1 - p_before) ** n_recent < alpha else "stable"
    p_recent = recent / n_recent
    pooled = (before + recent) / (n_before + n_recent)
    se = math.sqrt(max(pooled * (1 - pooled) * (1 / n_before + 1 / n_recent), 1e-12))
    z = (p_recent - p_before) / se
    if abs(z) <= _critical(alpha) or abs(p_recent - p_before) < min_change * p_before:
        return "stable"  # not significant, or too small a change to matter
    return "rising" if z > 0 else "fading"


class InterestTracker:
    """Per-user interest state over an :class:`InterestSpace`, updated event by event."""

    def __init__(self, space: InterestSpace, config: ProfileConfig | None = None,
                 vocabulary: TagVocabulary | None = None) -> None:
        self.space = space
        self.config = config or ProfileConfig()
        self.vocabulary = vocabulary
        self.users: dict[str, UserState] = {}
        self._decay_per_ms = math.log(2) / (self.config.half_life_days * _MS_DAY)
        self._window_ms = int(self.config.window_days * _MS_DAY)

    # -- updates -------------------------------------------------------------------------------
    def _state(self, user_id: str) -> UserState:
        st = self.users.get(user_id)
        if st is None:
            st = UserState(user_id, recent=deque(maxlen=self.config.short_term_events))
            if self.config.shifts:
                from tansuo.interests.shifts import ShiftDetector

                st.detector = ShiftDetector()
            self.users[user_id] = st
        return st

    def _growth(self, st: UserState, ts: int) -> float:
        """Decay without touching every weight: weights are stored scaled by
        ``exp(λ (t − ref_ts))``, so only their ratios (shares) matter; the reference moves
        (rescaling everything once) only when the scale would leave a float's range."""
        exponent = self._decay_per_ms * (ts - st.ref_ts)
        if not st.unit_weight and st.long_sum is None:
            st.ref_ts, exponent = ts, 0.0
        elif exponent > 50:  # e^50 ≈ 5e21: far from float64's limits, and rarely reached
            f = math.exp(-exponent)
            for u in st.unit_weight:
                st.unit_weight[u] *= f
            for items in st.unit_items.values():
                for i in items:
                    items[i] *= f
            if st.long_sum is not None:
                st.long_sum *= f
            st.ref_ts, exponent = ts, 0.0
        return math.exp(exponent)

    def update(self, user_id: str, timestamp: int, item_id: str | None, type: str,
               dwell: float | None = None, amount: float | None = None,
               query: str | None = None) -> Any:
        """Fold one event in; returns a shift if this event revealed one, else None."""
        c = self.config
        st = self._state(user_id)
        ts = int(timestamp)
        if st.last_ts is None or ts // _MS_DAY != st.last_ts // _MS_DAY:
            st.active_days += 1
        st.events += 1
        st.by_type[type] += 1
        st.first_ts = ts if st.first_ts is None else min(st.first_ts, ts)
        st.last_ts = ts if st.last_ts is None else max(st.last_ts, ts)
        st.hours[(ts // _MS_HOUR) % 24] += 1
        if dwell is not None and not (isinstance(dwell, float) and math.isnan(dwell)):
            st.dwell_sum += float(dwell)
            st.dwell_n += 1
        if type == "purchase" and amount is not None and not pd.isna(amount):
            st.spend += float(amount)
        if query:
            st.queries.append(str(query))
        row = self.space.row(item_id) if item_id else -1
        unit = int(self.space.unit_of[row]) if row >= 0 else -1
        st.recent.append((ts, int(row), type, unit))
        weight = float(c.event_weights.get(type, 1.0))
        if type == "dislike" and row >= 0:
            st.disliked.append(int(row))
        shift = None
        if row >= 0 and unit >= 0 and weight != 0:
            weight *= self._growth(st, ts)
            if weight > 0:
                st.unit_weight[unit] = st.unit_weight.get(unit, 0.0) + weight
                st.unit_events[unit] = st.unit_events.get(unit, 0) + 1
                st.unit_first.setdefault(unit, ts)
                st.unit_last[unit] = ts
                items = st.unit_items.setdefault(unit, {})
                items[int(row)] = items.get(int(row), 0.0) + weight
                if len(items) > c.track_items:
                    del items[min(items, key=items.__getitem__)]
                vec = self.space.vectors[row]
                add = vec.astype(np.float64) * weight
                st.long_sum = add if st.long_sum is None else st.long_sum + add
                win = st.windows.setdefault(ts // self._window_ms, {})
                win[unit] = win.get(unit, 0) + 1
            else:  # a dislike lowers the interest, never below zero
                st.unit_weight[unit] = max(0.0, st.unit_weight.get(unit, 0.0) + weight)
        if st.detector is not None:
            # every event goes to the detector (-1: no interest, e.g. a search or a dislike)
            # so its event indices are the user's event indices
            base = float(c.event_weights.get(type, 1.0))
            label = unit if (unit >= 0 and base > 0) else -1
            shift = st.detector.update(ts, label, max(base, 0.0))
            if shift is not None:
                st.shifts.append(shift)
        return shift

    def update_frame(self, events: pd.DataFrame, progress: bool | None = None) -> int:
        """Fold a frame of events in (time order within each user is respected); returns the
        number of shifts found. Columns: user_id, item_id, type, timestamp and optionally
        dwell_seconds, amount, query."""
        missing = {"user_id", "item_id", "type", "timestamp"} - set(events.columns)
        if missing:
            raise ValueError(f"events need columns {sorted(missing)}")
        ts = events["timestamp"]
        ms = (ts.astype("int64") // 1_000_000 if pd.api.types.is_datetime64_any_dtype(ts)
              else ts.astype("int64")).to_numpy()
        order = np.lexsort((ms, events["user_id"].astype(str).to_numpy()))
        cols = {c: (events[c].to_numpy(dtype=object) if c in events.columns
                    else np.full(len(events), None, dtype=object))
                for c in ("user_id", "item_id", "type", "dwell_seconds", "amount", "query")}
        found = 0
        for i in tqdm(order, desc="profiles", unit="event", disable=progress is False or None
                      if progress is None else not progress, leave=False):
            item = cols["item_id"][i]
            shift = self.update(str(cols["user_id"][i]), int(ms[i]),
                                item if isinstance(item, str) and item else None,
                                str(cols["type"][i]), _num(cols["dwell_seconds"][i]),
                                _num(cols["amount"][i]), _str(cols["query"][i]))
            found += shift is not None
        return found

    # -- reads ---------------------------------------------------------------------------------
    def user_vectors(self, user_id: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(long-term, short-term) unit vectors of the user in the interest space (cheap)."""
        st = self.users.get(user_id)
        if st is None:
            return None, None
        rows = [r for _, r, _, _ in st.recent if r >= 0]
        long_vec = None if st.long_sum is None else _unit(st.long_sum)
        short_vec = _unit(self.space.vectors[rows].mean(axis=0)) if rows else None
        return long_vec, short_vec

    def interests(self, user_id: str, text_tags: bool = True) -> list[UserInterest]:
        """The user's top interests; ``text_tags=False`` skips the zero-shot tags (the
        category tag comes first either way) for a faster read."""
        c = self.config
        st = self.users.get(user_id)
        if st is None:
            return []
        positive = {u: w for u, w in st.unit_weight.items() if w > 0}
        total = sum(positive.values())
        if total <= 0:
            return []
        ranked = sorted(positive, key=lambda u: (-positive[u], u))
        chosen = [u for u in ranked if positive[u] / total >= c.min_share][:c.max_interests]
        trends = self._trends(st, chosen)
        out = []
        for u in chosen:
            items = st.unit_items.get(u, {})
            top = sorted(items, key=lambda i: (-items[i], i))
            tags = self._tags(u, top if text_tags else [], text_tags)
            out.append(UserInterest(
                u, self.space.names[u], positive[u] / total, tags,
                [self.space.item_ids[i] for i in top[:c.representative_items]],
                st.unit_first[u], st.unit_last[u], st.unit_events.get(u, 0), trends[u]))
        return out

    def _tags(self, unit: int, rows: Sequence[int], text: bool = True) -> list[Tag]:
        """The unit's category name first, then zero-shot tags of the user's own items."""
        tags = [Tag(self.space.names[unit].split(" > ")[-1], 1.0, "category")]
        if not text:
            return tags
        if self.vocabulary is not None and rows:
            centroid = self.space.text_vectors[list(rows)].mean(axis=0, keepdims=True)
            tags += [t for t in self.vocabulary.match(centroid,
                                                      background=self.space.background)[0]
                     if t.text.lower() != tags[0].text.lower()]
        elif self.space.tags[unit]:
            tags += self.space.tags[unit]
        return tags

    def _trends(self, st: UserState, units: Sequence[int]) -> dict[int, str]:
        c = self.config
        if not st.windows or st.last_ts is None:
            return {u: "stable" for u in units}
        now = st.last_ts // self._window_ms
        recent_from = now - c.recent_windows + 1
        before_from = recent_from - c.history_windows
        rec: Counter[int] = Counter()
        bef: Counter[int] = Counter()
        for w, counts in st.windows.items():
            if w >= recent_from:
                rec.update(counts)
            elif w >= before_from:
                bef.update(counts)
        n_r, n_b = sum(rec.values()), sum(bef.values())
        out = {}
        for u in units:
            first_recent = st.unit_first.get(u, 0) // self._window_ms >= recent_from
            out[u] = trend_of(bef[u], n_b, rec[u], n_r, c.alpha, first_recent, c.min_change)
        return out

    def timeline(self, user_id: str) -> list[dict[str, Any]]:
        """Per window: its start and each unit's share of the window's events."""
        st = self.users.get(user_id)
        if st is None:
            return []
        out = []
        for w in sorted(st.windows):
            counts = st.windows[w]
            n = sum(counts.values())
            out.append({"start": _iso(w * self._window_ms), "events": n,
                        "interests": {self.space.names[u]: round(k / n, 4)
                                      for u, k in sorted(counts.items(), key=lambda x: -x[1])}})
        return out

    def shift_records(self, user_id: str) -> list[dict[str, Any]]:
        st = self.users.get(user_id)
        if st is None:
            return []
        name = self.space.names
        return [{"timestamp": _iso(s.timestamp), "event_index": s.event_index,
                 "left": [name[u] for u in s.left if 0 <= u < len(name)],
                 "arrived": [name[u] for u in s.arrived if 0 <= u < len(name)],
                 "p_value": s.p_value} for s in st.shifts]

    def profile(self, user_id: str) -> UserProfile:
        st = self.users.get(user_id)
        if st is None:
            raise KeyError(user_id)
        span_days = max(((st.last_ts or 0) - (st.first_ts or 0)) / _MS_DAY, 1.0)
        stats = {"events": st.events, "by_type": dict(st.by_type), "active_days": st.active_days,
                 "first_seen": _iso(st.first_ts), "last_seen": _iso(st.last_ts),
                 "mean_dwell_seconds": round(st.dwell_sum / st.dwell_n, 2) if st.dwell_n
                 else None,
                 "purchases_per_week": round(st.by_type.get("purchase", 0) / span_days * 7, 3),
                 "spend": round(st.spend, 2),
                 "active_hours_utc": [h for h in np.argsort(st.hours)[::-1][:3].tolist()
                                      if st.hours[h] > 0]}
        rows = [r for _, r, _, _ in st.recent if r >= 0]
        long_vec, short_vec = self.user_vectors(user_id)
        short_units = Counter(u for _, _, t, u in st.recent
                              if u >= 0 and self.config.event_weights.get(t, 1.0) > 0)
        n_short = sum(short_units.values())
        short = [{"unit": u, "name": self.space.names[u], "share": round(k / n_short, 4)}
                 for u, k in short_units.most_common()]
        return UserProfile(user_id, stats, self.interests(user_id), short, long_vec, short_vec,
                           [self.space.item_ids[r] for r in rows[::-1]], list(st.queries),
                           self.timeline(user_id), self.shift_records(user_id))


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float32) if n > 0 else v.astype(np.float32)


def _num(x: object) -> float | None:
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return None
    try:
        return float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _str(x: object) -> str | None:
    return x if isinstance(x, str) and x else None
