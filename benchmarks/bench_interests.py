"""Interest tags and shift detection against the synthetic shop's ground truth (issue 5), plus
MovieLens worked examples, into docs/benchmarks.md and docs/img/.

    .venv/bin/python benchmarks/bench_interests.py [--no-write]

The synthetic shop (default config, seed 0: 2,000 users, ~300k events) is loaded through the
importer exactly as ``tansuo datasets load synthetic-shop`` does (cleaning rules, bots
quarantined). Interests come from the text-only interest space (no trained model), so the
figures do not depend on a model run. Scored with :mod:`tansuo.interests.truth`:

- tag precision@3: each user's top-3 reported interests (by long-term weight, at the end of
  the data) against the interests the user truly held (non-latent) during the observed period,
  and against those still held at the end;
- shifts: precision, recall, F1 and median delay (events, hours) of the detector's shift
  events against ``truth_shifts.csv``;
- the same with units clustered from text alone (no category seeding), for robustness;
- cost: microseconds per event update, milliseconds per profile read;
- what limits shift F1 (the default units): true shifts that come before the user has
  ``EARLY_VIEWS`` browsing views, the kinds of false alarm, and how a detected label's share of
  the next ``AFTER_VIEWS`` views differs between false alarms and true arrivals.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _docs import write_block

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "interests"
IMG = ROOT / "docs" / "img"
ML_WINDOW_DAYS = 365.0
EARLY_VIEWS = 15
AFTER_VIEWS = 30


def _shop_events(home: Path) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    from tansuo.evaluation.report import load_events

    cols = ("user_id", "item_id", "type", "timestamp", "dwell_seconds", "amount", "query")
    events, items, _ = load_events("synthetic-shop", None, home, cols)
    return events, items, home / "datasets" / "synthetic-shop"


def _score(tracker, truth_i: pd.DataFrame, truth_s: pd.DataFrame) -> dict:
    from tansuo.interests.truth import score_shifts, score_tags

    users = sorted(set(truth_i["user_id"].astype(str)) & set(tracker.users))
    reported = {u: [i.name for i in tracker.interests(u)] for u in users}
    last = {u: int(tracker.users[u].last_ts) for u in users}
    tags_any = score_tags(reported, truth_i, k=3)
    tags_now = score_tags(reported, truth_i, k=3, current_at=last)
    shifts = score_shifts({u: tracker.users[u].shifts for u in users}, truth_s)
    return {"tags_any": tags_any, "tags_now": tags_now, "shifts": shifts, "users": len(users)}


def _evidence_streams(tracker, events: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per user, the interest label of each event as the tracker feeds it to the shift detector
    (same order, same rule), with -1 where the event is not evidence (not a browsing view of an
    item with an interest)."""
    from tansuo.interests.shifts import ShiftConfig

    space, weights = tracker.space, tracker.config.event_weights
    ms = events["timestamp"].astype("int64").to_numpy()
    order = np.lexsort((ms, events["user_id"].astype(str).to_numpy()))
    ev = events.iloc[order]
    items = [i if isinstance(i, str) and i else None for i in ev["item_id"]]
    rows = np.array([space.rows([i])[0] if i else -1 for i in items])
    units = np.where(rows >= 0, space.unit_of[np.maximum(rows, 0)], -1)
    base = ev["type"].map(lambda t: float(weights.get(t, 1.0))).to_numpy()
    evidence = (units >= 0) & (base > 0) & (base <= ShiftConfig().max_evidence_weight)
    labels = np.where(evidence, units, -1)
    users = ev["user_id"].astype(str).to_numpy()
    cuts = np.flatnonzero(users[1:] != users[:-1]) + 1
    return {str(u[0]): lab for u, lab in zip(np.split(users, cuts), np.split(labels, cuts),
                                             strict=True)}


