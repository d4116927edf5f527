"""The serving engine: store, trained model, interest tracker and slate policy behind one object.

The HTTP layer (:mod:`tansuo.service.app`) is a thin shell around :class:`Engine`, which can
also be used directly from Python. State changes (events, items, erasure, model swap) and reads
are serialised by one lock; a request never sees a half-applied change.

Scoring a user (``recommend``):

1. candidate scores — the latest trained model's scores for the user's history when the model
   knows the items; items it does not know (added after training) and all items when there is
   no model are scored by the cosine of the user's interest vector (long-term + short-term,
   text space) with the item's vector, put on the model's scale (matched mean and spread);
   an unknown user gets **trending** scores (events of the last 7 days of data, time-decayed);
2. context — ``item:ID`` blends in similarity to that item, ``search:QUERY`` keeps the 200 items
   nearest to the query in text space and ranks them by the user's scores plus the similarity;
3. filters — category prefix, explicit exclusions, items seen (unless ``exclude_seen=false``)
   and items the user disliked (always);
4. the slate policy (:mod:`tansuo.exploration.policy`) picks k items with propensities;
5. reasons — the interest tag and the user's past items in it, ``exploring: <interest>`` for an
   explored slot, or ``popular now`` for a cold-start slate.

Every served slate is appended to ``<home>/logs/served.jsonl`` (request id, user, time, items,
positions, propensities, model version) so logged clicks (events with ``request_id`` and
``position``) support off-policy evaluation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import operator
import os
import sys
import threading
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from tansuo.config import Settings
from tansuo.data.schema import ITEM_COLUMNS
from tansuo.data.store import EventStore, open_store
from tansuo.errors import ConfigError, TansuoError
from tansuo.exploration.policy import PolicyConfig, SlatePolicy, UserContext

__all__ = ["Engine", "ServiceError", "Recommendation"]

_MS_DAY = 86_400_000
_COLUMNS = ("user_id", "item_id", "type", "timestamp", "dwell_seconds", "amount", "query",
            "request_id", "position")
_POSITIVE = ("click", "cart", "purchase", "favorite")
#: the fields `_fold` reads, by name, from a row of `_COLUMNS` (whatever their order there)
_FOLD_FIELDS = operator.itemgetter(*(_COLUMNS.index(c) for c in (
    "user_id", "item_id", "type", "timestamp", "dwell_seconds", "amount", "query",
    "request_id", "position")))
_SERVED_KEPT = 200_000


class ServiceError(TansuoError):
    """A request the engine cannot serve: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


@dataclass
class Recommendation:
    request_id: str
    model_version: str | None
    strategy: str
    explore: float
    items: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "model_version": self.model_version,
                "strategy": self.strategy, "explore": self.explore, "items": self.items}


