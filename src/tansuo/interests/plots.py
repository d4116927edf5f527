"""Plots: a user's interest stream (stacked area with shift markers) and the segment map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tansuo.interests.profile import InterestTracker
from tansuo.interests.segments import Segments

__all__ = ["plot_interest_stream", "plot_segments"]


def _pyplot():  # noqa: ANN202 - matplotlib's module
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_interest_stream(tracker: InterestTracker, user_id: str, path: str | Path,
                         top: int = 6) -> Path:
    """Share of each interest per window (the ``top`` largest overall, the rest as "other"),
    stacked over time, with a dashed line at every detected shift."""
    timeline = tracker.timeline(user_id)
    if not timeline:
        raise ValueError(f"user {user_id!r} has no interest events to plot")
    frame = pd.DataFrame([t["interests"] for t in timeline],
                         index=pd.to_datetime([t["start"] for t in timeline])).fillna(0.0)
    weights = frame.mul([t["events"] for t in timeline], axis=0).sum()
    keep = list(weights.sort_values(ascending=False).index[:top])
    shown = frame[keep].copy()
    if len(frame.columns) > len(keep):
        shown["other"] = frame.drop(columns=keep).sum(axis=1)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    x = np.asarray(shown.index.to_pydatetime())
    ax.stackplot(x, shown.to_numpy().T, labels=[c.split(" > ")[-1] for c in shown.columns],
                 alpha=0.85, step=None)
    for s in tracker.shift_records(user_id):
        t = pd.Timestamp(s["timestamp"]).tz_localize(None)
        ax.axvline(t, color="black", linestyle="--", linewidth=1)
        label = f"shift: +{', '.join(a.split(' > ')[-1] for a in s['arrived'])}"
        ax.text(t, 1.01, label, rotation=0, fontsize=7, va="bottom", ha="left")
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of the window's events")
    ax.set_title(f"interest stream of {user_id} ({tracker.config.window_days:g}-day windows)",
                 pad=18)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_segments(segments: Segments, path: str | Path) -> Path:
    """Users on the first two principal components of their (square-root) interest shares,
    coloured by segment and annotated with each segment's top interest."""
    X = np.sqrt(segments.shares)
    X = X - X.mean(axis=0)
    _, _, vt = np.linalg.svd(X, full_matrices=False)
    xy = X @ vt[:2].T
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 6))
    for seg in segments.segments:
        s = seg["segment"]
        pts = xy[segments.labels == s]
        top = seg["top_interests"][0]["name"].split(" > ")[-1] if seg["top_interests"] else ""
        ax.scatter(pts[:, 0], pts[:, 1], s=8, alpha=0.6, label=f"{s}: {top} ({seg['users']})")
        cx, cy = pts.mean(axis=0)
        ax.annotate(str(s), (cx, cy), fontsize=11, weight="bold")
    ax.set_title(f"{segments.k} segments (silhouette {segments.silhouette:.2f})")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(fontsize=7, loc="best", markerscale=2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
