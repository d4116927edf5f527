"""Run models through a protocol and collect every measure into one report.

Per model: fitted on the phase's training data (timed), queried for every evaluated user with
a full ranking over the catalogue (timed; history items excluded by default), then scored:
accuracy at each K with 95% bootstrap CIs, beyond-accuracy measures, results per user-activity
segment (cold < 5 training interactions, mid < 50, heavy) and for cold target items (< 5
training users), and the process's peak resident memory while the model ran. ``tune`` runs a
small grid on the validation phase first and keeps the best NDCG@10.
"""

from __future__ import annotations

import itertools
import os
import resource
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tansuo.evaluation import metrics as M
from tansuo.evaluation.protocols import EvalSplit, Interactions, Phase, leave_one_out
from tansuo.models.base import HistoryContext, ModelConfig, Recommender, TrainData

__all__ = ["EvalConfig", "ModelResult", "EvalReport", "evaluate", "tune", "run_phase",
           "yardstick"]


@dataclass(frozen=True)
class EvalConfig:
    ks: tuple[int, ...] = (10, 20)
    """Cut-offs for every top-K measure."""
    exclude_seen: bool = True
    """Remove the user's history items from the ranking."""
    n_boot: int = 1000
    """Bootstrap resamples for confidence intervals."""
    seed: int = 0
    segments: tuple[int, int] = (5, 50)
    """User activity bounds: cold < first ≤ mid < second ≤ heavy (training interactions)."""
    cold_item_max: int = 4
    """Items with at most this many training users count as cold."""
    batch_users: int = 512
    """Users scored per batch (bounds memory: batch × catalogue floats)."""

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks must be positive cut-offs, got {self.ks}")


class _PeakRSS:
    """Samples this process's resident memory in a thread; ``peak_mb`` after ``stop``."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):  # not Linux: the peak so far, from the OS
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> _PeakRSS:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


@dataclass
class ModelResult:
    name: str
    config: dict[str, Any]
    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]]
    beyond: dict[str, float]
    segments: dict[str, dict[str, Any]]
    cold_items: dict[str, Any]
    train_seconds: float
    score_seconds: float
    peak_rss_mb: float
    per_user: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    tuning: list[dict[str, Any]] = field(default_factory=list)
    exposure: np.ndarray | None = field(repr=False, default=None)
    fit_info: dict[str, Any] = field(default_factory=dict)
    """What the model reports about its own training (epochs, best epoch, ...)."""
    seeds: list[dict[str, Any]] = field(default_factory=list)
    """One entry per seed when the result is a mean over several seeds."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "metrics": {k: round(v, 6) for k, v in self.metrics.items()},
            "ci": {k: [round(lo, 6), round(hi, 6)] for k, (lo, hi) in self.ci.items()},
            "beyond_accuracy": {k: round(v, 6) for k, v in self.beyond.items()},
            "segments": self.segments,
            "cold_items": self.cold_items,
            "train_seconds": round(self.train_seconds, 3),
            "score_seconds": round(self.score_seconds, 3),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "tuning": self.tuning,
            "fit_info": self.fit_info,
            "seeds": self.seeds,
        }


@dataclass
class EvalReport:
    dataset: str
    protocol: str
    split: dict[str, Any]
    config: EvalConfig
    models: dict[str, ModelResult]
    paired: dict[str, dict[str, Any]] = field(default_factory=dict)
    peers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Other libraries' results on the same split (``tansuo evaluate --peers DIR``)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "protocol": self.protocol,
            "split": self.split,
            "ks": list(self.config.ks),
            "exclude_seen": self.config.exclude_seen,
            "models": {n: r.to_dict() for n, r in self.models.items()},
            "paired": self.paired,
            "peers": self.peers,
        }


def _train_data(phase: Phase, item_category: np.ndarray | None,
                item_text: np.ndarray | None = None) -> TrainData:
    return TrainData(phase.train, item_category, item_text)


