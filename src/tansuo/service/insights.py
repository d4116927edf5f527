"""What the dashboard shows, computed from a running :class:`~tansuo.service.engine.Engine`.

Every view is a plain JSON-able dict, also served under ``/v1/insights/...`` (``read`` scope):

- ``overview`` — events per day by type and active users per day (from the store), the
  population's rising and fading interests, segments, the model in service and the latest
  ``tansuo evaluate`` summary;
- ``users`` — user search by id prefix; ``user_events`` — a user's latest events with titles;
- ``item`` — an item's catalogue row, similar and complementary items and the segments that
  engage with it;
- ``exploration`` — click-through over time per serving policy, from the served-slate log
  joined with logged clicks, and off-policy estimates (IPW, SNIPS with bootstrap CIs) of the
  greedy and the logged policy on that traffic;
- ``evaluation`` — the latest ``tansuo evaluate`` report as written to
  ``<home>/reports/evaluate-latest.json``.

Aggregates over all users (segments, trends, daily counts) are computed on a snapshot taken
under the engine's lock and cached for ``ttl`` seconds, so a dashboard visit never holds up
recommendations for longer than the snapshot copy.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tansuo.data.stats import iso_utc
from tansuo.data.store import EventStore, open_store

__all__ = ["Insights", "latest_evaluation_path"]

_CLICKS = ("click", "cart", "purchase", "favorite")


def latest_evaluation_path(home: Path) -> Path:
    """Where ``tansuo evaluate`` leaves its latest report for the dashboard."""
    return Path(home) / "reports" / "evaluate-latest.json"


class Insights:
    def __init__(self, engine: Any, ttl: float = 60.0) -> None:
        self.engine = engine
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Any]] = {}
        self._lock = threading.RLock()
        self._store: EventStore | None = None

    # -- plumbing ------------------------------------------------------------------------------
    def _reader(self) -> EventStore:
        """A connection of our own: reads never interleave with the engine's writes."""
        if self._store is None:
            self._store = open_store(self.engine.settings.resolved_database_url)
        return self._store

    def _cached(self, key: str, compute: Callable[[], Any]) -> Any:
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and time.monotonic() - hit[0] < self.ttl:
                return hit[1]
            value = compute()
            self._cache[key] = (time.monotonic(), value)
            return value

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()

    def _snapshot(self) -> Any:
        """A copy of the tracker's per-user interest weights and windows (what segments and
        trends read), taken under the engine lock."""
        from tansuo.interests.profile import InterestTracker, UserState

        tracker = self.engine.tracker
        if tracker is None:
            return None
        with self.engine.lock:
            copy = InterestTracker(tracker.space, tracker.config, tracker.vocabulary)
            copy.users = {u: UserState(u, unit_weight=dict(st.unit_weight),
                                       windows={w: dict(c) for w, c in st.windows.items()})
                          for u, st in tracker.users.items()}
            history = {u: list(rows) for u, rows in self.engine.history.items()}
        return copy, history

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- views ---------------------------------------------------------------------------------
    def activity(self, days: int | None = 90) -> dict[str, Any]:
        from tansuo.data.stats import daily_activity

        return self._cached(f"activity:{days}", lambda: daily_activity(self._reader(), days))

    def _segments_raw(self) -> Any:
        from tansuo.interests.segments import segment_users

        def compute() -> Any:
            snap = self._snapshot()
            if snap is None:
                return None
            tracker, history = snap
            try:
                seg = segment_users(tracker)
            except ValueError:
                return None
            return seg, history
        return self._cached("segments", compute)

    def segments(self) -> dict[str, Any]:
        raw = self._segments_raw()
        if raw is None:
            return {"k": 0, "segments": [], "note": "fewer than 2 users with interests"}
        return raw[0].to_dict()

    def trends(self, limit: int = 10) -> dict[str, Any]:
        from tansuo.interests.segments import population_trends

        def compute() -> list[dict[str, Any]]:
            snap = self._snapshot()
            return [] if snap is None else population_trends(snap[0])
        rows = self._cached("trends", compute)
        return {"rising": [r for r in rows if r["trend"] in ("rising", "new")][:limit],
                "fading": [r for r in rows if r["trend"] in ("fading", "gone")][:limit],
                "window_days": self.engine.tracker.config.window_days
                if self.engine.tracker is not None else None}

    def model(self) -> dict[str, Any]:
        meta = self.engine.model_meta or {}
        return {"version": self.engine.model_version, "model": meta.get("model"),
                "created_at": meta.get("created_at"), "users": meta.get("users"),
                "items": meta.get("items"), "yardstick": meta.get("yardstick")}

    def evaluation(self) -> dict[str, Any] | None:
        path = latest_evaluation_path(self.engine.home)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None

    def evaluation_summary(self) -> dict[str, Any] | None:
        report = self.evaluation()
        if not report:
            return None
        models = {}
        for name, r in (report.get("models") or {}).items():
            metrics = r.get("metrics") or {}
            ci = r.get("ci") or {}
            models[name] = {"ndcg@10": metrics.get("ndcg@10"), "ci": ci.get("ndcg@10"),
                            "hr@10": metrics.get("hr@10")}
        return {"dataset": report.get("dataset"), "protocol": report.get("protocol"),
                "models": models}

    def overview(self) -> dict[str, Any]:
        eng = self.engine
        health = eng.health()
        return {"health": health, "activity": self.activity(),
                "trends": self.trends(), "segments": self.segments(), "model": self.model(),
                "evaluation": self.evaluation_summary(), "private": self.private(),
                "counters": {k: int(v) for k, v in eng.counters.items()}}

    # -- differentially private releases ---------------------------------------------------
    def private(self) -> dict[str, Any]:
        """Segment sizes, interest trend counts and popular items released through OpenDP
        (:mod:`tansuo.privacy.dp`). Each release is kept in ``<home>/privacy/releases`` and
        shown again for ``dp_release_hours`` at no cost; only a new release spends budget."""
        from tansuo.privacy.dp import PrivacyBudget

        budget = PrivacyBudget.from_settings(self.engine.settings)
        out = {"segments": self._released("segment-sizes", self._dp_segments, budget),
               "trends": self._released("interest-trends", self._dp_trends, budget),
               "popular": self._released("popular-items", self._dp_popular, budget)}
        out["budget"] = {"spent": round(budget.spent, 6), "total": budget.total_epsilon,
                         "remaining": round(budget.remaining, 6),
                         "per_release": self.engine.settings.dp_epsilon}
        return out

    def _released(self, slug: str, make: Callable[[Any], dict[str, Any]], budget: Any
                  ) -> dict[str, Any]:
        from tansuo.privacy.dp import BudgetExhausted

        path = self.engine.home / "privacy" / "releases" / f"{slug}.json"
        with self._lock:
            old = json.loads(path.read_text()) if path.exists() else None
            age_h = (time.time() - old["released_at"]) / 3600 if old else None
            if old and age_h is not None and age_h < self.engine.settings.dp_release_hours:
                return old
            try:
                doc = make(budget)
            except BudgetExhausted as exc:
                if old:
                    return {**old, "note": f"{exc} — showing the release of "
                                           f"{iso_utc(int(old['released_at'] * 1000))}"}
                return {"values": {}, "note": str(exc)}
            doc["released_at"] = time.time()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc))
            tmp.replace(path)
            return doc

    def _dp_segments(self, budget: Any) -> dict[str, Any]:
        from tansuo.privacy.dp import dp_segment_sizes

        raw = self._segments_raw()
        if raw is None:
            return {"values": {}, "note": "fewer than 2 users with interests"}
        seg = raw[0]
        rel = dp_segment_sizes(seg.labels.tolist(), self.engine.settings.dp_epsilon, budget,
                               domain=range(seg.k), label="segment sizes")
        names = {str(s["segment"]): ", ".join(t["name"] for t in s["top_interests"][:2])
                 for s in seg.segments}
        return {**rel.to_dict(), "names": names}

    def _dp_trends(self, budget: Any) -> dict[str, Any]:
        """Noisy events per interest in the recent and the earlier windows (one release over
        both periods), and each interest's trend decided on the noisy counts."""
        from tansuo.interests.profile import trend_of
        from tansuo.interests.segments import window_period
        from tansuo.privacy.dp import dp_interest_counts

        snap = self._snapshot()
        if snap is None:
            return {"values": {}, "rows": []}
        tracker = snap[0]
        c = tracker.config
        windows = [w for st in tracker.users.values() for w in st.windows]
        if not windows:
            return {"values": {}, "rows": []}
        last = max(windows)
        users, keys = [], []
        for u, st in tracker.users.items():
            for w, counts in st.windows.items():
                period = window_period(w, last, c.recent_windows, c.history_windows)
                if period is None:
                    continue
                for unit, n in counts.items():
                    users += [u] * n
                    keys += [f"{period}:{unit}"] * n
        names = tracker.space.names
        domain = [f"{p}:{u}" for p in ("recent", "earlier") for u in range(len(names))]
        rel = dp_interest_counts(users, keys, self.engine.settings.dp_epsilon, budget,
                                 max_interests_per_user=10, max_per_interest=10, domain=domain,
                                 label="interest trend counts")
        v = rel.values
        n_r = sum(v[f"recent:{u}"] for u in range(len(names)))
        n_b = sum(v[f"earlier:{u}"] for u in range(len(names)))
        rows = []
        for u, name in enumerate(names):
            r, b = v[f"recent:{u}"], v[f"earlier:{u}"]
            if r == 0 and b == 0:
                continue
            trend = trend_of(b, n_b, r, n_r, c.alpha, False, c.min_change) if n_b and n_r \
                else "stable"
            rows.append({"name": name, "recent": r, "earlier": b, "trend": trend})
        rows.sort(key=lambda x: -x["recent"])
        return {**rel.to_dict(), "values": {}, "rows": rows}

    def _dp_popular(self, budget: Any) -> dict[str, Any]:
        """Noisy distinct shoppers per item over the last 7 days of data."""
        from tansuo.privacy.dp import dp_popular_items

        store = self._reader()
        last = store._fetchall("SELECT MAX(ts) FROM events")[0][0]
        if last is None:
            return {"values": {}, "items": []}
        rows = store._fetchall("SELECT user_id, item_id FROM events WHERE ts >= ? AND "
                               "item_id IS NOT NULL", (int(last) - 7 * 86_400_000,))
        rel = dp_popular_items([r[0] for r in rows], [r[1] for r in rows],
                               self.engine.settings.dp_epsilon, budget, max_items_per_user=20,
                               top=10, domain=self.engine.tracker.space.item_ids
                               if self.engine.tracker is not None else None,
                               label="popular items (7 days)")
        titles = self.engine.titles
        return {**rel.to_dict(), "items": [{"item_id": i, "title": titles.get(i), "users": n}
                                           for i, n in rel.values.items()]}

    def users(self, prefix: str = "", limit: int = 20) -> dict[str, Any]:
        tracker = self.engine.tracker
        if tracker is None:
            return {"users": [], "total": 0}
        with self.engine.lock:
            ids = [u for u in tracker.users if u.startswith(prefix)]
            ids.sort()
            rows = [{"user_id": u, "events": tracker.users[u].events,
                     "last_seen": iso_utc(tracker.users[u].last_ts)} for u in ids[:limit]]
        return {"users": rows, "total": len(ids)}

    def user_events(self, user: str, limit: int = 20) -> dict[str, Any]:
        from tansuo.service.engine import ServiceError

        tracker = self.engine.tracker
        user = self.engine.privacy.lookup(user)
        if tracker is None or user not in tracker.users:
            raise ServiceError(404, f"unknown user {user!r}: no events for this user id",
                               "user_id")
        space = tracker.space
        with self.engine.lock:
            recent = list(tracker.users[user].recent)[-limit:][::-1]
        titles = self.engine.titles
        out = []
        for ts, row, typ, unit in recent:
            item = space.item_ids[row] if row >= 0 else None
            out.append({"timestamp": iso_utc(ts), "type": typ, "item_id": item,
                        "title": titles.get(item) if item else None,
                        "interest": space.names[unit] if unit >= 0 else None})
        return {"user_id": user, "events": out}

    def item(self, item_id: str, k: int = 10) -> dict[str, Any]:
        from tansuo.service.engine import ServiceError

        eng = self.engine
        items = eng.items
        row = items[items["item_id"].astype(str) == item_id] if items is not None else None
        if row is None or row.empty:
            raise ServiceError(404, f"unknown item {item_id!r}", "item_id")
        rec = {k2: (None if isinstance(v, float) and np.isnan(v) else v)
               for k2, v in row.iloc[0].to_dict().items()}
        titles = self.engine.titles
        similar = [{**s, "title": titles.get(s["item_id"])} for s in eng.similar(item_id, k)]
        together = [{**c, "title": titles.get(c["item_id"])}
                    for c in eng.complementary(item_id, k)]
        space = eng.tracker.space
        r = int(space.rows([item_id])[0])
        events = int(eng.item_events[r]) if 0 <= r < len(eng.item_events) else 0
        return {"item": {k2: (str(v) if v is not None and not isinstance(
                    v, (str, int, float, bool, dict, list)) else v) for k2, v in rec.items()},
                "interest": space.names[space.unit_of[r]] if r >= 0 and space.unit_of[r] >= 0
                else None,
                "events": events, "similar": similar, "complementary": together,
                "segments": self._item_segments(r)}

    def _item_segments(self, row: int) -> list[dict[str, Any]]:
        """How many users of each segment have the item in their history."""
        raw = self._segments_raw()
        if raw is None or row < 0:
            return []
        seg, history = raw
        label = dict(zip(seg.users, seg.labels.tolist(), strict=True))
        counts: Counter[int] = Counter()
        for user, rows in history.items():
            if user in label and row in rows:
                counts[label[user]] += 1
        sizes = Counter(seg.labels.tolist())
        names = {s["segment"]: ", ".join(t["name"] for t in s["top_interests"][:2])
                 for s in seg.segments}
        return [{"segment": s, "label": names.get(s, ""), "users": n,
                 "share_of_segment": round(n / sizes[s], 4) if sizes[s] else 0.0}
                for s, n in counts.most_common()]

    def exploration(self, n_boot: int = 300) -> dict[str, Any]:
        return self._cached(f"exploration:{n_boot}", lambda: self._exploration(n_boot))

    def _exploration(self, n_boot: int) -> dict[str, Any]:
        from tansuo.exploration.served import evaluate_served, load_served

        path = self.engine.served_log
        if not path.exists():
            return {"series": [], "estimates": {}, "requests": 0,
                    "note": "no slates served yet"}
        clicks = self._reader().events(["request_id", "position", "type"])
        clicked = set()
        if len(clicks):
            c = clicks[clicks["type"].isin(_CLICKS) & clicks["request_id"].notna()
                       & clicks["position"].notna()]
            clicked = {(str(r), int(p)) for r, p in zip(c["request_id"], c["position"],
                                                        strict=True)}
        # click-through per time bucket (hours when the log spans < 3 days, else days) and
        # serving policy (strategy + explore)
        slates = []
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                slates.append((int(rec["ts"]), f"{rec['strategy']} (explore {rec['explore']:g})",
                               len(rec["items"]), str(rec["request_id"])))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
        span = (max(s[0] for s in slates) - min(s[0] for s in slates)) if slates else 0
        bucket_ms, bucket = (3_600_000, "hour") if span < 3 * 86_400_000 else (86_400_000,
                                                                                "day")
        shown: Counter[tuple[str, int]] = Counter()
        hits: Counter[tuple[str, int]] = Counter()
        for ts, policy, n, rid in slates:
            key = (policy, ts // bucket_ms * bucket_ms)
            shown[key] += n
            hits[key] += sum((rid, p) in clicked for p in range(n))
        series: dict[str, dict[str, list[Any]]] = {}
        for (policy, start) in sorted(shown, key=lambda x: x[1]):
            if not shown[(policy, start)]:
                continue  # only empty slates (everything filtered out): no click-through
            s = series.setdefault(policy, {"times": [], "ctr": [], "shown": [], "clicks": []})
            s["times"].append(iso_utc(start))
            s["shown"].append(shown[(policy, start)])
            s["clicks"].append(hits[(policy, start)])
            s["ctr"].append(round(hits[(policy, start)] / shown[(policy, start)], 5))
        estimates: dict[str, Any] = {}
        try:
            log = load_served(path, clicks)
            for target in ("logged", "greedy"):
                est = evaluate_served(log, target, n_boot=n_boot)
                estimates[target] = {name: {"value": e.value, "low": e.ci_low, "high": e.ci_high}
                                     for name, e in est.items()}
            requests = log.requests
        except ValueError as exc:
            return {"series": [{"policy": k, **v} for k, v in series.items()],
                    "bucket": bucket, "estimates": {}, "requests": 0, "note": str(exc)}
        return {"series": [{"policy": k, **v} for k, v in series.items()], "bucket": bucket,
                "estimates": estimates, "requests": requests,
                "clicks": int(log.reward.sum()), "slots": int(log.rounds)}