def _shift_limits(tracker, events: pd.DataFrame, truth_i: pd.DataFrame, truth_s: pd.DataFrame,
                  score) -> dict:
    """What limits shift F1: early true shifts, false-alarm kinds, and the detected label's
    share of the next views for false alarms against true arrivals."""
    streams = _evidence_streams(tracker, events)
    names = tracker.space.names
    cat_of = dict(zip(truth_i["interest"], truth_i["category"], strict=False))
    arrivals = {(str(u), cat_of[a]) for u, a in zip(truth_s["user_id"], truth_s["arrived"],
                                                     strict=True)}
    held = {(str(r.user_id), r.category): float(r.weight)
            for r in truth_i.itertuples() if int(r.latent) == 0}
    users = set(score.per_user)
    live = truth_s[truth_s["user_id"].astype(str).isin(users) & truth_s["event_index"].notna()]
    early = sum(int((streams.get(str(u), np.zeros(0))[:int(i)] >= 0).sum()) < EARLY_VIEWS
                for u, i in zip(live["user_id"], live["event_index"], strict=True))
    matched = {(m.user_id, m.detected_index) for m in score.matches}

    def share_after(u: str, d) -> float:
        after = streams[u][d.event_index + 1:]
        after = after[after >= 0][:AFTER_VIEWS]
        return float(np.mean(after == d.arrived[0])) if len(after) else np.nan

    kinds = {"held from the start": 0, "a true arrival, outside its window": 0, "other": 0}
    weights, earlier, fp_share, tp_share = [], [], [], []
    for u in sorted(users):
        for d in tracker.users[u].shifts:
            if (u, d.event_index) in matched:
                tp_share.append(share_after(u, d))
                continue
            cat = names[d.arrived[0]]
            if (u, cat) in arrivals:
                kinds["a true arrival, outside its window"] += 1
            elif (u, cat) in held:
                kinds["held from the start"] += 1
                weights.append(held[(u, cat)])
                before = streams[u][:d.estimated_index]
                earlier.append(int((before == d.arrived[0]).sum()))
                fp_share.append(share_after(u, d))
            else:
                kinds["other"] += 1
    detectable = score.tp + score.fn
    cap_r = (detectable - early) / detectable if detectable else np.nan
    return {"early": early, "detectable": detectable, "f1_cap": 2 * cap_r / (1 + cap_r),
            "kinds": kinds, "fp": score.fp, "held_weight": float(np.median(weights)),
            "held_earlier2": float(np.mean(np.array(earlier) >= 2)),
            "fp_share": float(np.nanmedian(fp_share)), "tp_share": float(np.nanmedian(tp_share))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tansuo.interests.build import build_tracker
    from tansuo.interests.plots import plot_interest_stream, plot_segments
    from tansuo.interests.profile import ProfileConfig
    from tansuo.interests.segments import population_trends, segment_users
    from tansuo.interests.space import SpaceConfig

    home = OUT / "home"
    print("loading the synthetic shop through the importer", file=sys.stderr)
    events, items, shop_dir = _shop_events(home)
    truth_i = pd.read_csv(shop_dir / "truth_interests.csv", dtype={"user_id": str})
    truth_s = pd.read_csv(shop_dir / "truth_shifts.csv", dtype={"user_id": str})
    build_tracker(events.head(1), items, home, progress=False)  # warm the text cache
    started = time.perf_counter()
    tracker = build_tracker(events, items, home, progress=False)
    build_s = time.perf_counter() - started
    seeded = _score(tracker, truth_i, truth_s)
    limits = _shift_limits(tracker, events, truth_i, truth_s, seeded["shifts"])
    sample = list(tracker.users)[:500]
    started = time.perf_counter()
    for u in sample:
        tracker.profile(u)
    read_ms = (time.perf_counter() - started) / len(sample) * 1000
    # update cost alone: a fresh tracker over the same space, events already in memory
    from tansuo.interests.profile import InterestTracker

    fresh = InterestTracker(tracker.space, tracker.config, tracker.vocabulary)
    started = time.perf_counter()
    fresh.update_frame(events, progress=False)
    update_us = (time.perf_counter() - started) / len(events) * 1e6
    text_only = build_tracker(events, items, home, progress=False,
                              space_config=SpaceConfig(use_categories=False))
    unseeded = _score(text_only, truth_i, truth_s)

    segs = segment_users(tracker)
    trends = population_trends(tracker)
    IMG.mkdir(parents=True, exist_ok=True)
    plot_segments(segs, IMG / "segments-shop.png")
    shifted = [m.user_id for m in seeded["shifts"].matches]
    example = shifted[0] if shifted else sample[0]
    plot_interest_stream(tracker, example, IMG / f"interests-shop-{example}.png")

    def row(name: str, r: dict, method: str) -> str:
        s = r["shifts"]
        return (f"| {name} | {method} | {r['users']:,} | {r['tags_any'].precision_at_k:.3f} | "
                f"{r['tags_now'].precision_at_k:.3f} | {s.precision:.3f} | {s.recall:.3f} | "
                f"**{s.f1:.3f}** | {s.median_delay_events:.1f} | {s.median_delay_hours:.1f} |")

    lines = [
        "```", ".venv/bin/python benchmarks/bench_interests.py", "```", "",
        f"Synthetic shop (default config, seed 0), {len(events):,} events loaded through the "
        f"importer; {seeded['shifts'].tp + seeded['shifts'].fn:,} detectable true shifts. "
        "Targets: tag precision@3 ≥ 0.8; shift F1 ≥ 0.85 with median delay ≤ 10 events.", "",
        "| units | how | users | tag P@3 (held in period) | tag P@3 (held at end) | shift "
        "precision | shift recall | shift F1 | median delay (events) | median delay (hours) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        row("category-seeded (default)", seeded, tracker.space.method),
        row("text only", unseeded, text_only.space.method),
        "",
        f"What limits shift F1 (category-seeded units): {limits['early']:,} of the "
        f"{limits['detectable']:,} detectable true shifts "
        f"({limits['early'] / limits['detectable']:.1%}) come before the user has "
        f"{EARLY_VIEWS} browsing views, with no earlier behaviour to compare with; missing only "
        f"those caps F1 at {limits['f1_cap']:.3f}. Of the {limits['fp']:,} false alarms, "
        + ", ".join(f"{n:,} {k}" for k, n in limits["kinds"].items()) +
        f". The held ones are minor interests (median true weight "
        f"{limits['held_weight']:.2f}; {limits['held_earlier2']:.0%} had two or more views "
        f"before the burst) whose burst looks like an arrival when it happens; over the next "
        f"{AFTER_VIEWS} views the label takes a median {limits['fp_share']:.0%} share for them "
        f"against {limits['tp_share']:.0%} for true arrivals, evidence that comes after the "
        "10-event delay budget.",
        "",
        f"Cost (2 cores, pure Python per event): {update_us:.1f} µs per event update "
        f"(interests, timeline and shift detector), {read_ms:.2f} ms per profile read; building "
        f"the tracker for all {len(events):,} events took {build_s:.1f} s (text embeddings "
        "cached).", "",
        f"Segments: {segs.k} (highest silhouette {segs.silhouette:.3f} over k = "
        f"{min(segs.tried)}..{max(segs.tried)}); largest: " + "; ".join(
            f"{s['users']} users, " + ", ".join(t["name"].split(" > ")[-1]
                                                for t in s["top_interests"])
            for s in segs.segments[:3]) + ". Population trends (last week against the 8 "
        "before): " + ", ".join(f"{t['name'].split(' > ')[-1]} {t['trend']}"
                                for t in trends if t["trend"] != "stable") + ".", "",
        f"![segments](img/segments-shop.png) ![interest stream of {example}]"
        f"(img/interests-shop-{example}.png)",
    ]

    # MovieLens worked examples: genre interests and their drift over years
    from tansuo.evaluation.report import load_events

    ml_events, ml_items, _ = load_events("movielens-small", None, home,
                                         ("user_id", "item_id", "type", "timestamp", "rating"))
    ml = build_tracker(ml_events, ml_items, home, progress=False, profile_config=ProfileConfig(
        window_days=ML_WINDOW_DAYS, half_life_days=365.0, recent_windows=2, history_windows=6))
    years = {u: (st.last_ts - st.first_ts) / 86_400_000 / 365 for u, st in ml.users.items()}
    chosen = sorted((u for u in ml.users if years[u] >= 5), key=lambda u: -ml.users[u].events)[:3]
    lines += ["", "MovieLens latest-small worked examples (yearly windows, one-year half-life): "
              "the three most active users with at least five years of ratings.", "",
              "| user | years | ratings | interests now (weight, trend) | shifts detected |",
              "|---|---|---|---|---|"]
    for u in chosen:
        p = ml.profile(u)
        ints = ", ".join(f"{i.name.split(' > ')[-1]} {i.weight:.2f} {i.trend}"
                         for i in p.interests)
        sh = "; ".join(f"{s['timestamp'][:7]}: +"
                       + "/".join(a.split(" > ")[-1] for a in s["arrived"])
                       for s in p.shifts[:3]) or "none"
        lines.append(f"| {u} | {years[u]:.1f} | {p.stats['events']:,} | {ints} | {sh} |")
        plot_interest_stream(ml, u, IMG / f"interests-movielens-{u}.png")
    lines += ["", " ".join(f"![user {u}](img/interests-movielens-{u}.png)" for u in chosen)]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_block("bench_interests", "Interests and shifts (issue 5)", text)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
