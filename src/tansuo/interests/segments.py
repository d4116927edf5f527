"""Segments of users by long-term interests, and population trends.

**Segments**: every user is a vector of long-term interest shares (the decayed weights of
:class:`~tansuo.interests.profile.InterestTracker`, normalised to sum to one). Users are
clustered with k-means on the square roots of the shares (the Hellinger embedding, so distances
behave like distances between distributions); the number of segments is the k in ``k_range``
with the highest silhouette on a seeded sample of at most 5,000 users, unless fixed. Each
segment is described by its size, its top interests (mean share) and its trend: the change of
its share of all events between the previous and the latest window, with a two-proportion
z-test.

**Population trends**: for every interest, its share of all events in the latest
``recent_windows`` windows against the ``history_windows`` before, with the same rule as a
user's trend (:func:`~tansuo.interests.profile.trend_of`), plus the relative change.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from tansuo.interests.profile import InterestTracker, trend_of

__all__ = ["Segments", "segment_users", "population_trends", "window_period"]


@dataclass
class Segments:
    users: list[str]
    labels: np.ndarray
    shares: np.ndarray
    """users × units long-term share matrix."""
    k: int
    silhouette: float
    tried: dict[int, float]
    """k → silhouette for every k tried."""
    segments: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "silhouette": round(self.silhouette, 4),
                "criterion": "highest silhouette (Euclidean on square-root shares)",
                "tried": {str(k): round(v, 4) for k, v in self.tried.items()},
                "segments": self.segments}


def _shares(tracker: InterestTracker, users: Sequence[str]) -> np.ndarray:
    out = np.zeros((len(users), tracker.space.n_units))
    for r, u in enumerate(users):
        for unit, w in tracker.users[u].unit_weight.items():
            if w > 0:
                out[r, unit] = w
    total = out.sum(axis=1, keepdims=True)
    return np.divide(out, total, out=np.zeros_like(out), where=total > 0)


def _window_counts(tracker: InterestTracker, users: Sequence[str] | None = None
                   ) -> dict[int, Counter[int]]:
    """window index → {unit: events} summed over ``users`` (all when None)."""
    out: dict[int, Counter[int]] = {}
    for u in (tracker.users if users is None else users):
        for w, counts in tracker.users[u].windows.items():
            out.setdefault(w, Counter()).update(counts)
    return out


def segment_users(tracker: InterestTracker, k: int | None = None,
                  k_range: tuple[int, int] = (2, 12), seed: int = 0, top: int = 3) -> Segments:
    users = [u for u, st in tracker.users.items() if any(w > 0 for w in st.unit_weight.values())]
    if len(users) < 2:
        raise ValueError(f"segments need at least 2 users with interests, got {len(users)}")
    lo, hi = k_range
    if k is not None and not 1 <= k <= len(users):
        raise ValueError(f"k must be between 1 and the number of users ({len(users)}), got {k}")
    if k is None and not 2 <= lo <= hi:
        raise ValueError(f"k_range must be (min, max) with 2 ≤ min ≤ max, got {k_range}")
    shares = _shares(tracker, users)
    X = np.sqrt(shares)
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(users), min(len(users), 5000), replace=False)
    tried: dict[int, float] = {}
    best: tuple[float, np.ndarray, int] | None = None
    distinct = len(np.unique(X.round(9), axis=0))  # more clusters than distinct users: none
    for kk in ([k] if k is not None else range(lo, max(min(hi, len(users) - 1, distinct), lo)
                                               + 1)):
        labels = KMeans(kk, n_init=4, random_state=seed).fit(X).labels_
        sil = (float(silhouette_score(X[sample], labels[sample]))
               if kk > 1 and len(np.unique(labels[sample])) > 1 else 0.0)
        tried[kk] = sil
        if best is None or sil > best[0]:
            best = (sil, labels, kk)
    assert best is not None
    sil, labels, kk = best
    windows = _window_counts(tracker)
    last = max(windows) if windows else 0
    segs = []
    for s in range(kk):
        members = [users[i] for i in np.flatnonzero(labels == s)]
        mean = shares[labels == s].mean(axis=0)
        top_units = np.argsort(-mean)[:top]
        seg_w = _window_counts(tracker, members)
        now, before = sum(seg_w.get(last, Counter()).values()), sum(
            seg_w.get(last - 1, Counter()).values())
        all_now, all_before = (sum(windows.get(last, Counter()).values()),
                               sum(windows.get(last - 1, Counter()).values()))
        segs.append({
            "segment": s, "users": len(members),
            "top_interests": [{"name": tracker.space.names[u], "share": round(float(mean[u]), 4)}
                              for u in top_units if mean[u] > 0],
            "trend": trend_of(before, all_before, now, all_now, tracker.config.alpha,
                              min_change=tracker.config.min_change)
            if all_before and all_now else "stable",
            "examples": members[:5]})
    segs.sort(key=lambda d: -d["users"])
    return Segments(users, labels, shares, kk, sil, tried, segs)


def window_period(window: int, last: int, recent_windows: int, history_windows: int
                  ) -> str | None:
    """Which side of the trend rule a time window falls on: the last ``recent_windows``
    are "recent", the ``history_windows`` before them "earlier", older ones neither."""
    if window > last - recent_windows:
        return "recent"
    if window > last - recent_windows - history_windows:
        return "earlier"
    return None


def population_trends(tracker: InterestTracker, recent_windows: int | None = None,
                      history_windows: int | None = None) -> list[dict[str, Any]]:
    """Every interest's trend across all users (rising first, then new, ..., gone)."""
    c = tracker.config
    rw = recent_windows or c.recent_windows
    hw = history_windows or c.history_windows
    windows = _window_counts(tracker)
    if not windows:
        return []
    last = max(windows)
    rec, bef = Counter[int](), Counter[int]()
    for w, counts in windows.items():
        period = window_period(w, last, rw, hw)
        if period == "recent":
            rec.update(counts)
        elif period == "earlier":
            bef.update(counts)
    n_r, n_b = sum(rec.values()), sum(bef.values())
    first = {}
    for w in sorted(windows):
        for u in windows[w]:
            first.setdefault(u, w)
    out = []
    for u in sorted(set(rec) | set(bef)):
        p_r = rec[u] / n_r if n_r else 0.0
        p_b = bef[u] / n_b if n_b else 0.0
        out.append({"name": tracker.space.names[u], "unit": u,
                    "trend": trend_of(bef[u], n_b, rec[u], n_r, c.alpha, first[u] > last - rw,
                                      c.min_change),
                    "recent_share": round(p_r, 5), "earlier_share": round(p_b, 5),
                    "change": round((p_r - p_b) / p_b, 4) if p_b else None,
                    "recent_events": rec[u]})
    order = {"rising": 0, "new": 1, "fading": 2, "gone": 3, "stable": 4}
    out.sort(key=lambda d: (order[d["trend"]], -abs(d["change"] or 0)))
    return out
