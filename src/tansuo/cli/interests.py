"""`tansuo interests USER`, `tansuo segments`, `tansuo trends` (registered on the main app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tansuo.cli.main import (
    _emit_json,
    _fail,
    _JsonOpt,
    _privacy_policy,
    _State,
    _state,
    app,
    out,
)
from tansuo.errors import TansuoError

_DatasetOpt = Annotated[str | None, typer.Option(
    "--dataset", help="movielens-small or synthetic-shop; default: the store's data.")]
_WindowOpt = Annotated[str, typer.Option(
    "--window", help="Timeline window: day, week, or a number of days.")]
_HalfLifeOpt = Annotated[float, typer.Option(
    "--half-life-days", help="Long-term view: an event's weight halves every N days.")]
_TagsOpt = Annotated[Path | None, typer.Option(
    "--tags", help="A file with one tag per line, added to the catalogue's own vocabulary.")]
_ModelOpt = Annotated[bool, typer.Option(
    "--model/--text-only", help="Join the latest trained model's item vectors (when it has "
                                "any) to the text in the interest space.")]

_COLUMNS = ("user_id", "item_id", "type", "timestamp", "dwell_seconds", "amount", "query")


def _window_days(window: str) -> float:
    named = {"day": 1.0, "week": 7.0, "month": 30.0}
    if window in named:
        return named[window]
    try:
        days = float(window)
    except ValueError:
        days = -1.0
    if days <= 0:
        _fail(f"--window {window!r}: expected day, week, month or a positive number of days", 2)
    return days


def _tracker(state: _State, dataset: str | None, window: str = "week",
             half_life_days: float = 30.0, tags: Path | None = None, use_model: bool = True,
             shifts: bool = True):  # noqa: ANN202 - InterestTracker, imported lazily
    from tansuo.evaluation.report import load_events
    from tansuo.interests.build import build_tracker, model_item_vectors
    from tansuo.interests.profile import ProfileConfig

    try:
        config = ProfileConfig(half_life_days=half_life_days, window_days=_window_days(window),
                               shifts=shifts, event_weights=dict(state.settings.event_weights))
    except ValueError as exc:
        _fail(f"invalid option: {exc}", 2)
    extra: list[str] = []
    if tags is not None:
        try:
            extra = [t.strip() for t in tags.read_text().splitlines() if t.strip()]
        except OSError as exc:
            _fail(f"--tags {tags}: cannot read ({exc.strerror})", 2)
        if not extra:
            _fail(f"--tags {tags}: the file has no tags (one per line expected)", 2)
    try:
        if dataset is None:
            with state.store() as store:
                events, items, _ = load_events(None, store, state.settings.home, _COLUMNS)
        else:
            events, items, _ = load_events(dataset, None, state.settings.home, _COLUMNS)
    except (ValueError, TansuoError) as exc:
        _fail(str(exc), 2)
    if events.empty:
        _fail("no events: import some (tansuo import events) or pass --dataset", 1)
    vectors = None
    if use_model and dataset is None:
        from tansuo.models.registry import ModelRegistry

        try:
            trained = ModelRegistry(state.settings.home).load()
        except TansuoError:
            trained = None  # no trained model yet: text alone
        if trained is not None:
            vectors = model_item_vectors(trained.model, items["item_id"].astype(str).tolist(),
                                         trained.items.ids.tolist())
    try:
        return build_tracker(events, items, state.settings.home, state.settings.text_model,
                             model_vectors=vectors, profile_config=config, tags=extra)
    except ValueError as exc:
        _fail(str(exc), 1)


@app.command("interests")
def interests_cmd(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="The user id.")],
    dataset: _DatasetOpt = None,
    timeline: Annotated[bool, typer.Option(
        "--timeline", help="Also show the interest timeline and the detected shifts.")] = False,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Write the interest stream (stacked area, shift markers) as PNG.")
    ] = None,
    window: _WindowOpt = "week",
    half_life_days: _HalfLifeOpt = 30.0,
    tags: _TagsOpt = None,
    use_model: _ModelOpt = True,
    as_json: _JsonOpt = False,
) -> None:
    """A user's interests in words, with weights, trends, short-term focus and shifts."""
    state = _state(ctx)
    tracker = _tracker(state, dataset, window, half_life_days, tags, use_model)
    if dataset is None:  # the store's ids may be pseudonyms: look the user up by theirs
        user = _privacy_policy(state.settings).lookup(user)
    if user not in tracker.users:
        _fail(f"unknown user {user!r}: no events for this user id", 1)
    profile = tracker.profile(user)
    if plot is not None:
        from tansuo.interests.plots import plot_interest_stream

        plot_interest_stream(tracker, user, plot)
    doc = profile.to_dict()
    if not timeline:
        doc.pop("timeline")
    if as_json:
        _emit_json(doc)
        return
    table = Table(title=f"interests of {user} ({profile.stats['events']:,} events, "
                        f"{profile.stats['first_seen'][:10]} → {profile.stats['last_seen'][:10]})")
    for c in ("interest", "weight", "trend", "tags (confidence)", "example items", "last seen"):
        table.add_column(c, overflow="fold")
    for i in profile.interests:
        table.add_row(i.name, f"{i.weight:.2f}", i.trend,
                      ", ".join(f"{t.text} ({t.confidence:.2f})" for t in i.tags[:4]),
                      ", ".join(i.items), str(i.to_dict()["last_seen"])[:10])
    out.print(table)
    if profile.short_term:
        out.print("short term (last events): " + ", ".join(
            f"{s['name']} {s['share']:.0%}" for s in profile.short_term[:4]))
    if timeline:
        for w in doc["timeline"]:
            top = ", ".join(f"{k.split(' > ')[-1]} {v:.0%}"
                            for k, v in list(w["interests"].items())[:4])
            out.print(f"{w['start'][:10]}  {w['events']:>4} events  {top}")
    for s in profile.shifts:
        out.print(f"shift at {s['timestamp'][:16]} (event {s['event_index']}): "
                  f"left {', '.join(s['left']) or '—'}; arrived {', '.join(s['arrived']) or '—'}")
    if plot is not None:
        out.print(f"plot: {plot}")


