"""Scoring interest shifts and interest tags against ground truth (e.g. the synthetic shop's).

Two pure functions, each returning a small frozen result:

:func:`score_shifts`
    Detected shifts (:class:`~tansuo.interests.shifts.Shift`, per user) against true shifts
    (``truth_shifts.csv`` of :mod:`tansuo.data.synthetic`). Detections and true shifts are
    placed on the same axis, the index of an event in the user's time-ordered stream of
    well-formed events, and matched one-to-one inside a tolerance window (rule below).
:func:`score_tags`
    Each user's reported interest labels (category paths such as ``"Sports > Running"``)
    against the user's true, shown interests (``truth_interests.csv``): precision@k and a
    recall@k-style coverage.

**Shift matching rule.** For one user, true shifts are taken in time order; the ``j``-th
true shift at event index ``e_j`` (the user's first event at or after it) owns the window
``e_j <= d < min(e_j + tolerance_events + 1, e_{j+1})`` of detection indices ``d``: a
detection can match it when it comes at or after the shift, at most ``tolerance_events``
events later, and before the user's next true shift. Greedily, in time order, each true
shift takes the earliest still-unmatched detection inside its window. Matched detections are
true positives; unmatched detections are false positives; unmatched true shifts are false
negatives. A true shift with no event after it (``event_index`` empty / NaN) cannot be
detected: it is excluded from recall (not a false negative) and reported in
:attr:`ShiftScore.undetectable`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_TOLERANCE_EVENTS",
    "ShiftMatch",
    "ShiftScore",
    "TagScore",
    "score_shifts",
    "score_tags",
]

#: Default matching tolerance of :func:`score_shifts`, in events after the true shift. The
#: simulated shop's users act in sessions of about 5-15 events, and a new interest usually
#: takes the focus within the next one or two sessions, so 30 events is "within about two
#: sessions of the change" — late enough to allow a test to gather evidence, early enough that
#: a match still means "this change", not a later one.
DEFAULT_TOLERANCE_EVENTS = 30

_MS_HOUR = 3_600_000.0


class _Detection(Protocol):
    """What :func:`score_shifts` reads from a detection (a :class:`Shift` satisfies it)."""

    @property
    def event_index(self) -> int: ...

    @property
    def timestamp(self) -> int: ...


@dataclass(frozen=True)
class ShiftMatch:
    """One true shift matched with one detection."""

    #: The user.
    user_id: str
    #: ``event_index`` of the true shift (first event at or after it).
    true_index: int
    #: ``event_index`` of the matching detection.
    detected_index: int
    #: ``detected_index - true_index`` (>= 0).
    delay_events: int
    #: Detection timestamp minus true shift timestamp, in hours (>= 0 for consistent inputs).
    delay_hours: float


@dataclass(frozen=True)
class ShiftScore:
    """Result of :func:`score_shifts`. Ratios follow the usual conventions for empty sets:
    precision is 1.0 when nothing was detected, recall is 1.0 when nothing was detectable, and
    F1 is 0.0 when precision and recall are both 0."""

    #: ``tp / (tp + fp)``.
    precision: float
    #: ``tp / (tp + fn)`` over detectable true shifts.
    recall: float
    #: Harmonic mean of precision and recall.
    f1: float
    #: Detections matched to a true shift.
    tp: int
    #: Detections not matched.
    fp: int
    #: Detectable true shifts not matched.
    fn: int
    #: True shifts of the evaluated users with no event after them (excluded from recall).
    undetectable: int
    #: Median of ``delay_events`` over matched pairs (NaN when there are none).
    median_delay_events: float
    #: Median of ``delay_hours`` over matched pairs (NaN when there are none).
    median_delay_hours: float
    #: Number of evaluated users (the keys of ``detected``).
    users: int
    #: Every matched pair, by user then time.
    matches: tuple[ShiftMatch, ...] = ()
    #: ``user_id -> (tp, fp, fn)`` for every evaluated user.
    per_user: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class TagScore:
    """Result of :func:`score_tags`."""

    #: Mean precision@k over users with at least one reported label.
    precision_at_k: float
    #: Mean coverage over the same users that have at least one true interest:
    #: ``hits in the first k / min(k, number of true interests)``.
    recall_at_k: float
    #: The ``k`` used.
    k: int
    #: Users scored (at least one reported label).
    users: int
    #: ``user_id -> precision@k`` for every scored user.
    per_user: Mapping[str, float] = field(default_factory=dict)


def _to_ms(values: pd.Series) -> np.ndarray:
    """Timestamps as int64 ms since the epoch: numbers are taken as ms, strings as ISO 8601."""
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=np.int64)
    ts = pd.to_datetime(values, utc=True, format="ISO8601")
    return (ts.astype("int64") // 1_000_000).to_numpy(dtype=np.int64)


def _ratios(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def score_shifts(
    detected: Mapping[str, Sequence[_Detection]],
    truth: pd.DataFrame,
    tolerance_events: int = DEFAULT_TOLERANCE_EVENTS,
) -> ShiftScore:
    """Precision, recall, F1 and detection delay of detected shifts against true shifts.

    ``detected`` maps each evaluated user to its detections (anything with ``event_index`` and
    ``timestamp`` in ms, such as :class:`~tansuo.interests.shifts.Shift`). **The evaluated users
    are exactly the keys of** ``detected``: pass every user the detector ran on, with an empty
    list when it found nothing, or that user's true shifts are silently left out of recall.
    True shifts of users not in ``detected`` are ignored.

    ``truth`` has columns ``user_id``, ``timestamp`` (ms since the epoch, or ISO 8601 strings),
    ``event_index`` (0-based index of the user's first well-formed event at or after the shift;
    NaN / empty when no event follows) and usually ``left`` / ``arrived`` (not used for
    matching). Matching follows the module's rule (at or after the true shift, within
    ``tolerance_events`` events, before the user's next true shift; greedy one-to-one in time
    order). Delays are measured over matched pairs: in events (``detection.event_index -
    truth.event_index``) and in hours (``detection.timestamp - truth.timestamp``).
    """
    if tolerance_events < 0:
        raise ValueError(f"tolerance_events must be >= 0, got {tolerance_events}")
    missing = {"user_id", "timestamp", "event_index"} - set(truth.columns)
    if missing:
        raise ValueError(f"truth is missing column(s) {sorted(missing)}")
    users = set(detected)
    t = truth[truth["user_id"].isin(users)]
    t_ms = _to_ms(t["timestamp"]) if len(t) else np.zeros(0, np.int64)
    t_idx = pd.to_numeric(t["event_index"], errors="coerce").to_numpy(dtype=float)
    by_user: dict[str, list[tuple[int, float]]] = {}
    for uid, ms, idx in zip(t["user_id"].to_numpy(), t_ms, t_idx, strict=True):
        by_user.setdefault(uid, []).append((int(ms), idx))

    tp = fp = fn = undetectable = 0
    matches: list[ShiftMatch] = []
    per_user: dict[str, tuple[int, int, int]] = {}
    for uid in sorted(users):
        dets = sorted(detected[uid], key=lambda d: (d.event_index, d.timestamp))
        rows = sorted(by_user.get(uid, []), key=lambda r: r[0])
        live = [(ms, int(idx)) for ms, idx in rows if not math.isnan(idx)]
        undetectable += len(rows) - len(live)
        used = [False] * len(dets)
        u_tp = 0
        for j, (ms, idx) in enumerate(live):
            hi = idx + tolerance_events + 1
            if j + 1 < len(live):
                hi = min(hi, live[j + 1][1])
            for k, d in enumerate(dets):
                if used[k] or d.event_index < idx:
                    continue
                if d.event_index >= hi:
                    break
                used[k] = True
                u_tp += 1
                matches.append(ShiftMatch(uid, idx, int(d.event_index),
                                          int(d.event_index) - idx,
                                          (int(d.timestamp) - ms) / _MS_HOUR))
                break
        u_fp = len(dets) - u_tp
        u_fn = len(live) - u_tp
        per_user[uid] = (u_tp, u_fp, u_fn)
        tp, fp, fn = tp + u_tp, fp + u_fp, fn + u_fn

    precision, recall, f1 = _ratios(tp, fp, fn)
    delays_e = [m.delay_events for m in matches]
    delays_h = [m.delay_hours for m in matches]
    return ShiftScore(
        precision=precision,
        recall=recall,
        f1=f1,
        tp=tp,
        fp=fp,
        fn=fn,
        undetectable=undetectable,
        median_delay_events=float(np.median(delays_e)) if matches else math.nan,
        median_delay_hours=float(np.median(delays_h)) if matches else math.nan,
        users=len(users),
        matches=tuple(matches),
        per_user=per_user,
    )


def score_tags(
    reported: Mapping[str, Sequence[str]],
    truth_interests: pd.DataFrame,
    k: int = 3,
    current_at: Mapping[str, int] | None = None,
) -> TagScore:
    """Precision@k of each user's reported interest labels against the user's true interests.

    ``reported`` maps a user to its interest labels, best first, as strings comparable with the
    truth's ``category`` column (e.g. ``"Sports > Running"``; compared after stripping
    surrounding whitespace; repeated labels count once, at their first position).
    ``truth_interests`` has the columns of ``truth_interests.csv``: ``user_id, interest, tag,
    category, start, end, weight, latent`` (``start`` / ``end`` ISO 8601 or ms, ``end`` empty
    when still active).

    A user's true interests are the categories of its rows with ``latent == 0`` (latent
    interests produce no behaviour, so no detector can be asked to find them). Without
    ``current_at`` every such span counts (the spans of the simulated shop all lie within the
    observed period); with ``current_at[user]`` (ms) only spans active then count
    (``start <= t < end``, an empty ``end`` is open); users missing from ``current_at`` fall back
    to all spans.

    Per user with at least one reported label: precision@k = (number of the first ``k``
    reported labels that are true) / ``min(k, number reported)``; users without reported
    labels are not scored. A scored user with no truth rows (e.g. a bot) has an empty true set
    and precision 0. The recall-style coverage is the same hit count over ``min(k, number of
    true interests)``, averaged over scored users with at least one true interest.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    missing = {"user_id", "category", "start", "end", "latent"} - set(truth_interests.columns)
    if missing:
        raise ValueError(f"truth_interests is missing column(s) {sorted(missing)}")
    ti = truth_interests[pd.to_numeric(truth_interests["latent"], errors="coerce") == 0]
    start = _to_ms(ti["start"]) if len(ti) else np.zeros(0, np.int64)
    end_raw = ti["end"].replace("", np.nan)
    if pd.api.types.is_numeric_dtype(end_raw):
        end = end_raw.to_numpy(dtype=float)
    else:
        end_ts = pd.to_datetime(end_raw, utc=True, format="ISO8601")
        end = np.where(end_ts.isna(), np.inf,
                       end_ts.astype("int64").to_numpy() // 1_000_000).astype(float)
    end = np.where(np.isnan(end), np.inf, end)
    spans: dict[str, list[tuple[str, int, float]]] = {}
    for uid, cat, s0, s1 in zip(ti["user_id"].to_numpy(), ti["category"].to_numpy(), start,
                                end, strict=True):
        spans.setdefault(str(uid), []).append((str(cat).strip(), int(s0), float(s1)))

    per_user: dict[str, float] = {}
    coverage: list[float] = []
    for uid in sorted(reported):
        labels = list(dict.fromkeys(str(x).strip() for x in reported[uid]))
        if not labels:
            continue
        at = None if current_at is None else current_at.get(uid)
        true = {c for c, s0, s1 in spans.get(uid, []) if at is None or s0 <= at < s1}
        hits = sum(1 for x in labels[:k] if x in true)
        per_user[uid] = hits / min(k, len(labels))
        if true:
            coverage.append(hits / min(k, len(true)))
    return TagScore(
        precision_at_k=float(np.mean(list(per_user.values()))) if per_user else math.nan,
        recall_at_k=float(np.mean(coverage)) if coverage else math.nan,
        k=k,
        users=len(per_user),
        per_user=per_user,
    )
