"""What is in the store: users, items, events by type and by day, sparsity, sequence lengths."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from tansuo.data.store import EventStore

__all__ = ["StoreStats", "daily_activity", "iso_utc", "store_stats"]


@dataclass
class StoreStats:
    users: int
    items: int
    """Items in the catalogue, or — when no catalogue was imported — items seen in events."""
    catalogue_items: int
    items_with_events: int
    events: int
    events_by_type: dict[str, int]
    events_by_day: dict[str, int]
    first_event: str | None
    last_event: str | None
    sparsity: float
    """1 − (distinct user-item pairs) / (users × items)."""
    sequence_length: dict[str, float]
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    dataset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def iso_utc(ms: int | None) -> str | None:
    """Epoch milliseconds as ISO 8601 UTC with a Z (None stays None)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def store_stats(store: EventStore) -> StoreStats:
    q = store._fetchall
    by_type = {str(t): int(n) for t, n in q("SELECT type, COUNT(*) FROM events GROUP BY type "
                                             "ORDER BY type")}
    by_day = {
        datetime.fromtimestamp(int(d) * 86400, tz=UTC).date().isoformat(): int(n)
        for d, n in q("SELECT ts / 86400000 AS d, COUNT(*) FROM events GROUP BY ts / 86400000 "
                      "ORDER BY d")
    }
    lengths = np.array([r[0] for r in q("SELECT COUNT(*) FROM events GROUP BY user_id")],
                       dtype=np.int64)
    first, last = q("SELECT MIN(ts), MAX(ts) FROM events")[0]
    catalogue = int(q("SELECT COUNT(*) FROM items")[0][0])
    with_events = int(q("SELECT COUNT(DISTINCT item_id) FROM events "
                        "WHERE item_id IS NOT NULL")[0][0])
    pairs = int(q("SELECT COUNT(*) FROM (SELECT DISTINCT user_id, item_id FROM events "
                  "WHERE item_id IS NOT NULL) p")[0][0])
    items = catalogue or with_events
    users = len(lengths)
    seq: dict[str, float] = {}
    if users:
        seq = {
            "min": int(lengths.min()), "p25": float(np.percentile(lengths, 25)),
            "median": float(np.median(lengths)), "p75": float(np.percentile(lengths, 75)),
            "p90": float(np.percentile(lengths, 90)), "max": int(lengths.max()),
            "mean": round(float(lengths.mean()), 2),
        }
    quarantined = {str(r): int(n) for r, n in q("SELECT reason, COUNT(*) FROM quarantine "
                                                 "GROUP BY reason ORDER BY reason")}
    return StoreStats(
        users=users,
        items=items,
        catalogue_items=catalogue,
        items_with_events=with_events,
        events=int(lengths.sum()) if users else 0,
        events_by_type=by_type,
        events_by_day=by_day,
        first_event=iso_utc(first),
        last_event=iso_utc(last),
        sparsity=round(1.0 - pairs / (users * items), 6) if users and items else 1.0,
        sequence_length=seq,
        quarantined_by_reason=quarantined,
        dataset=store.get_meta("dataset"),
    )


def daily_activity(store: EventStore, days: int | None = None) -> dict[str, Any]:
    """Per UTC day: events by type and distinct active users (the last ``days`` days of data
    when given), for charts."""
    q = store._fetchall
    where = ""
    params: list[Any] = []
    if days is not None:
        last = q("SELECT MAX(ts) FROM events")[0][0]
        if last is not None:
            where = " WHERE ts >= ?"
            params = [(int(last) // 86_400_000 - days + 1) * 86_400_000]
    by_type: dict[str, dict[str, int]] = {}
    for d, t, n in q(f"SELECT ts / 86400000 AS d, type, COUNT(*) FROM events{where} "
                     "GROUP BY ts / 86400000, type ORDER BY d", params):
        by_type.setdefault(str(t), {})[_day(d)] = int(n)
    active = {_day(d): int(n) for d, n in q(
        f"SELECT ts / 86400000 AS d, COUNT(DISTINCT user_id) FROM events{where} "
        "GROUP BY ts / 86400000 ORDER BY d", params)}
    return {"days": sorted(active), "events_by_type": by_type, "active_users": active}


def _day(d: Any) -> str:
    return datetime.fromtimestamp(int(d) * 86400, tz=UTC).date().isoformat()
