"""Retention: purge what is older than a set number of days (``tansuo retention apply``).

:func:`apply_retention` removes, with ``cutoff = now − days``:

- events whose timestamp is before the cutoff (an event exactly at the cutoff stays);
- served-slate log lines (``<home>/logs/served.jsonl``) written before it;
- quarantined rows quarantined before it, and the rejected rows and bot-user ids quoted in the
  reports of imports started before it.

Interest profiles are not stored: the service derives them from the events. A retention run
sets the store's ``sync_retention`` marker, and every running service worker rebuilds its
profiles from the remaining events before its next request (the serving model is kept). Models
trained before the purge still carry the purged events' influence until they are retrained.
A dry run counts without changing anything (and is not written to the audit log).
"""

from __future__ import annotations

import numbers
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tansuo.data.store import EventStore
from tansuo.privacy.audit import AuditLog
from tansuo.privacy.erasure import _scrub_reports, filter_log_lines
from tansuo.privacy.policy import PrivacyError

__all__ = ["RetentionReport", "apply_retention"]

_MS_PER_DAY = 86_400_000
NOTE = ("interest profiles are derived from the events: a running service rebuilds them "
        "without the purged events before its next request; models trained before the purge "
        "keep their influence until retrained")


@dataclass
class RetentionReport:
    """What a retention run removed (or, on a dry run, would remove)."""

    days: float
    cutoff: str
    """ISO 8601 UTC: everything before this instant is purged."""
    cutoff_ms: int
    dry_run: bool
    events: int
    served_slates: int
    quarantine_rows: int
    import_report_rows: int
    note: str = NOTE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _before(value: Any, cutoff_ms: int) -> bool:
    """A number of epoch ms before the cutoff (anything else: not known to be old)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and value == value and value < cutoff_ms)


def apply_retention(store: EventStore, home: Path | str, days: float,
                    now_ms: int | None = None, dry_run: bool = False,
                    actor: str = "cli") -> RetentionReport:
    """Purge everything older than ``days`` days before ``now_ms`` (default: now)."""
    if not days or days <= 0:
        raise PrivacyError(f"retention needs a positive number of days, got {days!r}")
    home = Path(home)
    now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
    cutoff = now_ms - round(float(days) * _MS_PER_DAY)
    cutoff_iso = datetime.fromtimestamp(cutoff / 1000, UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")
    report = RetentionReport(
        days=float(days), cutoff=cutoff_iso, cutoff_ms=cutoff, dry_run=dry_run,
        events=store.delete_before(cutoff, dry_run=dry_run),
        served_slates=filter_log_lines(home / "logs" / "served.jsonl",
                                       lambda r: _before(r.get("ts"), cutoff), dry_run),
        quarantine_rows=store.delete_quarantine(created_before=cutoff, dry_run=dry_run),
        import_report_rows=_scrub_reports(store, lambda r: True, lambda u: True,
                                          only=lambda row: _before(row.started_at, cutoff),
                                          dry_run=dry_run),
    )
    if not dry_run:
        store.set_meta("sync_retention", uuid.uuid4().hex)  # running services rebuild profiles
        details = report.to_dict()
        for k in ("note", "dry_run"):
            details.pop(k)
        AuditLog(home).record("retention", actor, f"before {cutoff_iso}", details)
    return report