@app.command("segments")
def segments_cmd(
    ctx: typer.Context,
    dataset: _DatasetOpt = None,
    k: Annotated[int | None, typer.Option(
        "--k", min=1, help="Number of segments (default: best silhouette in --k-min..--k-max).")
    ] = None,
    k_min: Annotated[int, typer.Option("--k-min", min=2)] = 2,
    k_max: Annotated[int, typer.Option("--k-max", min=2)] = 12,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Write the segment map as PNG.")] = None,
    window: _WindowOpt = "week",
    use_model: _ModelOpt = True,
    as_json: _JsonOpt = False,
) -> None:
    """Users clustered by long-term interests: size, top interests and trend of each segment."""
    from tansuo.interests.segments import segment_users

    if k_min > k_max:
        _fail(f"--k-min {k_min} is above --k-max {k_max}", 2)
    tracker = _tracker(_state(ctx), dataset, window, use_model=use_model, shifts=False)
    try:
        segs = segment_users(tracker, k, (k_min, k_max))
    except ValueError as exc:
        _fail(str(exc), 1)
    if plot is not None:
        from tansuo.interests.plots import plot_segments

        plot_segments(segs, plot)
    if as_json:
        _emit_json(segs.to_dict())
        return
    table = Table(title=f"{segs.k} segments of {len(segs.users):,} users "
                        f"(silhouette {segs.silhouette:.3f}, best of k={min(segs.tried)}.."
                        f"{max(segs.tried)})")
    for c in ("segment", "users", "top interests (mean share)", "trend"):
        table.add_column(c, overflow="fold")
    for s in segs.segments:
        table.add_row(str(s["segment"]), f"{s['users']:,}", ", ".join(
            f"{t['name'].split(' > ')[-1]} {t['share']:.0%}" for t in s["top_interests"]),
            s["trend"])
    out.print(table)
    if plot is not None:
        out.print(f"plot: {plot}")


@app.command("trends")
def trends_cmd(
    ctx: typer.Context,
    dataset: _DatasetOpt = None,
    window: _WindowOpt = "week",
    recent: Annotated[int, typer.Option(
        "--recent", min=1, help="Windows counted as recent.")] = 1,
    history: Annotated[int, typer.Option(
        "--history", min=1, help="Windows before them to compare with.")] = 4,
    use_model: _ModelOpt = True,
    as_json: _JsonOpt = False,
) -> None:
    """Interests rising or fading across all users (latest windows against the ones before)."""
    from tansuo.interests.segments import population_trends

    tracker = _tracker(_state(ctx), dataset, window, use_model=use_model, shifts=False)
    rows = population_trends(tracker, recent, history)
    if as_json:
        _emit_json(rows)
        return
    table = Table(title=f"interest trends: last {recent} × {window} against the {history} before")
    for c in ("interest", "trend", "recent share", "earlier share", "change"):
        table.add_column(c)
    for r in rows:
        change = "—" if r["change"] is None else f"{r['change']:+.0%}"
        table.add_row(r["name"], r["trend"], f"{r['recent_share']:.2%}",
                      f"{r['earlier_share']:.2%}", change)
    out.print(table)
