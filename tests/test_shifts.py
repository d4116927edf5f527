"""Interest-shift detector (tansuo.interests.shifts) and its scoring helpers
(tansuo.interests.truth): tiny hand-built streams with known answers, hypothesis properties,
and one run on a small synthetic shop."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tansuo.data.schema import DEFAULT_EVENT_WEIGHTS
from tansuo.interests.shifts import Shift, ShiftConfig, ShiftDetector
from tansuo.interests.truth import score_shifts, score_tags

PROPS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DAY = 86_400_000
STEP = 30_000  # 30 s between events of a session
T0 = 1_767_225_600_000  # 2026-01-01


def sessions_stream(sessions: list[list[int]], weight: float = 1.0
                    ) -> tuple[list[int], list[int], list[float]]:
    """One session per inner list (events ``STEP`` apart), sessions a day apart."""
    ts, labels = [], []
    for s, session in enumerate(sessions):
        for e, label in enumerate(session):
            ts.append(T0 + s * DAY + e * STEP)
            labels.append(label)
    return ts, labels, [weight] * len(ts)


def shift_at(index: int, ts: int = 0) -> Shift:
    return Shift(user_id=None, timestamp=ts, event_index=index, left=(), arrived=(0,),
                 statistic=0.0, p_value=0.0, estimated_index=index)


# -- detector: known answers --------------------------------------------------------------------


def test_clear_change_is_detected_within_a_few_events() -> None:
    # 8 sessions alternating interests 0 and 1, then the user moves to a new interest 2
    before = [[0] * 8 if s % 2 == 0 else [1] * 8 for s in range(8)]
    ts, labels, weights = sessions_stream(before + [[2] * 8, [1] * 8, [2] * 8])
    shifts = ShiftDetector().detect(ts, labels, weights)
    assert len(shifts) == 1
    s = shifts[0]
    # the third event of interest 2 (min_support = 3) is event 64 + 2
    assert s.event_index == 66 and s.timestamp == ts[66]
    assert s.arrived == (2,)
    # the window (10 events) then holds 7 events of interest 1 and 3 of interest 2: 0 is gone
    assert s.left == (0,)
    # sessions 0..6 have left the window: the new interest is absent from all 7 of them
    assert s.p_value == pytest.approx(1 / 8)
    assert s.statistic == 3.0
    assert s.estimated_index == 64  # first event of the session where 2 began


def test_stationary_session_structured_stream_gives_no_detection() -> None:
    rng = np.random.default_rng(0)
    sessions = [[0] * 5, [1] * 7, [2] * 4]
    for _ in range(60):
        focus = int(rng.choice(3, p=[0.5, 0.3, 0.2]))
        n = int(rng.integers(2, 12))
        session = [focus if rng.random() < 0.8 else int(rng.integers(3)) for _ in range(n)]
        session = [-1 if rng.random() < 0.1 else x for x in session]
        sessions.append(session)
    ts, labels, weights = sessions_stream(sessions)
    # every session switch changes the recent distribution completely: an event-level test
    # would fire again and again, this one must not fire at all
    assert ShiftDetector().detect(ts, labels, weights) == []


def test_no_detection_without_enough_reference_sessions() -> None:
    # three sessions of reference: p = 1/4 > alpha = 0.2 for the newcomer
    ts, labels, weights = sessions_stream([[0] * 10, [1] * 10, [0] * 10, [2] * 10])
    assert ShiftDetector().detect(ts, labels, weights) == []
    assert len(ShiftDetector(ShiftConfig(alpha=0.3)).detect(ts, labels, weights)) == 1


def test_only_light_events_are_evidence_but_every_event_counts_in_the_index() -> None:
    before = [[0] * 8 if s % 2 == 0 else [1] * 8 for s in range(8)]
    ts, labels, _ = sessions_stream(before + [[2] * 8])
    weights = [1.0] * len(ts)
    # the new interest arrives through clicks (weight 2) only: the same items again, no burst
    for i in range(64, 72):
        weights[i] = DEFAULT_EVENT_WEIGHTS["click"]
    assert ShiftDetector().detect(ts, labels, weights) == []
    # counting every positive weight (max_evidence_weight=inf) sees it
    cfg = ShiftConfig(max_evidence_weight=math.inf)
    assert [s.event_index for s in ShiftDetector(cfg).detect(ts, labels, weights)] == [66]
    # events without an interest (label -1, e.g. searches) shift the index but are not evidence
    ts2, labels2, w2 = sessions_stream(before + [[-1, -1, 2, 2, 2]])
    shifts = ShiftDetector().detect(ts2, labels2, w2)
    assert [s.event_index for s in shifts] == [68]
    assert shifts[0].estimated_index == 64  # the session's first event, a search


def test_same_arrival_is_reported_once_and_user_id_is_carried() -> None:
    before = [[0] * 8 if s % 2 == 0 else [1] * 8 for s in range(8)]
    ts, labels, weights = sessions_stream(before + [[2] * 8] * 5)
    shifts = ShiftDetector(user_id="u1").detect(ts, labels, weights)
    assert [(s.user_id, s.arrived) for s in shifts] == [("u1", (2,))]


@pytest.mark.parametrize(("field", "value"), [
    ("window", 0), ("window", 2.5), ("window", True), ("min_support", 0),
    ("min_support", 11), ("alpha", 0.0), ("alpha", 1.0), ("alpha", math.nan),
    ("session_gap_ms", 0), ("max_evidence_weight", 0.0), ("half_life_sessions", 0.0),
    ("left_share", 0.0), ("left_share", 1.5), ("cooldown_events", -1), ("max_labels", 0),
])
def test_bad_config_raises_value_error_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"ShiftConfig\.{field}\b"):
        ShiftConfig(**{field: value})


def test_bad_events_and_bad_state_raise() -> None:
    det = ShiftDetector()
    with pytest.raises(ValueError, match="label"):
        det.update(T0, -2)
    with pytest.raises(ValueError, match="weight"):
        det.update(T0, 1, math.nan)
    with pytest.raises(ValueError, match="same length"):
        det.detect([T0, T0 + 1], [1])
    with pytest.raises(ValueError, match="version"):
        ShiftDetector.from_state({**det.state_dict(), "version": 99})
    with pytest.raises(ValueError, match="unknown ShiftConfig"):
        ShiftConfig.from_dict({"windw": 3})


def test_config_round_trips_through_json() -> None:
    cfg = ShiftConfig(window=12, alpha=0.1, half_life_sessions=50.0)
    assert ShiftConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert ShiftConfig.from_dict(json.loads(json.dumps(ShiftConfig().to_dict()))) == ShiftConfig()


# -- detector: properties -----------------------------------------------------------------------

EVENTS = st.lists(
    st.tuples(st.sampled_from([0, 1_000, 60_000, 3 * 3_600_000, 2 * DAY]),
              st.integers(-1, 5), st.sampled_from([0.0, 1.0, 1.0, 1.0, 2.0, 4.0])),
    max_size=250)
CONFIGS = st.builds(ShiftConfig, window=st.integers(3, 12), min_support=st.integers(1, 3),
                    alpha=st.sampled_from([0.1, 0.2, 0.34]),
                    half_life_sessions=st.sampled_from([math.inf, 5.0]),
                    cooldown_events=st.sampled_from([0, 5]), max_labels=st.sampled_from([2, 512]))


def _unpack(events: list[tuple[int, int, float]]) -> tuple[list[int], list[int], list[float]]:
    ts = (T0 + np.cumsum([g for g, _, _ in events], dtype=np.int64)).tolist()
    return ts, [lab for _, lab, _ in events], [w for _, _, w in events]


@PROPS
@given(events=EVENTS, cfg=CONFIGS)
def test_detect_equals_repeated_update(events: list[tuple[int, int, float]],
                                       cfg: ShiftConfig) -> None:
    ts, labels, weights = _unpack(events)
    one = ShiftDetector(cfg, "u")
    stepped = [s for t, lab, w in zip(ts, labels, weights, strict=True)
               if (s := one.update(t, lab, w)) is not None]
    assert ShiftDetector(cfg, "u").detect(ts, labels, weights) == stepped
    for s in stepped:
        assert 0 <= s.estimated_index <= s.event_index < len(ts)
        assert 0 < s.p_value <= cfg.alpha
        assert labels[s.event_index] in s.arrived and not set(s.left) & set(s.arrived)


@PROPS
@given(events=EVENTS, cfg=CONFIGS, cut=st.floats(0, 1))
def test_state_round_trip_continues_identically(events: list[tuple[int, int, float]],
                                                cfg: ShiftConfig, cut: float) -> None:
    ts, labels, weights = _unpack(events)
    k = int(cut * len(ts))
    whole = ShiftDetector(cfg, "u")
    expected = whole.detect(ts, labels, weights)
    first = ShiftDetector(cfg, "u")
    got = first.detect(ts[:k], labels[:k], weights[:k])
    restored = ShiftDetector.from_state(json.loads(json.dumps(first.state_dict())))
    got += restored.detect(ts[k:], labels[k:], weights[k:])
    assert got == expected
    assert restored.state_dict() == whole.state_dict()
    assert restored.n_events == len(ts)


# -- score_shifts -------------------------------------------------------------------------------

H = 3_600_000


def test_score_shifts_hand_computed() -> None:
    truth = pd.DataFrame({
        "user_id": ["a", "a", "b"],
        "timestamp": [0, 10 * H, 5 * H],
        "left": ["x", "y", "z"],
        "arrived": ["y", "z", "w"],
        "event_index": [10, 50, np.nan],  # b's shift has no event after it
    })
    detected = {
        "a": [shift_at(12, 2 * H), shift_at(45, 8 * H), shift_at(55, 14 * H)],
        "b": [shift_at(3, 1 * H)],
        "c": [],
    }
    sc = score_shifts(detected, truth)
    # 12 matches the shift at 10 (delay 2); 45 is past 10 + 30 and before 50: a false alarm;
    # 55 matches the shift at 50 (delay 5); b's shift is undetectable, b's detection is false
    assert (sc.tp, sc.fp, sc.fn, sc.undetectable, sc.users) == (2, 2, 0, 1, 3)
    assert sc.precision == 0.5 and sc.recall == 1.0 and sc.f1 == pytest.approx(2 / 3)
    assert sc.median_delay_events == 3.5
    assert sc.median_delay_hours == pytest.approx(3.0)
    assert [(m.user_id, m.true_index, m.detected_index) for m in sc.matches] == [
        ("a", 10, 12), ("a", 50, 55)]
    assert sc.per_user == {"a": (2, 1, 0), "b": (0, 1, 0), "c": (0, 0, 0)}
    # users not passed are not evaluated at all
    assert score_shifts({"c": []}, truth).users == 1
    assert score_shifts({"c": []}, truth).f1 == 1.0


def test_score_shifts_window_edges_and_one_to_one() -> None:
    truth = pd.DataFrame({"user_id": ["a", "a"], "event_index": [10, 20],
                          "timestamp": ["2026-01-01T00:00:00Z", "2026-01-02T00:00:00.000Z"]})
    t1 = 1_767_225_600_000
    # before the shift, and two in one window: one match, two false alarms
    sc = score_shifts({"a": [shift_at(9, t1), shift_at(10, t1), shift_at(11, t1)]}, truth)
    assert (sc.tp, sc.fp, sc.fn) == (1, 2, 1)
    # a detection after the next shift belongs to the next shift
    sc = score_shifts({"a": [shift_at(25, t1 + 30 * H)]}, truth)
    assert (sc.tp, sc.fp, sc.fn) == (1, 0, 1)
    assert sc.matches[0].true_index == 20 and sc.median_delay_hours == pytest.approx(6.0)
    # tolerance is inclusive
    one = truth.iloc[:1]
    assert score_shifts({"a": [shift_at(15)]}, one, tolerance_events=5).tp == 1
    assert score_shifts({"a": [shift_at(16)]}, one, tolerance_events=5).tp == 0
    with pytest.raises(ValueError, match="tolerance_events"):
        score_shifts({}, truth, tolerance_events=-1)
    with pytest.raises(ValueError, match="event_index"):
        score_shifts({}, truth.drop(columns="event_index"))


TRUTHS = st.dictionaries(st.sampled_from(["u1", "u2", "u3", "u4"]),
                         st.lists(st.integers(0, 500), max_size=4, unique=True), max_size=4)


@PROPS
@given(truth=TRUTHS)
def test_perfect_detections_score_one(truth: dict[str, list[int]]) -> None:
    rows = [(u, i * 60_000, i) for u, idx in truth.items() for i in sorted(idx)]
    frame = pd.DataFrame(rows, columns=["user_id", "timestamp", "event_index"])
    detected = {u: [shift_at(i, i * 60_000) for i in sorted(idx)] for u, idx in truth.items()}
    sc = score_shifts(detected, frame)
    assert sc.precision == sc.recall == sc.f1 == 1.0
    assert sc.fp == sc.fn == 0 and sc.tp == len(rows)
    if rows:
        assert sc.median_delay_events == 0 and sc.median_delay_hours == 0


@PROPS
@given(truth=TRUTHS, det=TRUTHS)
def test_score_shifts_counts_add_up(truth: dict[str, list[int]],
                                    det: dict[str, list[int]]) -> None:
    rows = [(u, i * 60_000, i) for u, idx in truth.items() for i in sorted(idx)]
    frame = pd.DataFrame(rows, columns=["user_id", "timestamp", "event_index"])
    detected = {u: [shift_at(i, i * 60_000) for i in det.get(u, [])]
                for u in set(truth) | set(det)}
    sc = score_shifts(detected, frame)
    assert sc.tp + sc.fp == sum(len(v) for v in detected.values())
    assert sc.tp + sc.fn == len(rows)
    assert all(0 <= m.delay_events <= 30 for m in sc.matches)
    assert 0 <= sc.precision <= 1 and 0 <= sc.recall <= 1


# -- score_tags ---------------------------------------------------------------------------------


def _truth_interests() -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": ["a", "a", "a", "b"],
        "interest": ["sports/running", "books/kids", "home/coffee", "grocery/tea"],
        "tag": ["running", "kids", "coffee", "tea"],
        "category": ["Sports > Running", "Books > Kids", "Home > Coffee", "Grocery > Tea"],
        "start": ["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", "2026-01-01T00:00:00Z",
                  "2026-01-01T00:00:00Z"],
        "end": ["2026-02-01T00:00:00Z", "", "", ""],
        "weight": [0.5, 0.7, 0.3, 1.0],
        "latent": [0, 0, 1, 0],
    })


def test_score_tags_hand_computed() -> None:
    reported = {"a": ["Sports > Running", "Home > Coffee", "Books > Kids", "Grocery > Tea"],
                "b": ["Books > Kids", " Books > Kids "], "c": []}
    sc = score_tags(reported, _truth_interests(), k=3)
    # a: Running (true), Coffee (latent: not true), Kids (true) -> 2/3; b: 0/1; c: not scored
    assert sc.users == 2
    assert sc.per_user == {"a": pytest.approx(2 / 3), "b": 0.0}
    assert sc.precision_at_k == pytest.approx(1 / 3)
    # coverage: a 2 / min(3, 2) = 1, b 0 / 1 = 0
    assert sc.recall_at_k == pytest.approx(0.5)
    # k=1: a's first label is true, b's is not
    assert score_tags(reported, _truth_interests(), k=1).precision_at_k == 0.5


def test_score_tags_current_at() -> None:
    march = 1_772_323_200_000  # 2026-03-01: running has ended, kids is active
    sc = score_tags({"a": ["Sports > Running", "Books > Kids"]}, _truth_interests(), k=3,
                    current_at={"a": march})
    assert sc.per_user == {"a": 0.5} and sc.recall_at_k == 1.0
    with pytest.raises(ValueError, match="k must"):
        score_tags({}, _truth_interests(), k=0)


# -- a small synthetic shop ---------------------------------------------------------------------


Streams = dict[str, tuple[list[int], list[int], list[float]]]


def _shop_streams(directory: Path) -> tuple[Streams, pd.DataFrame, list[str]]:
    """Per user (with truth), the well-formed events as (ms, level-2 category id, weight);
    the true shifts; the category of each id."""
    meta = json.loads((directory / "meta.json").read_text())
    items = pd.read_csv(directory / "items.csv", usecols=["item_id", "category"])
    level2 = items["category"].str.split(" > ").str[:2].str.join(" > ")
    names = sorted(set(level2))
    codes = {c: i for i, c in enumerate(names)}
    label_of = dict(zip(items["item_id"], level2.map(codes), strict=True))
    ev = pd.read_csv(directory / "events.csv", dtype=str, keep_default_na=False,
                     usecols=["user_id", "item_id", "type", "timestamp", "dwell_seconds"])
    ts = pd.to_datetime(ev["timestamp"], errors="coerce", utc=True, format="ISO8601")
    dwell = pd.to_numeric(ev["dwell_seconds"], errors="coerce")
    ok = (ts.notna() & (ts < pd.Timestamp(meta["period"]["end"]))
          & ev["type"].isin(list(DEFAULT_EVENT_WEIGHTS)) & (ev["user_id"] != "")
          & ~(dwell < 0))
    truth_users = set(pd.read_csv(directory / "truth_interests.csv")["user_id"])
    ok &= ev["user_id"].isin(truth_users)
    ev = ev[ok].assign(ms=ts[ok].astype("int64") // 1_000_000)
    label = ev["item_id"].map(label_of).fillna(-1).astype(int)
    label[ev["type"].isin(["search", "dislike"])] = -1
    ev = ev.assign(label=label, weight=ev["type"].map(DEFAULT_EVENT_WEIGHTS))
    streams: Streams = {u: ([], [], []) for u in truth_users}
    for u, g in ev.groupby("user_id", sort=False):
        streams[u] = (g["ms"].tolist(), g["label"].tolist(), g["weight"].tolist())
    return streams, pd.read_csv(directory / "truth_shifts.csv"), names


@pytest.mark.realdata
@pytest.mark.slow
def test_detector_on_a_small_synthetic_shop(tmp_path: Path) -> None:
    from tansuo.data.synthetic import ShopConfig, generate

    generate(ShopConfig(users=300), tmp_path, progress=False)
    streams, truth, names = _shop_streams(tmp_path)
    detected = {u: ShiftDetector(user_id=u).detect(*s) for u, s in streams.items()}
    sc = score_shifts(detected, truth)
    # Measured 0.59 (P 0.64, R 0.54, delay 8). The ceiling on this data is low: about a fifth
    # of the true shifts come before the user has a reference, and most false alarms are
    # interests held all along but first visited late (see tansuo.interests.shifts).
    assert sc.f1 >= 0.5 and sc.precision >= 0.55
    assert sc.median_delay_events <= 10
    # the arrived interest is named right in most matches
    arrived_ok = 0
    by_key = {(r.user_id, int(r.event_index)): r for r in truth.dropna().itertuples()}
    interests = pd.read_csv(tmp_path / "truth_interests.csv")
    key_to_cat = dict(zip(interests["interest"], interests["category"], strict=False))
    for m in sc.matches:
        d = next(s for s in detected[m.user_id] if s.event_index == m.detected_index)
        true_cat = key_to_cat[by_key[(m.user_id, m.true_index)].arrived]
        arrived_ok += any(names[a] == true_cat for a in d.arrived)
    assert arrived_ok >= 0.8 * len(sc.matches)
