"""Off-policy estimates from the service's own logs.

The service appends every served slate to ``<home>/logs/served.jsonl`` (request id, user,
items by position, the propensity of each, and the pure-exploitation slate for the same
request); clicks come back as events carrying ``request_id`` and ``position``. Each (request,
position) is one round of a position-based log. Two target policies can be evaluated:

- ``logged``: the policy that served (its on-policy CTR, for reference and as a check: IPW
  with π_e = the logging policy gives exactly the observed CTR);
- ``greedy``: explore = 0, i.e. the exploitation slate. π_e(item | position) = 1 if the item is
  the exploitation slate's item at that position, else 0; IPW and SNIPS weight the logged
  clicks by π_e / propensity (independent-position assumption, as in the Open Bandit Pipeline).

Each round is encoded with a two-action local space (0 = the logged item, 1 = anything else)
so :mod:`tansuo.evaluation.ope` computes the estimates and bootstrap intervals unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tansuo.evaluation import ope

__all__ = ["LoggedSlates", "load_served", "evaluate_served"]

_CLICKS = ("click", "cart", "purchase", "favorite")


@dataclass
class LoggedSlates:
    reward: np.ndarray
    position: np.ndarray
    pscore: np.ndarray
    greedy_match: np.ndarray
    """1 where the logged item is the exploitation slate's item at that position."""
    requests: int

    @property
    def rounds(self) -> int:
        return len(self.reward)


def load_served(path: str | Path, clicks: pd.DataFrame) -> LoggedSlates:
    """Join the served-slate log with click events (columns request_id, position, type)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no served-slate log at {path}")
    clicked = set()
    if len(clicks):
        c = clicks[clicks["type"].isin(_CLICKS) & clicks["request_id"].notna()
                   & clicks["position"].notna()]
        clicked = {(str(r), int(p)) for r, p in zip(c["request_id"], c["position"], strict=True)}
    reward, position, pscore, match = [], [], [], []
    requests = 0
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            items, props = rec["items"], rec["propensities"]
            exploit = rec.get("exploit") or []
            rid = str(rec["request_id"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: not a served-slate record ({exc})") from exc
        requests += 1
        for pos, (item, prop) in enumerate(zip(items, props, strict=True)):
            reward.append(1.0 if (rid, pos) in clicked else 0.0)
            position.append(pos)
            pscore.append(float(prop))
            match.append(1.0 if pos < len(exploit) and exploit[pos] == item else 0.0)
    return LoggedSlates(np.array(reward), np.array(position, dtype=np.int64),
                        np.array(pscore), np.array(match), requests)


def evaluate_served(log: LoggedSlates, policy: str = "greedy",
                    estimators: tuple[str, ...] = ("ipw", "snips"), n_boot: int = 1000,
                    seed: int = 0) -> dict[str, ope.Estimate]:
    if log.rounds == 0:
        raise ValueError("the log has no served slates")
    if policy not in ("greedy", "logged"):
        raise ValueError(f"policy {policy!r}: expected greedy or logged")
    bad = sorted(set(estimators) - {"ipw", "snips"})
    if bad:
        raise ValueError(f"estimators {bad} need a reward model; on service logs use ipw, snips")
    n, k = log.rounds, int(log.position.max()) + 1
    target = log.greedy_match if policy == "greedy" else log.pscore
    dist = np.zeros((n, 2, k))
    dist[:, 1, :] = 1.0  # other positions: a valid distribution that the round never uses
    rows = np.arange(n)
    dist[rows, 0, log.position] = target
    dist[rows, 1, log.position] = 1.0 - target
    inputs = {"reward": log.reward, "action": np.zeros(n, dtype=np.int64),
              "position": log.position, "pscore": log.pscore, "action_dist": dist}
    return {e: ope.bootstrap_ci(e, n_boot=n_boot, seed=seed, **inputs) for e in estimators}
