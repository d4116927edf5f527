"""Erasing one user, provably (``tansuo erase USER``).

:func:`erase_user` removes everything the data directory holds about one user id:

- their events in the store;
- quarantined (rejected) rows that name them: a row is removed when one of its fields *equals*
  the id (a JSON field, a CSV/TSV field, or a JSON string in a row too broken to parse), never
  because the id is a substring of another id;
- rejected rows and bot-user mentions quoted in the stored import reports;
- their lines in the served-slate log ``<home>/logs/served.jsonl`` (rewritten atomically);
- their rows in the bundled datasets' files kept in ``<home>/datasets`` (the synthetic shop's
  raw events and ground truth);

and adds the id to the store's ``erased_users`` list, so no model is ever trained on them again
and a running service forgets their profile (it follows the ``sync_erased`` marker). The id
goes on the list first: if the erasure is interrupted, the user is already out of training, and
running it again finishes the job (erasure is idempotent; an unknown user is erased with zero
counts and still recorded).

Each erasure writes a receipt, ``<home>/privacy/receipts/<UTC time>-<hash>.json``: the id, when,
who, what was removed where, a re-count afterwards (``remaining``, all zero when ``verified``),
and ``models_predating``: every trained model version older than the erasure. Those models were
trained while the user's events were in the store: their item-side parameters still carry the
user's influence (and user-factor models a row for the user) until they are retrained and
deleted. :func:`retrain_latest` retrains the latest model's kind and settings, seed included, on
the store as it is now, so the new version equals bit for bit a model trained on data that never
held the user; the receipt then names it in ``retrained``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tansuo.config import Settings
from tansuo.data.store import EventStore, open_store
from tansuo.models.registry import ModelRegistry
from tansuo.privacy.audit import AuditLog
from tansuo.privacy.policy import PrivacyError

__all__ = ["ErasureReceipt", "erase_user", "retrain_latest", "attach_retrain", "receipts",
           "mentions", "erased_users", "filter_log_lines", "write_atomically"]

_DELIMITERS = (",", "\t", ";", "|")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


@dataclass
class ErasureReceipt:
    """What one erasure removed, where, and which trained models predate it."""

    receipt_id: str
    user_id: str
    erased_at: str
    """ISO 8601 UTC."""
    actor: str
    """API key id, or ``cli``."""
    removed: dict[str, int]
    """Per place: events, quarantine_rows, import_report_rows, served_slates, dataset_rows."""
    remaining: dict[str, int]
    """The same places counted again after the erasure (all zero: nothing left)."""
    already_erased: bool
    """The id was on the erased list before (a repeated erasure)."""
    models_predating: list[str] = field(default_factory=list)
    """Model versions created before the erasure: they still carry the user's influence."""
    retrained: str | None = None
    """The version retrained without the user (``--retrain``), if any."""
    path: str | None = None

    @property
    def verified(self) -> bool:
        return not any(self.remaining.values())

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["verified"] = self.verified
        return doc


def receipts(home: Path | str) -> list[dict[str, Any]]:
    """Every erasure receipt of a data directory, oldest first."""
    folder = Path(home) / "privacy" / "receipts"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


# -- matching a user id in stored text ---------------------------------------------------------
def _same(value: Any, user_id: str) -> bool:
    if isinstance(value, str):
        return value.strip() == user_id
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return str(value) == user_id
    if isinstance(value, float):
        return value.is_integer() and str(int(value)) == user_id
    if isinstance(value, dict):
        return any(_same(v, user_id) for v in value.values())
    if isinstance(value, list):
        return any(_same(v, user_id) for v in value)
    return False


def mentions(raw: str | None, user_id: str) -> bool:
    """True if a stored raw row names ``user_id`` as a whole field: a field of a JSON object
    (or array), a field of a CSV/TSV/;/| separated line, or a JSON string in a broken row."""
    if not raw or not user_id:
        return False
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, ValueError):
        doc = None
    if isinstance(doc, dict | list):
        return _same(doc, user_id)
    for line in raw.splitlines():
        for delim in _DELIMITERS:
            if delim not in line and delim != ",":
                continue
            try:
                fields = next(csv.reader([line], delimiter=delim), [])
            except csv.Error:
                fields = line.split(delim)
            if any(f.strip().strip("\"'") == user_id for f in fields):
                return True
        for literal in _JSON_STRING.findall(line):
            try:
                if json.loads(literal).strip() == user_id:
                    return True
            except (json.JSONDecodeError, ValueError):
                continue
    return False


