"""Rotating the pseudonymisation key without re-importing (``tansuo keys rotate-pseudonym``).

Every stored user id ``p`` becomes ``f_new(p)`` (see :mod:`tansuo.privacy.pseudonym`): in the
events (with their ``key_id``), the quarantine and import reports, the erased-users list, the
served-slate log, the trained models' user vocabularies and the synthetic shop's ground
truth. A store that was not pseudonymised yet is pseudonymised in place the same way (its raw
ids are the ``p`` of step zero); quarantined rows that cannot be parsed lose their text, since
a raw id could be anywhere in them. The events, quarantine, reports and metadata change in one
transaction; files are rewritten atomically after it. A running service must be restarted with
the new ring (it refuses the store otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tansuo.data.store import EventStore
from tansuo.privacy.erasure import write_atomically
from tansuo.privacy.policy import WITHHELD, PrivacyError
from tansuo.privacy.pseudonym import Pseudonymizer

__all__ = ["RotationReport", "rotate_pseudonyms"]


@dataclass
class RotationReport:
    previous_key_id: str | None
    key_id: str
    users: int
    events: int
    quarantine_rows: int
    served_slates: int
    models: int
    files: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _map_json(raw: str | None, mapping: dict[str, str]) -> str | None:
    """A quarantined row (JSON object) with every value that is a stored user id mapped."""
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError:
        return WITHHELD
    if not isinstance(doc, dict):
        return WITHHELD
    return json.dumps({k: mapping.get(v, v) if isinstance(v, str) else v
                       for k, v in doc.items()})


def rotate_pseudonyms(store: EventStore, home: Path, current: Pseudonymizer | None,
                      new_key: str) -> tuple[Pseudonymizer, RotationReport]:
    """Re-key everything stored under ``current`` (None: raw ids) to the ring + ``new_key``."""
    stored_id = store.get_meta("pseudonym_key_id")
    if current is None and stored_id is not None:
        raise PrivacyError(f"the store is pseudonymised (key id {stored_id}): configure its "
                           "current ring (TANSUO_PSEUDONYM_KEY) to rotate it")
    if current is not None and stored_id is not None and stored_id != current.key_id:
        raise PrivacyError(f"the configured ring (key id {current.key_id}) is not the store's "
                           f"(key id {stored_id})")
    ring = current.rotated(new_key) if current is not None else Pseudonymizer([new_key])
    step: Callable[[str], str] = ring.rekey if current is not None else ring
    users = [str(r[0]) for r in store._fetchall("SELECT DISTINCT user_id FROM events")]
    mapping = {u: step(u) for u in users}
    erased = json.loads(store.get_meta("erased_users") or "[]")
    mapping.update({u: step(u) for u in erased if u not in mapping})
    quarantined = 0
    with store.transaction() as cur:
        q = store._q
        cur.executemany(q("UPDATE events SET user_id = ?, key_id = ? WHERE user_id = ?"),
                        [(new, ring.key_id, old) for old, new in mapping.items()])
        cur.execute(q("SELECT COUNT(*) FROM events"))
        events = int(cur.fetchone()[0])
        cur.execute(q("SELECT id, raw FROM quarantine WHERE kind = 'events'"))
        rows = cur.fetchall()
        updates = [(_map_json(raw, mapping), rid) for rid, raw in rows]
        cur.executemany(q("UPDATE quarantine SET raw = ? WHERE id = ?"), updates)
        quarantined = len(updates)
        cur.execute(q("SELECT import_id, report FROM imports WHERE kind = 'events'"))
        reports = []
        for iid, text in cur.fetchall():
            if not text:
                continue
            doc = json.loads(text)
            doc["bot_users"] = [mapping.get(u, step(u)) for u in doc.get("bot_users") or []]
            for r in doc.get("first_rejected") or []:
                if "raw" in r:
                    r["raw"] = _map_json(r["raw"], mapping)
            reports.append((json.dumps(doc), iid))
        cur.executemany(q("UPDATE imports SET report = ? WHERE import_id = ?"), reports)
        for key, value in (("pseudonym_key_id", ring.key_id),
                           ("erased_users", json.dumps(sorted(mapping[u] for u in erased)))):
            cur.execute(q("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO "
                          "UPDATE SET value = excluded.value"), (key, json.dumps(value)))
    home = Path(home)
    slates = 0
    served = home / "logs" / "served.jsonl"
    if served.exists():
        def rekey_log(text: str) -> str:
            nonlocal slates
            out = []
            for line in text.splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                rec["user_id"] = mapping.get(rec.get("user_id"), step(str(rec.get("user_id"))))
                slates += 1
                out.append(json.dumps(rec) + "\n")
            return "".join(out)
        write_atomically(served, rekey_log(served.read_text()))
    models = 0
    for vocab in sorted((home / "models").glob("*/vocab.npz")):
        with np.load(vocab) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["users"] = np.array([mapping.get(u, step(u)) for u in arrays["users"].tolist()],
                                   dtype=str)
        tmp = vocab.with_name(".vocab.tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(vocab)
        models += 1
    files = 0
    shop = home / "datasets" / "synthetic-shop"
    for name in ("truth_interests.csv", "truth_shifts.csv"):
        path = shop / name
        if path.exists():
            truth = pd.read_csv(path, dtype={"user_id": str})
            truth["user_id"] = [mapping.get(u, step(u)) for u in truth["user_id"]]
            write_atomically(path, truth.to_csv(index=False))
            files += 1
    raw_events = shop / "events.csv"
    if current is None and raw_events.exists():  # the raw ids' last copy in the data directory
        raw_events.unlink()
        files += 1
    return ring, RotationReport(stored_id, ring.key_id, len(mapping), events, quarantined,
                                slates, models, files)
