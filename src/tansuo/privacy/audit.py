"""The audit log: one JSON line per administrative action in ``<home>/logs/audit.jsonl``.

Each entry says when (``at``, ISO 8601 UTC), what (``action``: ``erase``, ``retrain``,
``retention``, ``reload``, ``key.create``, ``key.revoke``, ``pseudonym.rotate`` …), who
(``actor``: an API key id, or ``cli``), on what (``target``) and ``details`` (counts, versions).
It never holds secrets nor request bodies: detail fields whose name says they carry one
(``key``, ``secret``, ``token``, ``password``, ``body`` …) are written as ``[redacted]``.

Appends are safe from several processes at once: each entry is one ``write`` on a file opened
for appending, under an exclusive ``flock``, then flushed to disk (``fsync``), so entries are
never interleaved and an acknowledged action is never lost to a crash.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:  # POSIX; elsewhere O_APPEND alone keeps single writes whole
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["AuditLog", "REDACTED"]

REDACTED = "[redacted]"
_SECRET_NAMES = {"key", "secret", "token", "password", "passphrase", "authorization",
                 "api_key", "pseudonym_key", "body", "request_body", "raw", "credentials"}
_SECRET_SUFFIXES = ("_secret", "_token", "_password", "_body")


def _is_secret(name: str) -> bool:
    low = name.lower()
    return low in _SECRET_NAMES or low.endswith(_SECRET_SUFFIXES)


def _scrub(value: Any) -> Any:
    """``value`` with every secret-named field of a mapping (at any depth) redacted."""
    if isinstance(value, dict):
        return {str(k): REDACTED if _is_secret(str(k)) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def utc_now_iso() -> str:
    """Now as ISO 8601 UTC with milliseconds, e.g. ``2026-03-01T12:00:00.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    """Append-only record of administrative actions in one data directory."""

    def __init__(self, home: Path | str) -> None:
        self.path = Path(home) / "logs" / "audit.jsonl"

    def record(self, action: str, actor: str = "cli", target: str | None = None,
               details: dict[str, Any] | None = None) -> dict[str, Any]:
        """Append one entry and return it (as written)."""
        if not action:
            raise ValueError("an audit entry needs an action")
        entry = {"at": utc_now_iso(), "action": str(action), "actor": str(actor or "unknown"),
                 "target": None if target is None else str(target),
                 "details": _scrub(dict(details or {}))}
        line = (json.dumps(entry, default=str, ensure_ascii=False) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(line)
            while view:  # one write in practice; a short write (full disk …) finishes here
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)  # also releases the lock
        return entry

    def entries(self, limit: int | None = None, action: str | None = None
                ) -> list[dict[str, Any]]:
        """Entries oldest first; ``action`` keeps one action (``key`` also matches every
        ``key.*``); ``limit`` keeps the most recent ones. Unreadable lines are skipped."""
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be ≥ 0, got {limit}")
        if not self.path.exists():
            return []
        out = []
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if not isinstance(entry, dict):
                    continue
                name = str(entry.get("action", ""))
                if action is not None and name != action and not name.startswith(action + "."):
                    continue
                out.append(entry)
        if limit is not None:
            out = out[len(out) - limit:] if limit else []
        return out