def _rank(model: Recommender, phase: Phase, cfg: EvalConfig) -> np.ndarray:
    kmax = max(cfg.ks)
    out = []
    context = (HistoryContext(phase.history_types, phase.history_times, phase.now)
               if len(phase.now) == phase.n_users else None)
    for start in range(0, phase.n_users, cfg.batch_users):
        rows = slice(start, start + cfg.batch_users)
        users = phase.users[rows]
        hist = phase.history[rows]
        scores = model.score(users, hist, context[rows] if context is not None else None)
        out.append(M.top_k(scores, kmax, hist if cfg.exclude_seen else None))
    return np.vstack(out) if out else np.zeros((0, kmax), dtype=np.int64)


def run_phase(model: Recommender, phase: Phase, cfg: EvalConfig, fit: bool = True,
              item_category: np.ndarray | None = None, item_text: np.ndarray | None = None
              ) -> tuple[np.ndarray, dict[str, np.ndarray], float, float, float]:
    """Fit (optionally) and rank: (ranked, per-user metrics, fit s, score s, peak MB)."""
    with _PeakRSS() as rss, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*OpenBLAS is configured.*")
        started = time.perf_counter()
        if fit:
            model.fit(_train_data(phase, item_category, item_text))
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        ranked = _rank(model, phase, cfg)
        score_s = time.perf_counter() - started
    per_user: dict[str, np.ndarray] = {}
    for k in cfg.ks:
        per_user.update(M.accuracy(ranked, phase.targets, k))
    return ranked, per_user, fit_s, score_s, rss.peak_mb


def _summaries(values: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, Any]:
    return {"users": int(mask.sum()),
            **{k: round(float(v[mask].mean()), 6) if mask.any() else None
               for k, v in values.items()}}


def _segment_masks(split: EvalSplit, phase: Phase, cfg: EvalConfig) -> dict[str, Any]:
    """User-activity segments and users whose targets are all cold items."""
    train = phase.train
    item_users = np.bincount(train.item, minlength=len(split.items))
    activity = np.bincount(train.user, minlength=len(split.users))[phase.users]
    lo, hi = cfg.segments
    segments = {f"cold (<{lo})": activity < lo, f"mid ({lo}-{hi - 1})":
                (activity >= lo) & (activity < hi), f"heavy (>={hi})": activity >= hi}
    cold_target = np.array([bool(len(t)) and bool(np.all(item_users[t] <= cfg.cold_item_max))
                            for t in phase.targets], dtype=bool)
    return {"segments": segments, "cold_target": cold_target}


def _result(name: str, model: Recommender, split: EvalSplit, phase: Phase, cfg: EvalConfig,
            ranked: np.ndarray, per_user: dict[str, np.ndarray], fit_s: float, score_s: float,
            peak: float, item_category: np.ndarray | None,
            item_vectors: np.ndarray | None) -> ModelResult:
    train = phase.train
    n_items = len(split.items)
    item_users = np.bincount(train.item, minlength=n_items).astype(np.float64)
    train_users = len(np.unique(train.user))
    masks = _segment_masks(split, phase, cfg)
    seg_masks, cold_target = masks["segments"], masks["cold_target"]
    beyond: dict[str, float] = {}
    for k in cfg.ks:
        top = ranked[:, :k]
        beyond[f"coverage@{k}"] = M.coverage(top, n_items)
        beyond[f"novelty@{k}"] = M.novelty(top, item_users, train_users)
        beyond[f"arp@{k}"] = M.average_popularity(top, item_users)
        beyond[f"gini@{k}"] = M.gini(top, n_items)
        if item_category is not None:
            beyond[f"ild_category@{k}"] = M.ild_category(top, item_category)
        if item_vectors is not None:
            beyond[f"ild_embedding@{k}"] = M.ild_embedding(top, item_vectors)
    metric_means = {k: float(v.mean()) if len(v) else 0.0 for k, v in per_user.items()}
    ci = {k: M.bootstrap_ci(v, cfg.n_boot, seed=cfg.seed) for k, v in per_user.items()}
    return ModelResult(
        name=name, config=model.config.to_dict(), metrics=metric_means, ci=ci, beyond=beyond,
        segments={s: _summaries(per_user, m) for s, m in seg_masks.items()},
        cold_items=_summaries(per_user, cold_target), train_seconds=fit_s,
        score_seconds=score_s, peak_rss_mb=peak, per_user=per_user,
        exposure=np.bincount(ranked[:, :min(cfg.ks)].ravel(), minlength=n_items),
    )