# -- files ---------------------------------------------------------------------------------------
def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, flush it, and swap it in."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)  # atomic on POSIX


def filter_log_lines(path: Path, drop: Callable[[dict[str, Any]], bool],
                     dry_run: bool = False) -> int:
    """Drop the JSON lines of ``path`` for which ``drop(record)`` is true (the file is rewritten
    atomically, and only if a line goes); returns how many lines were (or would be) dropped.
    Lines that are not JSON objects are kept."""
    if not path.exists():
        return 0
    kept: list[str] = []
    dropped = 0
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rec = None
            if isinstance(rec, dict) and drop(rec):
                dropped += 1
                continue
            kept.append(line if line.endswith("\n") else line + "\n")
    if dropped and not dry_run:
        text = "".join(kept).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        write_atomically(path, text)
    return dropped


def _scrub_csv(path: Path, user_id: str, dry_run: bool = False) -> int:
    """Remove the rows of a CSV file whose ``user_id`` column is the user; rows removed
    (``dry_run``: only counted)."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or "user_id" not in rows[0]:
        return 0
    col = rows[0].index("user_id")
    kept = [rows[0]] + [r for r in rows[1:] if not (len(r) > col and r[col] == user_id)]
    dropped = len(rows) - len(kept)
    if dropped and not dry_run:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(kept)
        write_atomically(path, buf.getvalue())
    return dropped


def _dataset_csvs(home: Path) -> list[Path]:
    return sorted((home / "datasets").glob("*/*.csv"))


# -- the store -------------------------------------------------------------------------------
def erased_users(store: EventStore) -> list[str]:
    """The store's erased-users list (kept as a JSON text in the ``erased_users`` meta key)."""
    return list(json.loads(store.get_meta("erased_users") or "[]"))


def _scrub_reports(store: EventStore, drop_row: Callable[[dict[str, Any]], bool],
                   drop_bot: Callable[[str], bool], only: Callable[[Any], bool] | None = None,
                   dry_run: bool = False) -> int:
    """Remove rejected rows quoted in the stored import reports (``first_rejected``) and
    bot-user ids they list (``bot_users``), for the imports ``only`` selects (default all);
    returns the number of quoted rows and ids removed (``dry_run``: only counted)."""
    removed = 0
    for row in store.imports().itertuples(index=False):
        if not row.report or (only is not None and not only(row)):
            continue
        try:
            doc = json.loads(row.report)
        except json.JSONDecodeError:
            continue
        if not isinstance(doc, dict):
            continue
        quoted = doc.get("first_rejected") or []
        bots = doc.get("bot_users") or []
        rows_left = [r for r in quoted if not (isinstance(r, dict) and drop_row(r))]
        bots_left = [u for u in bots if not drop_bot(str(u))]
        n = len(quoted) - len(rows_left) + len(bots) - len(bots_left)
        if n and not dry_run:
            store.set_import_report(int(row.import_id),
                                    {**doc, "first_rejected": rows_left, "bot_users": bots_left})
        removed += n
    return removed


def _sweep(store: EventStore, home: Path, user_id: str, dry_run: bool = False
           ) -> dict[str, int]:
    """Remove (``dry_run``: count) the user's data in every place, per place."""
    if dry_run:
        events = len(store.events(["user_id"], user_ids=[user_id]))
    else:
        events = store.delete_user(user_id)
    # the database narrows the rows down to those containing the id as text (unless JSON
    # would have escaped some of its characters); mentions() then wants a whole field
    plain = all(ch >= " " and ch not in '"\\' for ch in user_id)
    ids = [qid for qid, raw in store.quarantine_raw(containing=user_id if plain else None)
           if mentions(raw, user_id)]
    return {
        "events": events,
        "quarantine_rows": len(ids) if dry_run else store.delete_quarantine(ids),
        "import_report_rows": _scrub_reports(store, lambda r: mentions(r.get("raw"), user_id),
                                             lambda u: u == user_id, dry_run=dry_run),
        "served_slates": filter_log_lines(home / "logs" / "served.jsonl",
                                          lambda r: r.get("user_id") == user_id, dry_run),
        "dataset_rows": sum(_scrub_csv(p, user_id, dry_run) for p in _dataset_csvs(home)),
    }


def _write_receipt(receipt: ErasureReceipt, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(receipt.to_dict(), indent=2) + "\n")


