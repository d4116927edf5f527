"""The records Tansuo stores: behaviour events and catalogue items.

Events and items are plain frozen dataclasses for the Python API; bulk paths move them as
pandas/Arrow columns with exactly the field names below (``EVENT_COLUMNS``, ``ITEM_COLUMNS``).
Timestamps are stored as integer milliseconds since the Unix epoch, UTC.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "EVENT_COLUMNS",
    "ITEM_COLUMNS",
    "DEFAULT_EVENT_WEIGHTS",
    "Event",
    "EventType",
    "Item",
    "derive_event_id",
    "ms_to_datetime",
    "datetime_to_ms",
]


class EventType(enum.StrEnum):
    """What a user did. ``dislike`` is an explicit "not interested": a negative signal."""

    VIEW = "view"
    CLICK = "click"
    SEARCH = "search"
    CART = "cart"
    PURCHASE = "purchase"
    REVIEW = "review"
    FAVORITE = "favorite"
    DISLIKE = "dislike"


#: Default strength of each event type in the user×item interaction matrix.
#: A purchase counts more than a view; a dislike is negative. Override with
#: ``TANSUO_EVENT_WEIGHTS`` (JSON) or :class:`tansuo.config.Settings`.
DEFAULT_EVENT_WEIGHTS: Mapping[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "search": 0.0,
    "cart": 4.0,
    "purchase": 8.0,
    "review": 5.0,
    "favorite": 4.0,
    "dislike": -5.0,
}

#: Column order of an event table (store, Arrow batches, exports).
EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "user_id",
    "item_id",
    "type",
    "timestamp",
    "dwell_seconds",
    "query",
    "quantity",
    "amount",
    "rating",
    "text",
    "request_id",
    "position",
)

ITEM_COLUMNS: tuple[str, ...] = (
    "item_id",
    "title",
    "category",
    "brand",
    "price",
    "description",
    "attributes",
    "created_at",
)

# Fields that make an event "the same event" when no event_id is given.
_IDENTITY_FIELDS = ("user_id", "item_id", "type", "timestamp", "query", "request_id", "position")


def derive_event_id(
    user_id: str,
    item_id: str | None,
    type: str,
    timestamp: int,
    query: str | None = None,
    request_id: str | None = None,
    position: int | None = None,
) -> str:
    """Deterministic id for an event that arrived without one, so re-imports dedupe.

    The id is ``d:`` + the timestamp (11 hex digits of epoch ms, so ids of a time-ordered log
    arrive in index order and bulk inserts stay fast) + a 128-bit BLAKE2b digest of the
    identity fields. The ``d:`` prefix keeps it apart from caller-supplied ids.
    """
    parts = (user_id, item_id, type, timestamp, query, request_id, position)
    key = "\x1f".join("" if p is None else str(p) for p in parts)
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=16).hexdigest()
    return f"d:{timestamp & _TS_MASK:011x}{digest}"


_TS_MASK = (1 << 44) - 1


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)


def datetime_to_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(round(dt.timestamp() * 1000))


@dataclass(frozen=True, slots=True)
class Event:
    """One behaviour event. ``timestamp`` is epoch milliseconds, UTC."""

    user_id: str
    type: EventType
    timestamp: int
    item_id: str | None = None
    event_id: str | None = None
    dwell_seconds: float | None = None
    query: str | None = None
    quantity: int | None = None
    amount: float | None = None
    rating: float | None = None
    text: str | None = None
    request_id: str | None = None
    position: int | None = None

    @property
    def id(self) -> str:
        """The stored id: the given ``event_id`` or the derived one."""
        if self.event_id:
            return self.event_id
        return derive_event_id(
            self.user_id,
            self.item_id,
            str(self.type),
            self.timestamp,
            self.query,
            self.request_id,
            self.position,
        )

    @property
    def time(self) -> datetime:
        return ms_to_datetime(self.timestamp)

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["type"] = str(self.type)
        row["event_id"] = self.id
        return {c: row[c] for c in EVENT_COLUMNS}


@dataclass(frozen=True, slots=True)
class Item:
    """One catalogue item. ``category`` is a path such as ``Sports > Running > Shoes``."""

    item_id: str
    title: str | None = None
    category: str | None = None
    brand: str | None = None
    price: float | None = None
    description: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    created_at: int | None = None

    @property
    def category_path(self) -> list[str]:
        return split_category(self.category)

    def to_row(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in ITEM_COLUMNS}


def split_category(category: str | None) -> list[str]:
    """``"Sports > Running > Shoes"`` → ``["Sports", "Running", "Shoes"]`` (``/`` and ``|`` too)."""
    if not category:
        return []
    for sep in (">", "/", "|"):
        if sep in category:
            return [p.strip() for p in category.split(sep) if p.strip()]
    return [category.strip()]