def tune(factory: Callable[[int], Recommender], split: EvalSplit, cfg: EvalConfig,
         item_category: np.ndarray | None = None, metric: str = "ndcg@10",
         item_text: np.ndarray | None = None) -> tuple[ModelConfig, list[dict[str, Any]]]:
    """Grid search on the validation phase (seed ``cfg.seed``); the best config and trials."""
    base = factory(cfg.seed)
    space = type(base).search_space
    if not space:
        return base.config, []
    tune_cfg = EvalConfig(ks=tuple(sorted({*cfg.ks, 10})), exclude_seen=cfg.exclude_seen,
                          n_boot=0, seed=cfg.seed, batch_users=cfg.batch_users)
    keys = sorted(space)
    trials: list[dict[str, Any]] = []
    best_value, best_config = -1.0, base.config
    for values in itertools.product(*(space[k] for k in keys)):
        config = base.config.replace(**dict(zip(keys, values, strict=True)))
        model = type(base)(config)
        _, per_user, fit_s, _, _ = run_phase(model, split.valid, tune_cfg,
                                             item_category=item_category, item_text=item_text)
        value = float(per_user[metric].mean()) if len(per_user[metric]) else 0.0
        trials.append({"config": config.to_dict(), metric: round(value, 6),
                       "train_seconds": round(fit_s, 3)})
        if value > best_value:
            best_value, best_config = value, config
    return best_config, trials


def evaluate(
    split: EvalSplit,
    models: dict[str, Callable[[int], Recommender]],
    cfg: EvalConfig | None = None,
    dataset: str = "store",
    item_category: np.ndarray | None = None,
    item_vectors: np.ndarray | None = None,
    do_tune: bool = False,
    progress: bool | None = None,
    save_dir: Path | None = None,
    item_text: np.ndarray | None = None,
    seeds: Sequence[int] | None = None,
) -> EvalReport:
    """Evaluate each model on the split's test phase (after tuning on validation if asked).

    ``models`` maps a label to ``factory(seed)``. With several ``seeds`` each model is trained
    once per seed (tuning, if asked, runs once with the first seed and its best settings are
    reused); the result is the mean over seeds, its CIs come from bootstrapping users' metrics
    averaged over the seeds, and ``ModelResult.seeds`` keeps every run.
    """
    cfg = cfg or EvalConfig()
    seeds = tuple(seeds) if seeds else (cfg.seed,)
    results: dict[str, ModelResult] = {}
    runs = [(name, seed) for name in models for seed in seeds]
    bar = tqdm(runs, desc="evaluating", unit="fit", disable=(
        None if progress is None else not progress), leave=False)
    tuned: dict[str, tuple[ModelConfig, list[dict[str, Any]]]] = {}
    per_seed: dict[str, list[ModelResult]] = {}
    for name, seed in bar:
        bar.set_postfix_str(f"{name} seed {seed}" if len(seeds) > 1 else name)
        factory = models[name]
        model = factory(seed)
        if do_tune:
            if name not in tuned:
                tuned[name] = tune(factory, split, replace(cfg, seed=seeds[0]), item_category,
                                   item_text=item_text)
            best, _ = tuned[name]
            if "seed" in best.to_dict():
                best = best.replace(seed=seed)
            model = type(model)(best)
        ranked, per_user, fit_s, score_s, peak = run_phase(model, split.test, cfg,
                                                           item_category=item_category,
                                                           item_text=item_text)
        result = _result(name, model, split, split.test, cfg, ranked, per_user, fit_s,
                         score_s, peak, item_category, item_vectors)
        result.tuning = tuned[name][1] if do_tune else []
        result.fit_info = model.fit_info()
        per_seed.setdefault(name, []).append(result)
        if save_dir is not None:
            model.save(save_dir / (name if len(seeds) == 1 else f"{name}-seed{seed}"))
    for name, rs in per_seed.items():
        results[name] = rs[0] if len(rs) == 1 else _merge_seeds(rs, seeds, split, cfg)
    report = EvalReport(dataset, split.protocol, dict(split.info), cfg, results)
    report.paired = paired_tests(results, f"ndcg@{min(cfg.ks)}", cfg)
    return report