def erase_user(store: EventStore, home: Path | str, user_id: str, actor: str = "cli"
               ) -> ErasureReceipt:
    """Remove everything about ``user_id`` (the id as stored: pseudonymised when
    pseudonymisation is on) and write a receipt; see the module docstring."""
    user_id = str(user_id)
    if not user_id.strip():
        raise PrivacyError("erase needs a user id; got an empty one")
    home = Path(home)
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%S%fZ")  # the registry's version time format
    predating = [str(v["version"]) for v in ModelRegistry(home).versions()
                 if str(v.get("created_at", "")) < stamp]
    # first: whatever happens next, no model trains on this user again (one atomic update, so
    # erasures running at the same time in several processes all stay on the list)
    before, _ = store.update_meta(
        "erased_users", lambda text: json.dumps(sorted(set(json.loads(text)) | {user_id})), "[]")
    already = user_id in json.loads(before)
    removed = _sweep(store, home, user_id)
    store.set_meta("sync_erased", uuid.uuid4().hex)  # a running service forgets the user
    remaining = _sweep(store, home, user_id, dry_run=True)
    at = started.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    body = {"user_id": user_id, "erased_at": at, "actor": actor, "removed": removed}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
    receipt_id = f"{stamp}-{digest}"
    path = home / "privacy" / "receipts" / f"{receipt_id}.json"
    receipt = ErasureReceipt(receipt_id, user_id, at, actor, removed, remaining, already,
                             predating, None, str(path))
    _write_receipt(receipt, path)
    AuditLog(home).record("erase", actor, user_id, {
        "receipt": receipt_id, "removed": removed, "verified": receipt.verified,
        "already_erased": already, "models_predating": len(predating)})
    return receipt


def attach_retrain(receipt: ErasureReceipt, version: str) -> ErasureReceipt:
    """The receipt with ``retrained`` set to ``version``, rewritten in place."""
    updated = replace(receipt, retrained=version)
    if receipt.path:
        _write_receipt(updated, Path(receipt.path))
    return updated


# -- retraining --------------------------------------------------------------------------------
def retrain_latest(home: Path | str, settings: Settings, actor: str = "cli",
                   reason: str | None = None) -> str:
    """Retrain the latest model's kind with its saved settings (seed included) on the store's
    events as they are now (erased users excluded), save it and make it the latest; returns the
    new version. If the latest model was measured with the yardstick (``tansuo train
    --evaluate``), the new one is too, so the service's reload can compare them.

    This mirrors ``tansuo train`` (cli/main.py ``train_cmd``) for a model read back from the
    registry instead of named on the command line."""
    from tansuo.evaluation.report import build_interactions, item_text_matrix, load_events
    from tansuo.models import MODELS
    from tansuo.models.base import TrainData

    home = Path(home)
    registry = ModelRegistry(home)
    latest = registry.latest()
    if latest is None:
        raise PrivacyError(f"no trained model in {registry.root} to retrain: nothing to do")
    meta = json.loads((registry.root / latest / "meta.json").read_text())
    cls = MODELS.get(meta["model"])
    if cls is None:
        raise PrivacyError(f"model {latest} is a {meta['model']!r}, which this version of "
                           "Tansuo does not know")
    cfg = cls.config_class.from_dict(meta["config"])
    with open_store(settings.resolved_database_url) as store:
        events, items, label = load_events(None, store, home)
    if events.empty:
        raise PrivacyError("no events left in the store to retrain on")
    inter = build_interactions(events, items)
    started = time.perf_counter()
    fresh = cls(cfg)
    text = (item_text_matrix(inter.items, items, home, settings.text_model)
            if fresh.wants_text() else None)
    extra: dict[str, Any] = {}
    if meta.get("yardstick"):
        from tansuo.evaluation.runner import yardstick

        measured = yardstick(cls(cfg), inter, text)
        if measured is not None:
            extra["yardstick"] = measured
    trained = fresh.fit(TrainData(inter, item_text=text))
    seconds = time.perf_counter() - started
    version = registry.save(trained, inter.users, inter.items,
                            {"dataset": label, "interactions": len(inter),
                             "train_seconds": round(seconds, 3), "retrained_from": latest,
                             **({"reason": reason} if reason else {}), **extra},
                            make_latest=True)
    AuditLog(home).record("retrain", actor, version, {
        "replaces": latest, "model": meta["model"], "interactions": len(inter),
        "train_seconds": round(seconds, 3), **({"reason": reason} if reason else {})})
    return version