class Engine:
    """Everything a request needs, loaded once and updated in place."""

    def __init__(self, settings: Settings | None = None, policy: PolicyConfig | None = None,
                 progress: bool = False) -> None:
        self.settings = settings or Settings()
        self.policy_config = policy or PolicyConfig()
        self.progress = progress
        self.lock = threading.RLock()
        self.write_lock = threading.Lock()
        self.home = Path(self.settings.home)
        self.home.mkdir(parents=True, exist_ok=True)
        from tansuo.privacy.policy import PrivacyPolicy, check_store_key

        self.privacy = PrivacyPolicy.from_settings(self.settings)
        if self.settings.mode == "production" and self.privacy.pseudonymizer is None:
            raise ConfigError("production mode needs a pseudonymisation key: set "
                              "TANSUO_PSEUDONYM_KEY or TANSUO_PSEUDONYM_KEY_FILE (user ids are "
                              "never stored raw in production)")
        self.store: EventStore = open_store(self.settings.resolved_database_url)
        check_store_key(self.store, self.privacy.pseudonymizer)
        from tansuo.data.importer import ImportOptions

        # built once: its cleaning settings read the environment (~1 ms a batch otherwise)
        self._import_options = ImportOptions(privacy=self.privacy)
        self.served_log = self.home / "logs" / "served.jsonl"
        self._log_file: Any = None
        self.started = time.time()
        self.model: Any = None
        self._trained: Any = None
        self.model_version: str | None = None
        self.model_meta: dict[str, Any] = {}
        self._model_rows: np.ndarray | None = None
        # One BLAS (and torch) thread per request: a 3,000 × 384 product takes ~0.15 ms on one
        # thread and ~8 ms when two threads fight other requests for two cores.
        from threadpoolctl import threadpool_limits

        self._threads = threadpool_limits(limits=self.settings.serve_threads, user_api="blas")
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(self.settings.serve_threads)
        self.counters: dict[str, float] = defaultdict(float)
        #: user → interest unit → [clicks, shows] on served slates (interest posteriors)
        self._posteriors: dict[str, dict[int, list[float]]] = defaultdict(dict)
        #: request id → (user, unit per position, positions already credited)
        self._served: OrderedDict[str, tuple[str, list[int], set[int]]] = OrderedDict()
        # following the store (other workers, CLI imports): a read connection of our own (it
        # never sees another thread's uncommitted writes), the last event folded, the change
        # markers last applied, and where we are in the served-slate log
        self._reader: EventStore = open_store(self.settings.resolved_database_url)
        self.worker = os.getpid()
        self._seq = 0
        self._markers: tuple[Any, ...] = (None, None, None, None)
        self._follow_log = self.settings.workers > 1
        self._log_pos: tuple[int | None, int] = (None, 0)
        self._load_all()
        from tansuo.exploration.kernels import warm_up

        warm_up()  # the slate policy's compiled loops, before the first request needs them

    # -- loading -------------------------------------------------------------------------------
    def _load_all(self) -> None:
        with self.lock:
            _, self._markers = self._reader.sync_state()
            self._load_state()
            self._load_model()

    def _load_state(self) -> None:
        """Events, catalogue, interest tracker and indexes, from the store as it is now."""
        from tansuo.interests.build import build_tracker

        with self.lock:
            events = self._reader.events([*_COLUMNS, "seq"])
            self._seq = int(events["seq"].max()) if len(events) else 0
            self.items = self._reader.items()
            self._log_pos = self._log_end()
            if self.items.empty and not events.empty:
                # no catalogue: items are known by id only (no text, no categories)
                ids = sorted(set(events["item_id"].dropna().astype(str)))
                self.items = pd.DataFrame({"item_id": ids, "title": ids, "category": None,
                                           "brand": None, "description": None})
            self.titles = _titles(self.items)
            self.tracker = None
            if not self.items.empty:
                self.tracker = build_tracker(events, self.items, self.home,
                                             self.settings.text_model, progress=self.progress)
            self._rebuild_indexes(events)

    def _rebuild_indexes(self, events: pd.DataFrame) -> None:
        space = self.tracker.space if self.tracker is not None else None
        n = len(space.item_ids) if space is not None else 0
        self.history: dict[str, list[int]] = defaultdict(list)
        self.disliked: dict[str, set[int]] = defaultdict(set)
        self.item_events = np.zeros(n)
        self.last_ts = int(events["timestamp"].max()) if len(events) else 0
        self._trend = np.zeros(n)
        if space is None or events.empty:
            self._co = None
            return
        rows = space.rows(events["item_id"].tolist())
        users = events["user_id"].astype(str).to_numpy()
        types = events["type"].astype(str).to_numpy()
        ts = events["timestamp"].to_numpy(dtype=np.int64)
        for u, r, t in zip(users, rows, types, strict=True):
            if r >= 0:
                self._remember(u, int(r), t)
        ok = rows >= 0
        np.add.at(self.item_events, rows[ok], 1.0)
        recent = ok & (ts >= self.last_ts - 7 * _MS_DAY)
        age = (self.last_ts - ts[recent]) / _MS_DAY
        np.add.at(self._trend, rows[recent], np.exp(-age / 3.0))
        self._co = _co_purchases(users[ok], rows[ok], types[ok], ts[ok], n)

    def _remember(self, user: str, row: int, typ: str) -> None:
        """A dislike excludes the item for good; a positive event joins the user's history."""
        if typ == "dislike":
            self.disliked[user].add(row)
        elif float(self.settings.event_weights.get(typ, 1.0)) > 0:
            self.history[user].append(row)

    def _load_model(self) -> None:
        from tansuo.models.registry import ModelRegistry

        try:
            trained = ModelRegistry(self.home).load()
        except TansuoError:
            self.model, self.model_version, self.model_meta = None, None, {}
            self._model_rows = None
            return
        self._swap(self._prepare(trained))

    def _prepare(self, trained: Any) -> Any:
        """A freshly loaded model made ready to serve, before it is swapped in (outside the
        lock where the caller can): one-shopper queries through ONNX Runtime
        (``serve_onnx``), its graph read from, or exported once into, the model's
        directory."""
        attach = getattr(trained.model, "attach_query_graph", None)
        if attach is not None and self.settings.serve_onnx:
            try:
                attach(self.home / "models" / trained.version / "query.onnx",
                       self.settings.serve_threads)
            except Exception as exc:  # noqa: BLE001 - any failure leaves the torch path serving
                logging.getLogger("tansuo.service").warning(
                    "model %s: no ONNX query graph (%s: %s); queries use torch",
                    trained.version, type(exc).__name__, exc)
        return trained

    def _swap(self, trained: Any) -> None:
        if "torch" in sys.modules:  # the model may have imported torch just now
            sys.modules["torch"].set_num_threads(self.settings.serve_threads)
        space = self.tracker.space if self.tracker is not None else None
        self._trained = trained
        self.model, self.model_version, self.model_meta = (trained.model, trained.version,
                                                           trained.meta)
        self._model_items = trained.items
        if space is not None:
            # model column of each space row (-1: the model has never seen the item)
            self._model_rows = np.asarray(trained.items.index(space.item_ids), dtype=np.int64)
        else:
            self._model_rows = None

    # -- writes --------------------------------------------------------------------------------
    def ingest(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """Store a batch durably with the import rules, then fold in exactly the events that
        were newly stored (duplicates change nothing)."""
        from tansuo.data.importer import import_frame

        if not events:
            raise ServiceError(422, "the batch is empty: send at least one event", "events")
        # writers queue on the write lock; requests wait only while the new events are folded
        # into the in-memory state (the database write and its fsync happen outside it).
        # Plain rows: a small batch is cleaned row by row; a field missing from every row is
        # each row's rejection, not a failed batch.
        with self.write_lock:
            try:
                report = import_frame(self.store, events, "events",
                                      source=_batch_source(events,
                                                           self.privacy.pseudonymizer),
                                      options=self._import_options, strict_columns=False,
                                      log=False)
            except TansuoError as exc:
                raise ServiceError(422, str(exc), "events") from exc
        self.sync()  # folds what was just stored (and anything others stored before it)
        with self.lock:
            self.counters["events_ingested"] += report.accepted
        return {"accepted": report.accepted, "duplicates": report.duplicates,
                "rejected": [{"index": r["line"] - 1, "reason": r["reason"],
                              "detail": r["detail"]} for r in report.first_rejected],
                "rejected_count": report.rejected}

    def _fold(self, rows: list[tuple[Any, ...]]) -> None:
        """Apply newly stored events (rows of ``_COLUMNS`` then seq, in time order within each
        user) to the in-memory state."""
        if self.tracker is None:
            if rows:
                self._load_all()  # first events of a store without a catalogue
            return
        space = self.tracker.space
        for user_id, item_id, typ, ts, dwell, amount, query, request_id, position in map(
                _FOLD_FIELDS, rows):
            item = item_id if isinstance(item_id, str) and item_id else None
            user, typ, ts = str(user_id), str(typ), int(ts)
            self.tracker.update(user, ts, item, typ, _num(dwell), _num(amount), _str(query))
            r = space.row(item) if item else -1
            if r >= 0:
                self._remember(user, int(r), typ)
                self.item_events[r] += 1
            self.last_ts = max(self.last_ts, ts)
            self._credit_click(user, typ, request_id, position)

    def _credit_click(self, user: str, typ: str, request_id: object, position: object) -> None:
        """A click on a served slot raises the posterior of that slot's interest (once)."""
        if typ not in _POSITIVE or not isinstance(request_id, str) or request_id not in \
                self._served:
            return
        served_user, units, credited = self._served[request_id]
        pos = _num(position)
        if served_user != user or pos is None or not 0 <= int(pos) < len(units):
            return
        if int(pos) in credited or units[int(pos)] < 0:
            return
        credited.add(int(pos))
        self._posteriors[user].setdefault(units[int(pos)], [0.0, 0.0])[0] += 1.0

    def upsert_items(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Upsert catalogue rows; new or changed items are text-encoded and placed at once."""
        from tansuo.data.importer import import_frame

        if not items:
            raise ServiceError(422, "no items: send at least one", "items")
        frame = _frame(items, ITEM_COLUMNS)
        with self.write_lock, self.lock:
            try:
                report = import_frame(self.store, frame, "items",
                                      source=_batch_source(items, self.privacy.pseudonymizer),
                                      log=False)
            except TansuoError as exc:
                raise ServiceError(422, str(exc), "items") from exc
            bad = {r["line"] - 1 for r in report.first_rejected}
            good = frame.drop(index=[i for i in bad if i in frame.index]).reset_index(drop=True)
            if len(good):
                stored = self.store.items()
                self._place_items(stored, stored[stored["item_id"].isin(
                    good["item_id"].astype(str))])
                self._mark("sync_items", 1)
        return {"accepted": report.accepted, "rejected": [
            {"index": r["line"] - 1, "reason": r["reason"], "detail": r["detail"]}
            for r in report.first_rejected]}

    def _place_items(self, stored: pd.DataFrame, changed: pd.DataFrame) -> None:
        """Encode new or changed catalogue rows and place them in the interest space."""
        from tansuo.text.encoder import EmbeddingCache, cache_path, encode_items, open_encoder

        if self.tracker is None:
            self.items = stored
            self._load_all()
            return
        encoder = open_encoder(self.settings.text_model)
        with EmbeddingCache(cache_path(self.home)) as cache:
            ids, vectors, _ = encode_items(changed, encoder, cache, False)
        space = self.tracker.space
        n_before = len(space.item_ids)
        space.add_items(ids.tolist(), vectors, changed["category"].tolist())
        grow = len(space.item_ids) - n_before
        if grow:
            self.item_events = np.concatenate([self.item_events, np.zeros(grow)])
            self._trend = np.concatenate([self._trend, np.zeros(grow)])
            if self._model_rows is not None:
                self._model_rows = np.concatenate(
                    [self._model_rows, np.asarray(self._model_items.index(
                        space.item_ids[n_before:]), dtype=np.int64)])
            if self._co is not None:
                self._co.resize((len(space.item_ids), len(space.item_ids)))
        self.items = stored
        self.titles = _titles(stored)

    def _forget(self, user_id: str) -> bool:
        """Drop everything held in memory about one user; True if they had a profile."""
        had = self.tracker is not None and self.tracker.users.pop(user_id, None) is not None
        self.history.pop(user_id, None)
        self.disliked.pop(user_id, None)
        self._posteriors.pop(user_id, None)
        for rid in [r for r, v in self._served.items() if v[0] == user_id]:
            del self._served[rid]
        return had

    # -- following the store -------------------------------------------------------------------
    def _mark(self, key: str, index: int) -> None:
        """Tell other processes following the store that something changed (a fresh nonce),
        and remember that we have applied it ourselves."""
        nonce = uuid.uuid4().hex
        self.store.set_meta(key, nonce)
        markers = list(self._markers)
        markers[index] = json.dumps(nonce)
        self._markers = tuple(markers)

    def sync(self) -> None:
        """Catch up with the store: fold events stored by anyone since the last one folded,
        and apply erasures, catalogue changes and model swaps made by other processes. One
        cheap query when nothing changed; run before every request, so with several workers
        each one sees every acknowledged event on its next request."""
        with self.lock:
            seq, markers = self._reader.sync_state()
            if markers != self._markers:
                self._apply_markers(markers)
            if self._follow_log:
                self._tail_served_log()
            if seq > self._seq:
                fresh = self._reader.events_after(self._seq, _COLUMNS)
                self._fold(fresh)
                self._seq = max(self._seq, max(r[-1] for r in fresh) if fresh else seq)

    def _apply_markers(self, markers: tuple[Any, ...]) -> None:
        erased, items, model, retention = markers
        if retention != self._markers[3]:
            # a retention run purged old events: profiles are rebuilt from what is left (rare,
            # and a purge must not linger in memory); the serving model stays as it is
            self._load_state()
            self._posteriors.clear()  # click counts that may include purged clicks
            if self.model is not None:
                self._swap(self._trained)
        if erased != self._markers[0]:
            for user in json.loads(self._reader.get_meta("erased_users") or "[]"):
                self._forget(user)
            self._close_log()  # the served-slate log was rewritten without the user
            self._log_pos = self._log_end()
        if items != self._markers[1]:
            stored = self._reader.items()
            known = self.items.set_index("item_id") if len(self.items) else None
            cols = ["title", "category", "brand", "description"]
            if known is None:
                changed = stored
            else:
                old = known.reindex(stored["item_id"])[cols].reset_index(drop=True)
                same = (old.fillna("").astype(str).to_numpy()
                        == stored[cols].fillna("").astype(str).to_numpy()).all(axis=1)
                changed = stored[~same]
            if len(changed):
                self._place_items(stored, changed)
        if model != self._markers[2]:
            from tansuo.models.registry import ModelRegistry

            version = self._reader.get_meta("serving_model")
            if version and version != self.model_version:
                self._swap(self._prepare(ModelRegistry(self.home).load(version)))
        self._markers = markers

    def _log_end(self) -> tuple[int | None, int]:
        try:
            st = os.stat(self.served_log)
        except FileNotFoundError:
            return (None, 0)
        return (st.st_ino, st.st_size)

    def _tail_served_log(self) -> None:
        """Register the slates other workers served (so a click on one of them, folded here,
        credits its interest) from the shared served-slate log."""
        ino, pos = self._log_pos
        now_ino, size = self._log_end()
        if now_ino is None:
            return
        if ino is not None and now_ino != ino:  # rewritten by an erasure: start at its end
            self._log_pos = (now_ino, size)
            return
        if size <= pos:
            return
        with open(self.served_log, "rb") as fh:
            fh.seek(pos)
            data = fh.read(size - pos)
        end = data.rfind(b"\n") + 1  # whole lines only; a line being written waits
        self._log_pos = (now_ino, pos + end)
        space = self.tracker.space if self.tracker is not None else None
        for line in data[:end].splitlines():
            try:
                rec = orjson.loads(line)
                if rec.get("worker") == self.worker or space is None:
                    continue
                user, rid = str(rec["user_id"]), str(rec["request_id"])
                rows = space.rows([str(x) for x in rec["items"]])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            units = [int(space.unit_of[r]) if r >= 0 else -1 for r in rows]
            for u in units:
                if u >= 0:
                    self._posteriors[user].setdefault(u, [0.0, 0.0])[1] += 1.0
            self._served[rid] = (user, units, set())
            while len(self._served) > _SERVED_KEPT:
                self._served.popitem(last=False)

    def erase(self, user_id: str, actor: str = "api") -> dict[str, Any]:
        """Erase a user at once (:func:`tansuo.privacy.erasure.erase_user`: events, quarantined
        rows, import reports, served-slate log, dataset files; a receipt and an audit entry),
        and everything held in memory about them."""
        from tansuo.privacy.erasure import erase_user

        user_id = self.privacy.lookup(user_id)
        with self.write_lock, self.lock:
            self._close_log()
            receipt = erase_user(self.store, self.home, user_id, actor=actor)
            had_profile = self._forget(user_id)
            self._log_pos = self._log_end()
            _, self._markers = self.store.sync_state()  # our own change: already applied
        doc = receipt.to_dict()
        return {"user_id": user_id, "events_removed": receipt.removed.get("events", 0),
                "profile_removed": had_profile,
                "served_slates_removed": receipt.removed.get("served_slates", 0),
                "models_trained_before": bool(receipt.models_predating), "receipt": doc}

    def reload(self, force: bool = False) -> dict[str, Any]:
        """Swap to the latest trained model if its yardstick score is at least the serving
        model's (or ``force``); requests keep being served by the old one until the swap."""
        from tansuo.models.registry import ModelRegistry

        try:
            trained = ModelRegistry(self.home).load()
        except TansuoError as exc:
            raise ServiceError(409, str(exc)) from exc
        if trained.version == self.model_version:
            return {"swapped": False, "model_version": self.model_version,
                    "reason": "already serving the latest model"}
        new = (trained.meta.get("yardstick") or {}).get("ndcg@10")
        old = (self.model_meta.get("yardstick") or {}).get("ndcg@10")
        if not force and self.model is not None:
            if new is None:
                raise ServiceError(409, f"model {trained.version} has no yardstick score "
                                        "(train it with --evaluate) and force is false")
            if old is not None and new < old:
                raise ServiceError(409, f"model {trained.version} scores ndcg@10 {new:.4f} < "
                                        f"serving {old:.4f}; pass force=true to swap anyway")
        previous = self.model_version
        self._prepare(trained)
        with self.lock:
            self._swap(trained)
            self.counters["reloads"] += 1
            self.store.set_meta("serving_model", trained.version)
            self._mark("sync_model", 2)
        return {"swapped": True, "model_version": trained.version, "ndcg@10": new,
                "previous_version": previous, "previous_ndcg@10": old}

    # -- reads ---------------------------------------------------------------------------------
    def _user_scores(self, user: str) -> tuple[np.ndarray, bool]:
        """(score per space row, cold start?)"""
        space = self.tracker.space  # type: ignore[union-attr]
        n = len(space.item_ids)
        hist = self.history.get(user)
        if not hist:
            return self._trend + 1e-6 * self.item_events, True
        if self.model is None or self._model_rows is None:
            return self._interest_scores(user), False
        known = self._model_rows >= 0
        model_hist = self._model_rows[np.asarray(hist[-200:])]
        model_hist = model_hist[model_hist >= 0]
        raw = self.model.score(np.array([-1]), [model_hist], None)[0].astype(np.float64)
        scores = np.full(n, np.nan)
        scores[known] = raw[self._model_rows[known]]
        if (~known).any():
            ref = scores[known]
            mu, sd = float(np.mean(ref)), float(np.std(ref)) or 1.0
            t = self._interest_scores(user)[~known]
            scores[~known] = mu + (t - t.mean()) / (t.std() or 1.0) * sd
        return scores, False

    def _interest_scores(self, user: str) -> np.ndarray:
        space = self.tracker.space  # type: ignore[union-attr]
        long_vec, short_vec = self.tracker.user_vectors(user)  # type: ignore[union-attr]
        if long_vec is None:
            return self._trend.copy()
        v = long_vec if short_vec is None else long_vec + short_vec
        return (space.vectors @ v.astype(np.float32)).astype(np.float64)

    def recommend(self, user: str, k: int = 10, explore: float | None = None,
                  context: str = "home", category: str | None = None,
                  exclude: Sequence[str] = (), exclude_seen: bool = True,
                  strategy: str | None = None) -> Recommendation:
        if self.tracker is None:
            raise ServiceError(503, "no catalogue and no events yet: import items or events "
                                    "first")
        user = self.privacy.lookup(user)
        cfg = self.policy_config
        try:
            if explore is not None or strategy is not None:
                cfg = PolicyConfig(**{**cfg.__dict__, **({} if explore is None else
                                                         {"explore": explore}),
                                      **({} if strategy is None else {"strategy": strategy})})
        except ValueError as exc:
            raise ServiceError(422, str(exc), "explore" if "explore" in str(exc)
                               else "strategy") from exc
        self.sync()
        with self.lock:
            space = self.tracker.space
            scores, cold = self._user_scores(user)
            scores = self._apply_context(scores, context)
            mask = np.zeros(len(scores), dtype=bool)
            if category:
                cats = np.array([str(c or "") for c in space.categories], dtype=object)
                mask |= ~np.array([c == category or c.startswith(category + " >")
                                   or c.startswith(category + ">") for c in cats])
            if exclude:
                rows = space.rows(list(exclude))
                mask[rows[rows >= 0]] = True
            if exclude_seen and user in self.history:
                mask[np.asarray(self.history[user], dtype=np.int64)] = True
            mask[list(self.disliked.get(user, ()))] = True
            interests = self.tracker.interests(user, text_tags=False) if not cold else []
            ctx = UserContext({i.unit: i.weight for i in interests},
                              [i.unit for i in interests if i.trend in ("fading", "gone")])
            policy = SlatePolicy(cfg if not cold else PolicyConfig(
                **{**cfg.__dict__, "strategy": "greedy", "diversity": max(cfg.diversity, 0.5)}),
                space.unit_of, space.centroids, space.vectors)
            self._restore_posteriors(policy, user)
            request_id = uuid.uuid4().hex
            slate = policy.slate(user, scores, k, ctx, mask, request_id)
            by_unit = {i.unit: i for i in interests}
            out = []
            for pos, (row, score, prop, unit) in enumerate(zip(
                    slate.items, slate.scores, slate.propensities, slate.explored, strict=True)):
                item_unit = int(space.unit_of[row])
                item_id = space.item_ids[row]
                out.append({"item_id": item_id, "title": self.titles.get(item_id),
                            "position": pos,
                            "score": round(float(score), 6) if math.isfinite(score) else None,
                            "propensity": round(float(prop), 6),
                            "reason": self._reason(user, cold, int(unit), item_unit, by_unit)})
            units = [int(space.unit_of[r]) for r in slate.items]
            for u in units:
                if u >= 0:
                    self._posteriors[user].setdefault(u, [0.0, 0.0])[1] += 1.0
            self._served[request_id] = (user, units, set())
            while len(self._served) > _SERVED_KEPT:
                self._served.popitem(last=False)
            self.counters["slots_served"] += len(out)
            self.counters["slots_explored"] += int((slate.explored >= 0).sum()
                                                   + (slate.explored == -2).sum())
            self._log_slate(user, slate, out)
        return Recommendation(request_id, self.model_version, slate.strategy, slate.explore, out)

    def _restore_posteriors(self, policy: SlatePolicy, user: str) -> None:
        """This user's interest posteriors (clicks and shows on served slates)."""
        for unit, v in self._posteriors.get(user, {}).items():
            policy.interest_stats[(user, unit)] = list(v)

    def _reason(self, user: str, cold: bool, explored: int, unit: int,
                interests: dict[int, Any]) -> dict[str, Any]:
        names = self.tracker.space.names  # type: ignore[union-attr]
        if cold:
            return {"type": "popular", "text": "popular now"}
        if explored >= 0:
            tag = names[explored].split(" > ")[-1]
            return {"type": "exploring", "interest": names[explored],
                    "text": f"exploring: {tag}"}
        if explored == -2:
            return {"type": "exploring", "text": "exploring: something new"}
        if unit in interests:
            i = interests[unit]
            tag = i.tags[0].text if i.tags else names[unit]
            return {"type": "interest", "interest": names[unit], "tag": tag,
                    "because": i.items, "text": f"because you like {tag}"}
        space = self.tracker.space  # type: ignore[union-attr]
        if unit >= 0 and interests and space.centroids is not None:
            # not one of the user's interests: name the nearest one it is close to
            own = list(interests)
            near = own[int(np.argmax(space.centroids[own] @ space.centroids[unit]))]
            i = interests[near]
            tag = i.tags[0].text if i.tags else names[near]
            return {"type": "related", "interest": names[unit], "near": names[near],
                    "text": f"close to your interest in {tag}"}
        return {"type": "related", "interest": names[unit] if unit >= 0 else None,
                "text": "related to what you viewed"}

    def _apply_context(self, scores: np.ndarray, context: str) -> np.ndarray:
        space = self.tracker.space  # type: ignore[union-attr]
        if context in ("", "home"):
            return scores
        kind, _, value = context.partition(":")
        finite = scores[np.isfinite(scores)]
        sd = float(finite.std()) if len(finite) else 1.0
        if kind == "item" and value:
            row = space.rows([value])[0]
            if row < 0:
                raise ServiceError(404, f"context item {value!r} is not in the catalogue",
                                   "context")
            sim = space.vectors @ space.vectors[row]
            out = scores + 2.0 * (sd or 1.0) * sim
            out[row] = -np.inf
            return out
        if kind == "search" and value:
            from tansuo.text.encoder import encode_texts, open_encoder

            q, _ = encode_texts([value], open_encoder(self.settings.text_model), None)
            sim = space.text_vectors @ q[0]
            keep = np.argsort(-sim)[:200]
            out = np.full(len(scores), -np.inf)
            base = np.nan_to_num(scores[keep], nan=0.0, neginf=0.0)
            out[keep] = (base - base.mean()) / (base.std() or 1.0) + 3.0 * sim[keep] / (
                sim[keep].std() or 1.0)
            return out
        raise ServiceError(422, f"context {context!r}: expected home, item:ID or search:QUERY",
                           "context")

    def _log_slate(self, user: str, slate: Any, items: list[dict[str, Any]]) -> None:
        record = {"request_id": slate.request_id, "user_id": user, "worker": self.worker,
                  "ts": int(time.time() * 1000),
                  "model_version": self.model_version, "strategy": slate.strategy,
                  "explore": slate.explore, "propensity_method": slate.propensity_method,
                  "items": [i["item_id"] for i in items],
                  "propensities": [i["propensity"] for i in items],
                  "explored": slate.explored.tolist(),
                  "exploit": [self.tracker.space.item_ids[r]  # type: ignore[union-attr]
                              for r in slate.exploit]}
        if self._log_file is not None and self._follow_log and \
                os.fstat(self._log_file.fileno()).st_ino != self._log_end()[0]:
            self._close_log()  # another worker rewrote the log (an erasure): append to the new
        if self._log_file is None:
            self.served_log.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.served_log, "ab")  # noqa: SIM115 (kept open, see close)
        self._log_file.write(orjson.dumps(record) + b"\n")
        self._log_file.flush()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def similar(self, item_id: str, k: int = 10) -> list[dict[str, Any]]:
        self.sync()
        space = self._space()
        row = space.rows([item_id])[0]
        if row < 0:
            raise ServiceError(404, f"unknown item {item_id!r}", "item_id")
        sim = space.vectors @ space.vectors[row]
        sim[row] = -np.inf
        top = np.argsort(-sim, kind="stable")[:k]
        return [{"item_id": space.item_ids[i], "similarity": round(float(sim[i]), 4),
                 "interest": space.names[space.unit_of[i]] if space.unit_of[i] >= 0 else None}
                for i in top]

    def complementary(self, item_id: str, k: int = 10) -> list[dict[str, Any]]:
        """Items bought together: co-purchases (or co-carts) by the same user within a day."""
        self.sync()
        space = self._space()
        row = space.rows([item_id])[0]
        if row < 0:
            raise ServiceError(404, f"unknown item {item_id!r}", "item_id")
        if self._co is None or row >= self._co.shape[0]:
            return []
        counts = self._co.getrow(row).toarray().ravel()
        counts[row] = 0
        top = [i for i in np.argsort(-counts, kind="stable")[:k] if counts[i] > 0]
        return [{"item_id": space.item_ids[i], "together": int(counts[i])} for i in top]

    def interests(self, user: str) -> dict[str, Any]:
        self.sync()
        user = self.privacy.lookup(user)
        if self.tracker is None or user not in self.tracker.users:
            raise ServiceError(404, f"unknown user {user!r}: no events for this user id",
                               "user_id")
        with self.lock:
            p = self.tracker.profile(user)
        doc = p.to_dict()
        return {"user_id": user, "interests": doc["interests"], "short_term": doc["short_term"],
                "timeline": doc["timeline"], "shifts": doc["shifts"], "stats": doc["stats"]}

    def _space(self) -> Any:
        if self.tracker is None:
            raise ServiceError(503, "no catalogue yet: import items first")
        return self.tracker.space

    def health(self) -> dict[str, Any]:
        self.sync()
        return {"status": "ok", "model_version": self.model_version,
                "items": len(self.tracker.space.item_ids) if self.tracker else 0,
                "users": len(self.tracker.users) if self.tracker else 0,
                "worker": self.worker, "uptime_s": round(time.time() - self.started, 1)}

    def close(self) -> None:
        with self.lock:
            self._close_log()
        self._reader.close()
        self.store.close()


def _co_purchases(users: np.ndarray, rows: np.ndarray, types: np.ndarray, ts: np.ndarray,
                  n: int) -> Any:
    import scipy.sparse as sp

    buy = np.isin(types, ["purchase"])
    if buy.sum() < 2:
        buy = np.isin(types, ["purchase", "cart"])
    u, r, t = users[buy], rows[buy], ts[buy] // _MS_DAY
    baskets: dict[tuple[str, int], set[int]] = defaultdict(set)
    for a, b, c in zip(u, r, t, strict=True):
        baskets[(a, int(c))].add(int(b))
    pairs_i, pairs_j = [], []
    for items in baskets.values():
        if 1 < len(items) <= 50:
            lst = sorted(items)
            for x in lst:
                for y in lst:
                    if x != y:
                        pairs_i.append(x)
                        pairs_j.append(y)
    m = sp.coo_matrix((np.ones(len(pairs_i)), (pairs_i, pairs_j)), shape=(n, n)).tocsr()
    m.sum_duplicates()
    return m.tolil()


def _batch_source(rows: list[Any], keyed: Callable[[str], str] | None = None) -> str:
    """The source an API batch's rejected rows are quarantined under: ``http:`` and a digest
    of the batch. The quarantine keeps one row per (source, line, reason), so with one
    source for all batches it kept only the first batch's reject at each position and
    dropped the others'; a retried identical batch still adds nothing. With pseudonymisation
    on, the digest goes through the pseudonymiser (``keyed``), so what the store keeps cannot
    be matched against guessed raw ids."""
    try:
        data = orjson.dumps(rows, default=str, option=orjson.OPT_SORT_KEYS
                            | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    except (orjson.JSONEncodeError, TypeError):  # e.g. an integer beyond 64 bits
        data = repr(rows).encode()
    digest = hashlib.blake2b(data, digest_size=8).hexdigest()
    return "http:" + (keyed(digest)[:16] if keyed is not None else digest)


def _titles(items: pd.DataFrame) -> dict[str, str]:
    if items.empty:
        return {}
    return {str(i): str(t) for i, t in zip(items["item_id"], items["title"], strict=True)
            if isinstance(t, str) and t}


def _frame(rows: list[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    """Rows as a frame with every schema column present (missing fields are null, so the
    import rules reject the row with a reason instead of failing the batch)."""
    frame = pd.DataFrame(rows)
    extra = [c for c in frame.columns if c not in columns]
    return frame.reindex(columns=[*columns, *extra])


def _num(x: object) -> float | None:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _str(x: object) -> str | None:
    return x if isinstance(x, str) and x else None
