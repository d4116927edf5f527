"""Differential privacy for released aggregate counts: segment sizes, trends, popular items.

Every count that leaves Tansuo in a report or on the dashboard goes through three steps:

1. **Contribution bounding** (:func:`segment_sizes`, :func:`bounded_user_counts`): each user's
   influence on the table of counts is capped, so the *sensitivity* — how much the whole table
   can change, in L1 distance, when one user and all of their events are added or removed —
   is a known, true number rather than a hope.
2. **Noise** (:func:`release_counts`): the discrete Laplace mechanism of OpenDP
   (``make_laplace`` on a vector of integers, scale = sensitivity / ε) is applied to the
   bounded counts; the measurement's own privacy map is checked to give exactly the ε asked.
3. **Accounting** (:class:`PrivacyBudget`): each release spends its ε from a ledger kept per
   data directory, *before* anything is released; when the total would be exceeded the
   release is refused (:class:`BudgetExhausted`).

Noisy values are then clamped at 0 and, for popular items, ranked: post-processing, which
cannot weaken the guarantee. The key set matters too: counts are released for the keys of
``domain`` when one is given (segment ids, the item catalogue, the interest vocabulary: public
lists, zero-filled), otherwise for the keys present in the data — in which case *which* keys
appear is not protected (see docs/privacy-dp.md).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from numbers import Integral, Real
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tansuo.errors import MissingDependencyError, TansuoError

if TYPE_CHECKING:
    from tansuo.config import Settings

try:  # POSIX: also serialise spends between processes (service + CLI on one data directory)
    import fcntl
except ImportError:  # pragma: no cover - Windows: the in-process lock only
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "BudgetExhausted",
    "BudgetLedgerError",
    "PrivacyBudget",
    "DPRelease",
    "MECHANISM",
    "release_counts",
    "segment_sizes",
    "bounded_user_counts",
    "dp_segment_sizes",
    "dp_popular_items",
    "dp_interest_counts",
]

MECHANISM = "discrete Laplace (OpenDP make_laplace on integers)"
BUDGET_FILE = Path("privacy") / "dp-budget.json"
# Floating-point slack when comparing spent + ε with the total: OpenDP's privacy map rounds
# *up* (1/3 as scale gives ε = 3.0000000000000004), which must not refuse the last release.
_SLACK = 1e-9
_I32_MAX = 2**31 - 1  # OpenDP's `T=int` is i32


class BudgetExhausted(TansuoError):
    """A release would spend more epsilon than the data directory's total budget has left."""

    def __init__(self, label: str, epsilon: float, remaining: float, total: float) -> None:
        self.label, self.epsilon, self.remaining, self.total = label, epsilon, remaining, total
        super().__init__(
            f"differential privacy budget exhausted: release {label!r} asks for ε = "
            f"{epsilon:g} but only {remaining:g} of the total {total:g} is left. Nothing was "
            f"released. To allow more releases, raise TANSUO_DP_TOTAL_EPSILON (a larger total "
            f"means a weaker overall guarantee), or lower TANSUO_DP_EPSILON per release.")


class BudgetLedgerError(TansuoError):
    """The budget ledger exists but cannot be read; releases are refused until it is fixed."""


# One lock per ledger file, shared by every PrivacyBudget of this process on that file.
_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path, threading.Lock())