def _merge_seeds(runs: list[ModelResult], seeds: Sequence[int], split: EvalSplit,
                 cfg: EvalConfig) -> ModelResult:
    """One result from several seeds: means, and CIs over users' seed-averaged metrics."""
    first = runs[0]
    per_user = {k: np.mean([r.per_user[k] for r in runs], axis=0) for k in first.per_user}
    masks = _segment_masks(split, split.test, cfg)
    mean = lambda vals: float(np.mean(vals))  # noqa: E731
    return ModelResult(
        name=first.name, config={**first.config, "seed": list(seeds)},
        metrics={k: float(v.mean()) if len(v) else 0.0 for k, v in per_user.items()},
        ci={k: M.bootstrap_ci(v, cfg.n_boot, seed=cfg.seed) for k, v in per_user.items()},
        beyond={k: mean([r.beyond[k] for r in runs]) for k in first.beyond},
        segments={s: _summaries(per_user, m) for s, m in masks["segments"].items()},
        cold_items=_summaries(per_user, masks["cold_target"]),
        train_seconds=mean([r.train_seconds for r in runs]),
        score_seconds=mean([r.score_seconds for r in runs]),
        peak_rss_mb=max(r.peak_rss_mb for r in runs), per_user=per_user, tuning=first.tuning,
        exposure=np.sum([r.exposure for r in runs if r.exposure is not None], axis=0),
        seeds=[{"seed": int(s), "metrics": {k: round(v, 6) for k, v in r.metrics.items()},
                "train_seconds": round(r.train_seconds, 3), "fit_info": r.fit_info}
               for s, r in zip(seeds, runs, strict=True)],
    )


def paired_tests(results: dict[str, ModelResult], metric: str, cfg: EvalConfig
                 ) -> dict[str, dict[str, Any]]:
    """Every model against the best one on ``metric`` (same users, paired)."""
    if len(results) < 2:
        return {}
    best = max(results, key=lambda n: results[n].metrics[metric])
    out: dict[str, dict[str, Any]] = {}
    for name, r in results.items():
        if name == best:
            continue
        t = M.paired_test(results[best].per_user[metric], r.per_user[metric], cfg.n_boot,
                          cfg.seed)
        out[f"{best} vs {name}"] = {"metric": metric, "mean_difference": round(t.mean_difference,
                                                                               6),
                                    "ci": [round(t.ci[0], 6), round(t.ci[1], 6)],
                                    "p_value": t.p_value}
    return out


def yardstick(model: Recommender, inter: Interactions, item_text: np.ndarray | None = None
              ) -> dict[str, Any] | None:
    """The service's yardstick for an untrained ``model`` on ``inter``: leave-one-out NDCG@10
    and HR@10, full ranking, as ``tansuo train --evaluate`` records it and a reload compares
    it. None when no user has the three interactions leave-one-out needs."""
    split = leave_one_out(inter)
    if split.test.n_users == 0:
        return None
    _, per_user, *_ = run_phase(model, split.test, EvalConfig(ks=(10,), n_boot=0),
                                item_text=item_text)
    return {"protocol": "loo", "users": int(split.test.n_users),
            "ndcg@10": round(float(per_user["ndcg@10"].mean()), 6),
            "hr@10": round(float(per_user["hr@10"].mean()), 6)}