class PrivacyBudget:
    """The ε ledger of one data directory, kept at ``<home>/privacy/dp-budget.json``.

    Accounting is **sequential composition under pure ε-differential privacy**: releases
    computed from the same data add up, so the guarantee of everything released so far is
    ε = :attr:`spent` (at most ``total_epsilon``). This is deliberately conservative — releases
    over disjoint users (parallel composition) are still charged in full.

    The file is the source of truth: it is re-read inside the lock on every spend (so several
    ``PrivacyBudget`` objects, threads, or — on POSIX — processes sharing the directory never
    overspend together), written atomically (temporary file + replace) with mode 0600. The
    total comes from the settings, not the file: lowering it takes effect at once.
    """

    def __init__(self, home: Path, total_epsilon: float) -> None:
        _check_epsilon(total_epsilon, "total_epsilon")
        self.path = (Path(home) / BUDGET_FILE).resolve()
        self.total_epsilon = float(total_epsilon)
        self._lock = _lock_for(self.path)

    @classmethod
    def from_settings(cls, settings: Settings) -> PrivacyBudget:
        """The ledger of ``settings.home`` with total ``settings.dp_total_epsilon``."""
        return cls(settings.home, settings.dp_total_epsilon)

    @property
    def releases(self) -> list[dict[str, Any]]:
        """Every recorded release, oldest first: ``label``, ``epsilon``, ``mechanism``, ``at``."""
        return self._read()

    @property
    def spent(self) -> float:
        """Total ε spent so far (sequential composition: the sum of the releases' ε)."""
        return math.fsum(r["epsilon"] for r in self._read())

    @property
    def remaining(self) -> float:
        """ε still available (never negative, even if the total was lowered below the spent)."""
        return max(0.0, self.total_epsilon - self.spent)

    def spend(self, epsilon: float, label: str, mechanism: str = MECHANISM) -> dict[str, Any]:
        """Record a release of ``epsilon``, or raise :class:`BudgetExhausted` recording nothing.

        Call it *before* computing or publishing the noisy values. Returns the new record.
        """
        _check_epsilon(epsilon, "epsilon")
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"label {label!r}: expected a non-empty description of the release")
        with self._lock, self._file_lock():
            releases = self._read()
            spent = math.fsum(r["epsilon"] for r in releases)
            if spent + epsilon > self.total_epsilon + _SLACK * max(1.0, self.total_epsilon):
                raise BudgetExhausted(label, float(epsilon),
                                      max(0.0, self.total_epsilon - spent), self.total_epsilon)
            record = {"label": label, "epsilon": float(epsilon), "mechanism": mechanism,
                      "at": datetime.now(UTC).isoformat(timespec="seconds")}
            releases.append(record)
            self._write(releases)
        return dict(record)

    def _read(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            releases = data["releases"]
            for r in releases:  # fail closed on anything that would mis-sum
                if not isinstance(r.get("epsilon"), int | float) or r["epsilon"] < 0:
                    raise ValueError(f"bad epsilon in record {r!r}")
            return [dict(r) for r in releases]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise BudgetLedgerError(
                f"the differential privacy budget ledger {self.path} cannot be read ({e}); "
                f"releases are refused until it is repaired or restored from a backup "
                f"(deleting it would forget the ε already spent)") from e

    def _write(self, releases: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"version": 1, "accounting": "sequential composition, pure ε-DP",
                   "total_epsilon": self.total_epsilon, "releases": releases}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".dp-budget.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(payload, f, indent=2, ensure_ascii=False)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock


@dataclass
class DPRelease:
    """One differentially private table of counts, with what it guarantees."""

    values: dict[str, int]
    """The noisy counts, post-processed to non-negative integers (ranked for top lists)."""
    epsilon: float
    """ε of this release, as given by the OpenDP measurement's privacy map."""
    sensitivity: int
    """Largest L1 change of the true counts when one user (all their events) is added/removed."""
    scale: float
    """Scale of the discrete Laplace noise (sensitivity / ε); standard deviation ≈ scale·√2."""
    mechanism: str
    label: str
    guarantee: str
    """The guarantee in one plain-English sentence."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _guarantee(epsilon: float, sensitivity: int) -> str:
    return (f"Adding or removing one shopper (with all their events) changes the probability "
            f"of any released table by at most a factor e^ε (ε = {epsilon:g}), because each "
            f"shopper can change these counts by at most {sensitivity} in total.")


def _check_epsilon(epsilon: Any, name: str) -> None:
    if (isinstance(epsilon, bool) or not isinstance(epsilon, Real)
            or not math.isfinite(epsilon) or epsilon <= 0):
        raise ValueError(f"{name} = {epsilon!r}: expected a finite number > 0")


def _check_positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} = {value!r}: expected an integer ≥ 1")


def _opendp() -> Any:
    try:
        import opendp.prelude as dp
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise MissingDependencyError(
            "differential privacy needs the 'opendp' package: pip install 'opendp>=0.12'") from e
    dp.enable_features("contrib")
    return dp


def release_counts(counts: Mapping[str, int], sensitivity: int, epsilon: float,
                   budget: PrivacyBudget | None, label: str) -> DPRelease:
    """Release ``counts`` with ε-differential privacy (discrete Laplace noise from OpenDP).

    ``sensitivity`` must be true: the largest L1 change of the whole table when one user is
    added or removed — get it from :func:`segment_sizes` or :func:`bounded_user_counts`.
    ``epsilon`` is spent from ``budget`` before any noise is drawn (``None``: not accounted —
    tests and offline experiments only); :class:`BudgetExhausted` means nothing was released.
    Empty ``counts`` give an empty release and spend nothing. Same keys out as in; values are
    clamped at 0 (post-processing, so the guarantee is unchanged).
    """
    _check_epsilon(epsilon, "epsilon")
    _check_positive_int(sensitivity, "sensitivity")
    keys = [str(k) for k in counts]
    true = []
    for k, v in counts.items():
        if isinstance(v, bool) or not isinstance(v, Integral) or not 0 <= v <= _I32_MAX:
            raise ValueError(f"count of {k!r} = {v!r}: expected an integer in [0, {_I32_MAX}]")
        true.append(int(v))
    sensitivity = int(sensitivity)
    scale = sensitivity / float(epsilon)
    if not keys:
        return DPRelease({}, float(epsilon), sensitivity, scale, MECHANISM, label,
                         _guarantee(float(epsilon), sensitivity))

    dp = _opendp()
    meas = dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int),
                             scale=scale)
    actual = float(meas.map(sensitivity))
    if not math.isclose(actual, epsilon, rel_tol=1e-9):  # invariant of OpenDP's privacy map
        raise RuntimeError(f"OpenDP's privacy map gives ε = {actual!r} for scale {scale!r} and "
                           f"sensitivity {sensitivity}, expected {epsilon!r}")
    if budget is not None:
        budget.spend(actual, label, MECHANISM)
    noisy = meas(true)
    values = {k: max(0, int(v)) for k, v in zip(keys, noisy, strict=True)}
    return DPRelease(values, actual, sensitivity, scale, MECHANISM, label,
                     _guarantee(actual, sensitivity))


# --- contribution bounding ------------------------------------------------------------------

def segment_sizes(labels: Sequence[int], domain: Iterable[int] | None = None) -> dict[str, int]:
    """Users per segment, from one segment label per user (each user in exactly one segment).

    What one user can change: adding or removing a user changes exactly one count by 1, so the
    L1 sensitivity is **1**. The caller must pass one label per distinct user. With ``domain``
    (the segment ids, e.g. ``range(k)``) every segment is present, zero-filled, so the set of
    keys reveals nothing; a label outside it is an error.
    """
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels: expected one segment label per user, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels: expected integer segment ids, got dtype {arr.dtype}")
    uniq, n = np.unique(arr, return_counts=True)
    found = {str(int(u)): int(c) for u, c in zip(uniq, n, strict=True)}
    if domain is None:
        return found
    keys = [str(int(d)) for d in domain]
    outside = sorted(set(found) - set(keys), key=int)
    if outside:
        raise ValueError(f"segment labels {outside[:10]} are not in the domain {keys[:10]}...")
    return {k: found.get(k, 0) for k in keys}


def bounded_user_counts(users: Sequence[Any], keys: Sequence[Any], max_keys_per_user: int,
                        max_per_key: int = 1, domain: Iterable[Any] | None = None,
                        ) -> tuple[dict[str, int], int]:
    """Counts per key, with each user's contribution capped; returns (counts, sensitivity).

    ``users`` and ``keys`` are parallel, one row per event. Each user contributes to at most
    ``max_keys_per_user`` distinct keys — their most frequent ones, ties broken by key — and at
    most ``max_per_key`` to each (``max_per_key=1``: distinct users per key).

    What one user can change: adding or removing a user (all of their rows) changes at most
    ``max_keys_per_user`` counts, each by at most ``max_per_key``, so the L1 sensitivity is
    ``max_keys_per_user * max_per_key`` — returned with the counts. It holds because a user's
    capped contribution depends on their own rows only. Rows with a missing user are ignored.
    With ``domain`` (a public key list: the catalogue, the interest vocabulary) the counts are
    exactly its keys, zero-filled, and rows of other keys are dropped before capping.
    """
    _check_positive_int(max_keys_per_user, "max_keys_per_user")
    _check_positive_int(max_per_key, "max_per_key")
    if len(users) != len(keys):
        raise ValueError(f"users and keys: expected parallel sequences, got lengths "
                         f"{len(users)} and {len(keys)}")
    sensitivity = int(max_keys_per_user) * int(max_per_key)
    domain_keys = None if domain is None else list(dict.fromkeys(str(d) for d in domain))
    df = pd.DataFrame({"user": pd.Series(list(users), dtype=object),
                       "key": pd.Series([str(k) for k in keys], dtype=object)})
    df = df[df["user"].notna()]
    if domain_keys is not None:
        df = df[df["key"].isin(domain_keys)]
    if df.empty:
        found: dict[str, int] = {}
    else:
        per = df.groupby(["user", "key"], sort=False).size().rename("n").reset_index()
        per = per.sort_values(["n", "key"], ascending=[False, True], kind="stable")
        per = per[per.groupby("user", sort=False).cumcount() < max_keys_per_user]
        per["n"] = per["n"].clip(upper=max_per_key)
        summed = per.groupby("key")["n"].sum()
        found = {str(k): int(v) for k, v in summed.items()}
    if domain_keys is None:
        return dict(sorted(found.items())), sensitivity
    return {k: found.get(k, 0) for k in domain_keys}, sensitivity


# --- releases used by reports and the dashboard ---------------------------------------------

def dp_segment_sizes(labels: Sequence[int], epsilon: float, budget: PrivacyBudget | None,
                     domain: Iterable[int] | None = None, label: str = "segment sizes",
                     ) -> DPRelease:
    """Noisy users per segment (sensitivity 1); see :func:`segment_sizes`."""
    return release_counts(segment_sizes(labels, domain), 1, epsilon, budget, label)


def dp_popular_items(users: Sequence[Any], items: Sequence[Any], epsilon: float,
                     budget: PrivacyBudget | None, max_items_per_user: int = 20, top: int = 20,
                     domain: Iterable[Any] | None = None, label: str = "popular items",
                     ) -> DPRelease:
    """The ``top`` items by noisy number of distinct users (sensitivity ``max_items_per_user``).

    Every item's count is released with noise and the top list is chosen from the *noisy*
    counts (post-processing; ranking by the true counts would leak), best first, ties by item
    id; items whose noisy count is 0 are left out.
    """
    _check_positive_int(top, "top")
    counts, sens = bounded_user_counts(users, items, max_items_per_user, 1, domain)
    rel = release_counts(counts, sens, epsilon, budget, label)
    ranked = sorted(((k, v) for k, v in rel.values.items() if v > 0),
                    key=lambda kv: (-kv[1], kv[0]))
    rel.values = dict(ranked[:top])
    return rel


def dp_interest_counts(users: Sequence[Any], interests: Sequence[Any], epsilon: float,
                       budget: PrivacyBudget | None, max_interests_per_user: int = 5,
                       max_per_interest: int = 10, domain: Iterable[Any] | None = None,
                       label: str = "interest counts") -> DPRelease:
    """Noisy events per interest (trend counts): each user counts for at most
    ``max_interests_per_user`` interests and at most ``max_per_interest`` events in each
    (sensitivity = their product, 50 by default). One call per time window: each spends ε.
    """
    counts, sens = bounded_user_counts(users, interests, max_interests_per_user,
                                       max_per_interest, domain)
    return release_counts(counts, sens, epsilon, budget, label)
