"""SASRec: causal self-attention over a user's recent interactions (Kang & McAuley, 2018).

The input at each position of a user's last ``max_len`` interactions is the sum of

- the item's representation (``item_repr``): a learned ID embedding (``"id"``), a learned
  linear projection of the item's frozen text embedding ``TrainData.item_text`` (``"text"``),
  or both summed (``"id+text"``; the ID part of an item with no training interactions is held
  at zero, so such an item is its text alone);
- the event type of the interaction (view, click, cart, purchase, …; unknown → its own slot);
- the log-bucketed time since the previous interaction, and the time until the next one
  (for the last position: until ``now``, the moment the recommendation is asked for);
- a learned position embedding.

``layers`` pre-norm transformer blocks with a causal mask turn it into one hidden state per
position; the state at the last position, dotted with the same item representations (weight
tying), scores every item. Every sequence starts with a learned begin token, so an empty
history (an unknown user with nothing seen yet) is scored from the begin token's state, which
is trained to predict users' first items: scores are never NaN.

Training: every position predicts the next item, full softmax cross-entropy over the
catalogue, or — when the catalogue has more than ``sampled_softmax_above`` items — a sampled
softmax over ``negatives`` shared negatives with the logQ correction. ``fit`` holds out each
user's last training interaction (users with ≥ 3) as an internal validation target, measures
NDCG@10 on it after every epoch (full ranking, history excluded), keeps the best weights and
stops after ``patience`` epochs without improvement; ``training_log`` and ``best_epoch``
record the run. ``fine_tune`` continues training from the current weights on new data over
the same item vocabulary.

Queries: ``score`` = ``user_vectors`` @ ``item_vectors``.T. ``users`` plays no part (an
unknown user, -1, is fine): only the given history, its event types and times, and ``now``
do. Without a :class:`HistoryContext` types and times are "unknown", slots trained by
hiding the context of a share (``context_dropout``) of the training sequences.

Differential privacy (optional, ``dp_epsilon``; needs ``pip install 'tansuo[dp]'``): ``fit``
trains with DP-SGD through Opacus (:mod:`tansuo.privacy.dpsgd`): each step Poisson-samples
users (``batch_size`` expected), takes one random window of ≤ ``max_len`` interactions of each
sampled user, clips each user's gradient to ``dp_max_grad_norm`` and adds Gaussian noise
calibrated so that exactly ``epochs`` epochs spend ``dp_epsilon`` at ``dp_delta``: the
released weights are (ε, δ) user-level DP (adding or removing all of one user's
interactions). No validation hold-out, early stopping, training loss or data-dependent item
masks are used or logged (nor the sizes of the sampled batches); the item catalogue (and item
text) and the number of users are treated as public.
``fit_info()["dp"]`` records the ε spent (RDP accountant), δ, clipping norm, noise multiplier
and sample rate. Opacus is imported only there.

Ensembles (``members``): several networks trained independently on the same data (different
seeds, each with its own early stopping) and scored by the mean of their scores. A single
network's ranking quality varies a lot from seed to seed on small data; the mean of a few
varies less and ranks better (docs/benchmarks.md has the measurements). Because the mean of
dot products is one dot product of the side-by-side vectors, the ensemble is served exactly
like one network with wider vectors.

Persistence: the state dict as numpy arrays plus a small JSON meta array (event types, text
width, ``best_epoch``, ``training_log``, DP parameters of a DP fit); no pickle. An ensemble
stores each member's arrays under the prefix ``member{j}.``.
"""

from __future__ import annotations

import copy
import json
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from tansuo.data.schema import EventType
from tansuo.evaluation.metrics import accuracy, top_k
from tansuo.evaluation.protocols import Interactions
from tansuo.models.base import HistoryContext, ModelConfig, Recommender, TrainData

__all__ = ["SASRec", "SASRecConfig", "EVENT_TYPES", "time_bucket"]

#: Event types with their own embedding; slot 0 is padding, 1 unknown/none, 2+ these.
EVENT_TYPES: tuple[str, ...] = tuple(t.value for t in EventType)
_PAD, _UNKNOWN = 0, 1
_BOS = 1  # token 0 = padding, 1 = begin, item i = i + 2
_ITEM0 = 2
_ITEM_REPRS = ("id", "text", "id+text")
_SAMPLERS = ("uniform", "popularity")


@dataclass(frozen=True)
class SASRecConfig(ModelConfig):
    max_len: int = 50
    """Most recent interactions the model looks at."""
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    inner: int = 256
    """Width of the feed-forward layer of each block."""
    dropout: float = 0.2
    item_repr: str = "id"
    """"id", "text" (projection of TrainData.item_text) or "id+text"."""
    event_types: bool = True
    """Add an event-type embedding to each position."""
    time_gaps: bool = True
    """Add embeddings of the log-bucketed time since the previous and until the next event."""
    time_buckets: int = 64
    """Time-gap buckets (half-octaves of seconds; 64 reach ~70 years)."""
    context_dropout: float = 0.1
    """Share of training sequences whose event types and times are hidden, so queries
    without a HistoryContext are scored from trained 'unknown' slots."""
    epochs: int = 50
    """Most epochs ``fit`` trains for."""
    patience: int = 5
    """Epochs without a better validation NDCG@10 before ``fit`` stops."""
    batch_size: int = 64
    """Training windows per step; a window is up to ``max_len`` predicted positions, so 64
    windows ≈ 3,200 targets per step (MovieLens-small: ~40 steps an epoch)."""
    lr: float = 3e-3
    """Adam learning rate (3e-3 reached MovieLens-small's best validation NDCG in ~11
    epochs; 1e-3 learns about half as fast per epoch)."""
    weight_decay: float = 0.0
    sampled_softmax_above: int = 50_000
    """Catalogues larger than this train with a sampled softmax instead of the full one."""
    negatives: int = 1024
    """Shared negatives per batch of the sampled softmax."""
    negative_sampling: str = "popularity"
    """"uniform" or "popularity" (∝ training users + 1); logQ-corrected either way."""
    valid_users: int = 10_000
    """Most users in the internal validation each epoch (a seeded sample; 0 = all)."""
    refit_on_full: bool = False
    """After early stopping, retrain from scratch on all training data (validation items
    included) for the best number of epochs; False keeps the best model as it is."""
    members: int = 1
    """Independently initialised networks trained on the same data, one after the other,
    each with its own early stopping (member ``j`` uses seed ``seed + 1000 * j``, so member 0
    is the single network of this seed). The model's score is the mean of the members'
    scores, so its item vectors are theirs side by side and its user vector theirs side by
    side divided by ``members``: retrieval stays one dot product. Averaging cancels much of
    one network's seed-to-seed variance (measured in docs/benchmarks.md); training and
    scoring cost grow linearly with ``members``."""
    seed: int = 0
    threads: int = 0
    """torch intra-op threads while fitting and scoring (0 = torch's default)."""
    device: str = "cpu"
    """"cpu" or "cuda"/"cuda:N" (falls back to the CPU with a warning if unavailable)."""
    dp_epsilon: float | None = None
    """Train with user-level differential privacy (DP-SGD, Opacus) at this ε; None = off.
    With DP, ``fit`` trains exactly ``epochs`` epochs on all the data (no validation
    hold-out, no early stopping), ``batch_size`` is the expected number of *users* per step
    (Poisson sampling) and each sampled user contributes one window of their sequence."""
    dp_delta: float | None = None
    """δ of the DP guarantee; None = 1 / (10 · number of users with interactions)."""
    dp_max_grad_norm: float = 1.0
    """Per-user gradient clipping norm C of DP-SGD."""

    def __post_init__(self) -> None:
        for name in ("dp_epsilon", "dp_delta"):  # model specs pass "4" / "none" as text
            raw = getattr(self, name)
            if isinstance(raw, str):
                low = raw.strip().lower()
                try:
                    value = None if low in ("", "none", "null", "inf") else float(low)
                except ValueError:
                    raise ValueError(f"invalid SASRec config: {name} must be a number or "
                                     f"none, got {raw!r}") from None
                object.__setattr__(self, name, value)
        checks = [
            (self.max_len >= 1, "max_len must be ≥ 1"),
            (self.hidden >= 1 and self.layers >= 1 and self.heads >= 1 and self.inner >= 1,
             "hidden, layers, heads and inner must be ≥ 1"),
            (self.hidden % max(self.heads, 1) == 0, "hidden must be divisible by heads"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (0.0 <= self.context_dropout <= 1.0, "context_dropout must be in [0, 1]"),
            (self.item_repr in _ITEM_REPRS, f"item_repr must be one of {_ITEM_REPRS}"),
            (self.time_buckets >= 3, "time_buckets must be ≥ 3"),
            (self.epochs >= 1 and self.patience >= 1, "epochs and patience must be ≥ 1"),
            (self.batch_size >= 1, "batch_size must be ≥ 1"),
            (self.lr > 0 and self.weight_decay >= 0, "lr must be > 0 and weight_decay ≥ 0"),
            (self.sampled_softmax_above >= 1 and self.negatives >= 1,
             "sampled_softmax_above and negatives must be ≥ 1"),
            (self.negative_sampling in _SAMPLERS,
             f"negative_sampling must be one of {_SAMPLERS}"),
            (self.valid_users >= 0 and self.threads >= 0, "valid_users and threads must be ≥ 0"),
            (self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:"),
             "device must be 'cpu', 'cuda' or 'cuda:N'"),
            (self.dp_epsilon is None or self.dp_epsilon > 0, "dp_epsilon must be > 0 or None"),
            (self.dp_delta is None or 0 < self.dp_delta < 1, "dp_delta must be in (0, 1)"),
            (self.dp_max_grad_norm > 0, "dp_max_grad_norm must be > 0"),
            (self.dp_epsilon is None or not self.refit_on_full,
             "refit_on_full cannot be combined with dp_epsilon (DP fits use all the data)"),
            (self.members >= 1, "members must be ≥ 1"),
            (self.dp_epsilon is None or self.members == 1,
             "members > 1 cannot be combined with dp_epsilon (every member would spend the "
             "whole ε on the same users: train one network)"),
        ]
        errors = [msg for ok, msg in checks if not ok]
        if errors:
            raise ValueError(f"invalid SASRec config: {'; '.join(errors)} (got {self})")

    @property
    def private(self) -> bool:
        """Whether ``fit`` trains with differential privacy."""
        return self.dp_epsilon is not None

    @property
    def uses_text(self) -> bool:
        return self.item_repr in ("text", "id+text")

    @property
    def uses_id(self) -> bool:
        return self.item_repr in ("id", "id+text")


def time_bucket(gap_ms: np.ndarray, buckets: int) -> np.ndarray:
    """Bucket of a time gap (ms): 2 + ⌊2·log2(1 + seconds)⌋, capped at ``buckets - 1``
    (0 is padding, 1 unknown). Negative gaps count as 0."""
    seconds = np.maximum(np.asarray(gap_ms, dtype=np.float64), 0.0) / 1000.0
    b = np.floor(2.0 * np.log2(1.0 + seconds)).astype(np.int64) + 2
    return np.minimum(b, buckets - 1)


def _type_codes(types: np.ndarray | None, n: int) -> np.ndarray:
    """Embedding slots of event type strings (None: all unknown)."""
    if types is None or not n:
        return np.full(n, _UNKNOWN, dtype=np.int64)
    names, inverse = np.unique(np.asarray(types).astype(str), return_inverse=True)
    lookup = {t: i + 2 for i, t in enumerate(EVENT_TYPES)}
    codes = np.array([lookup.get(t, _UNKNOWN) for t in names.tolist()], dtype=np.int64)
    return codes[inverse.ravel()]


# -- the network ---------------------------------------------------------------------------


# The network calls its layers' functions on their parameters (F.linear(x, layer.weight, ...))
# rather than the layers themselves: the same arithmetic, but a one-shopper query is some 60
# small operations, and the module-call machinery around each cost about a fifth of it. The
# same code runs an ensemble's networks at once (_Stacked): there every parameter has a
# leading member axis, and so has the hidden state.


def _ln(m: Any, x: torch.Tensor) -> torch.Tensor:
    if m.weight.dim() == 1:
        return F.layer_norm(x, m.normalized_shape, m.weight, m.bias, m.eps)
    shape = (m.weight.shape[0], *(1,) * (x.dim() - 2), m.weight.shape[1])  # stacked: M × d
    return (F.layer_norm(x, m.normalized_shape, None, None, m.eps) * m.weight.view(shape)
            + m.bias.view(shape))


def _lin(m: Any, x: torch.Tensor) -> torch.Tensor:
    if m.weight.dim() == 2:
        return F.linear(x, m.weight, m.bias)
    y = torch.matmul(x.flatten(1, -2), m.weight.transpose(1, 2))  # stacked: M × out × in
    if m.bias is not None:
        y = y + m.bias.unsqueeze(1)
    return y.view(*x.shape[:-1], -1)


def _emb(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return F.embedding(idx, table) if table.dim() == 2 else table[:, idx]


def _block(p: Any, x: torch.Tensor, mask: torch.Tensor | None, last_only: bool,
           training: bool) -> torch.Tensor:
    """One pre-norm block (``p``: a _Block or its stacked parameters) on ``x`` (… × b × n ×
    d). ``mask`` None: no padding, plain causal attention. ``last_only``: the output of the
    last position alone (… × b × 1 × d; it attends to every key, so only the keys' mask
    matters); the other positions' queries, projections and MLP are skipped."""
    d = x.shape[-1]

    def drop(t: torch.Tensor) -> torch.Tensor:
        return F.dropout(t, p.p, True) if training else t

    q, k, v = _lin(p.qkv, _ln(p.ln1, x)).unflatten(-1, (3, p.heads, d // p.heads)).movedim(
        -3, 0).transpose(-2, -3)
    if last_only:
        q, x = q[..., -1:, :], x[..., -1:, :]
        mask = None if mask is None else mask[..., -1:, :]
    lead = q.shape[:-3]
    merge = len(lead) > 1 and mask is None  # stacked members × batch as one 4-D batch (the
    if merge:                               # ONNX export of attention takes no more)
        q, k, v = (t.flatten(0, -4) for t in (q, k, v))
    a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                       is_causal=mask is None and not last_only,
                                       dropout_p=p.p if training else 0.0)
    if merge:
        a = a.unflatten(0, lead)
    x = x + drop(_lin(p.proj, a.transpose(-2, -3).flatten(-2)))
    h = drop(F.gelu(_lin(p.ff1, _ln(p.ln2, x))))
    return x + drop(_lin(p.ff2, h))


def _embed(p: Any, tokens: torch.Tensor, types: torch.Tensor, gap_prev: torch.Tensor,
           gap_next: torch.Tensor, training: bool, table: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The blocks' input and which positions are real tokens (not padding). ``table``: the
    finished item representations (``p.items()``), when a query has them at hand."""
    is_item = tokens >= _ITEM0
    idx = (tokens - _ITEM0).clamp(min=0).reshape(-1)
    e = (p.items(idx) if table is None else table[idx]).unflatten(-2, tokens.shape)
    e = torch.where(is_item.unsqueeze(-1), e, 0.0)
    e = e + (tokens == _BOS).unsqueeze(-1) * p.bos.view(*p.bos.shape[:-1], 1, 1, -1)
    valid = tokens != 0
    # positions count from the first real token (the begin token of a short history is
    # always at 0, in training and at query time alike)
    x = e + _emb(p.pos.weight, (valid.cumsum(1) - 1).clamp(min=0))
    if p.type_emb is not None:
        x = x + _emb(p.type_emb.weight, types)
    if p.c.time_gaps:
        x = x + _emb(p.gap_prev.weight, gap_prev) + _emb(p.gap_next.weight, gap_next)
    x = _ln(p.ln_in, x)
    return (F.dropout(x, p.c.dropout, True) if training else x), valid


def _last(p: Any, tokens: torch.Tensor, types: torch.Tensor, gap_prev: torch.Tensor,
          gap_next: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
    """The last position's hidden state (… × batch × hidden) of a _Net or _Stacked, as the
    training forward pass computes it, for queries: the columns that are padding in every row
    are dropped (positions count from each row's first real token, so nothing else changes),
    a batch without padding needs no mask, and the last block works on the last position
    only (a one-shopper query: ~0.8 of the full pass, benchmarks/bench_query.py)."""
    keep = max(int((tokens != 0).sum(1).max()) if tokens.shape[0] else 0, 1)
    tokens, types, gap_prev, gap_next = (t[:, -keep:]
                                         for t in (tokens, types, gap_prev, gap_next))
    x, valid = _embed(p, tokens, types, gap_prev, gap_next, False, table)
    mask: torch.Tensor | None = None
    if not bool(valid.all()):
        n = tokens.shape[1]
        eye = torch.eye(n, dtype=torch.bool, device=tokens.device)
        mask = ((p.causal[:n, :n].unsqueeze(0) & valid.unsqueeze(1)) | eye).unsqueeze(1)
    return _head(p, x, mask)


def _head(p: Any, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The blocks and the output norm of :func:`_last`, from the embedded input."""
    for j, block in enumerate(p.blocks):
        x = _block(block, x, mask, j == len(p.blocks) - 1, False)
    return _ln(p.ln_out, x[..., -1, :])


class _Block(nn.Module):
    """Pre-norm transformer block: masked multi-head self-attention and a GELU MLP."""

    def __init__(self, d: int, heads: int, inner: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, inner)
        self.ff2 = nn.Linear(inner, d)
        self.p = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return _block(self, x, mask, False, self.training)


class _Net(nn.Module):
    def __init__(self, c: SASRecConfig, n_items: int, text_dim: int, n_types: int) -> None:
        super().__init__()
        d = c.hidden
        self.c = c
        self.n_items = n_items
        if c.uses_id:
            self.item_id = nn.Embedding(n_items, d)
            if c.uses_text:  # start as the text model; IDs learn what text cannot say
                nn.init.zeros_(self.item_id.weight)
            else:
                nn.init.normal_(self.item_id.weight, std=0.02)
            # 1 for items with training interactions: the ID part of the others stays 0
            self.register_buffer("id_mask", torch.ones(n_items, 1))
        if c.uses_text:
            self.register_buffer("item_text", torch.zeros(n_items, text_dim))
            self.text_proj = nn.Linear(text_dim, d, bias=False)
        self.bos = nn.Parameter(torch.randn(d) * 0.02)
        self.pos = nn.Embedding(c.max_len, d)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.type_emb = nn.Embedding(n_types, d) if c.event_types else None
        if c.time_gaps:
            self.gap_prev = nn.Embedding(c.time_buckets, d)
            self.gap_next = nn.Embedding(c.time_buckets, d)
            for e in (self.gap_prev, self.gap_next):
                nn.init.normal_(e.weight, std=0.02)
        if self.type_emb is not None:
            nn.init.normal_(self.type_emb.weight, std=0.02)
        self.ln_in = nn.LayerNorm(d)
        self.blocks = nn.ModuleList(_Block(d, c.heads, c.inner, c.dropout)
                                    for _ in range(c.layers))
        self.ln_out = nn.LayerNorm(d)
        causal = torch.tril(torch.ones(c.max_len, c.max_len, dtype=torch.bool))
        self.register_buffer("causal", causal, persistent=False)
        # items with training interactions: only they compete in the training softmax (an item
        # nobody has interacted with yet is not evidence against anything)
        self.register_buffer("seen", torch.ones(n_items, dtype=torch.bool))

    def items(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Item representations (all items, or those at ``idx``)."""
        out: torch.Tensor | None = None
        if self.c.uses_id:
            if idx is None:
                out = self.item_id.weight * self.id_mask
            else:
                out = F.embedding(idx, self.item_id.weight) * self.id_mask[idx]
        if self.c.uses_text:
            text = F.linear(self.item_text if idx is None else self.item_text[idx],
                            self.text_proj.weight)
            out = text if out is None else out + text
        assert out is not None
        return out

    def forward(self, tokens: torch.Tensor, types: torch.Tensor, gap_prev: torch.Tensor,
                gap_next: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position (batch × max_len × hidden), left-padded input."""
        x, valid = _embed(self, tokens, types, gap_prev, gap_next, self.training)
        eye = torch.eye(tokens.shape[1], dtype=torch.bool, device=tokens.device)
        # causal, no padded keys; a padded query sees itself only (keeps softmax finite)
        mask = (self.causal.unsqueeze(0) & valid.unsqueeze(1)) | eye
        mask = mask.unsqueeze(1)
        for block in self.blocks:
            x = block(x, mask)
        return _ln(self.ln_out, x)

    def last(self, tokens: torch.Tensor, types: torch.Tensor, gap_prev: torch.Tensor,
             gap_next: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """``forward(...)[:, -1]`` for queries (see :func:`_last`), batch × hidden;
        ``table``: ``items()``, already computed."""
        return _last(self, tokens, types, gap_prev, gap_next, table)


class _Stacked:
    """Several networks of one shape as one, for queries: each parameter stacked on a leading
    member axis, so an ensemble runs every member in one pass of batched operations instead of
    one pass each. ``items``: the members' finished item representations side by side, items ×
    (members · hidden) — the ensemble's scoring vectors, shared rather than copied. A
    snapshot: rebuilt when any member's weights change."""

    def __init__(self, nets: Sequence[_Net], items: torch.Tensor) -> None:
        from types import SimpleNamespace

        def stack(mods: Sequence[Any]) -> Any:
            bias = [getattr(m, "bias", None) for m in mods]
            return SimpleNamespace(
                weight=torch.stack([m.weight.detach() for m in mods]),
                bias=None if bias[0] is None else torch.stack([t.detach() for t in bias]),
                eps=getattr(mods[0], "eps", None),
                normalized_shape=getattr(mods[0], "normalized_shape", None))

        first = nets[0]
        self.c = first.c
        self.causal = first.causal
        self._items = items.view(items.shape[0], len(nets), -1)
        self.bos = torch.stack([n.bos.detach() for n in nets])
        self.pos = stack([n.pos for n in nets])
        self.type_emb = None if first.type_emb is None else stack([n.type_emb for n in nets])
        if first.c.time_gaps:
            self.gap_prev = stack([n.gap_prev for n in nets])
            self.gap_next = stack([n.gap_next for n in nets])
        self.ln_in = stack([n.ln_in for n in nets])
        self.ln_out = stack([n.ln_out for n in nets])
        self.blocks = [
            SimpleNamespace(heads=blocks[0].heads, p=blocks[0].p,
                            **{name: stack([getattr(b, name) for b in blocks])
                               for name in ("ln1", "qkv", "proj", "ln2", "ff1", "ff2")})
            for blocks in zip(*(n.blocks for n in nets), strict=True)]

    def items(self, idx: torch.Tensor) -> torch.Tensor:
        return self._items[idx].movedim(-2, 0)  # members × len(idx) × hidden

    def last(self, tokens: torch.Tensor, types: torch.Tensor, gap_prev: torch.Tensor,
             gap_next: torch.Tensor) -> torch.Tensor:
        """Every member's ``last`` side by side, batch × (members · hidden)."""
        return _last(self, tokens, types, gap_prev, gap_next).transpose(0, 1).flatten(1)


# -- sequences → padded windows --------------------------------------------------------------


@dataclass
class _Windows:
    """Left-padded training windows: inputs and the next item at every position."""

    tokens: np.ndarray
    types: np.ndarray
    gap_prev: np.ndarray
    gap_next: np.ndarray
    targets: np.ndarray  # item index, -1 where nothing is predicted

    def __len__(self) -> int:
        return len(self.tokens)


def _user_features(items: np.ndarray, types: np.ndarray, times: np.ndarray | None,
                   now: int | None, buckets: int) -> tuple[np.ndarray, ...]:
    """Begin token + items as model inputs: tokens, type codes, gap buckets (prev, next).

    ``times`` None means unknown; ``now`` (the time of the next item) gives the last
    position's next gap, unknown if None."""
    n = len(items)
    tokens = np.concatenate([[_BOS], np.asarray(items, dtype=np.int64) + _ITEM0])
    type_codes = np.concatenate([[_UNKNOWN], types])
    gap_prev = np.full(n + 1, _UNKNOWN, dtype=np.int64)
    gap_next = np.full(n + 1, _UNKNOWN, dtype=np.int64)
    if times is not None and n:
        t = np.asarray(times, dtype=np.int64)
        gap_prev[2:] = time_bucket(np.diff(t), buckets)
        gap_next[1:n] = time_bucket(np.diff(t), buckets)
        if now is not None:
            gap_next[n] = time_bucket(np.array([now - t[-1]]), buckets)[0]
    return tokens, type_codes, gap_prev, gap_next


def _pad_left(rows: list[np.ndarray], length: int, fill: int = 0) -> np.ndarray:
    out = np.full((len(rows), length), fill, dtype=np.int64)
    for r, row in enumerate(rows):
        row = row[-length:]
        if len(row):
            out[r, length - len(row):] = row
    return out


def _windows(inter: Interactions, buckets: int, max_len: int) -> _Windows:
    """Every transition of every user's interactions, cut into windows of ``max_len``
    inputs counted back from the end (the first window holds the begin token). Without
    event types every interaction counts as a view, as in the evaluation protocols."""
    off = inter.offsets()
    types = (inter.event_type if inter.event_type is not None
             else np.full(len(inter), "view", dtype=object))
    type_codes = _type_codes(types, len(inter))
    cols: list[list[np.ndarray]] = [[], [], [], [], []]
    for u in range(len(inter.users)):
        sl = slice(off[u], off[u + 1])
        items = inter.item[sl]
        if not len(items):
            continue
        tok, typ, gp, gn = _user_features(items, type_codes[sl], inter.timestamp[sl], None,
                                          buckets)
        target = np.append(items, -1)  # input j predicts item j (token j + 1)
        n_inputs = len(items)  # begin token … second-to-last item → every item is a target
        for end in range(n_inputs, 0, -max_len):
            start = max(0, end - max_len)
            for col, arr in zip(cols, (tok, typ, gp, gn, target), strict=True):
                col.append(arr[start:end])
    padded = [_pad_left(col, max_len) for col in cols[:4]]
    targets = _pad_left(cols[4], max_len, fill=-1)
    return _Windows(*padded, targets)


# -- the model -----------------------------------------------------------------------------


class SASRec(Recommender):
    """Self-attentive sequential recommendation; see the module docstring."""

    name = "sasrec"
    config_class = SASRecConfig
    search_space = {"dropout": [0.2, 0.5], "max_len": [50, 200]}
    config: SASRecConfig


    def wants_text(self) -> bool:
        return self.config.uses_text

    def __init__(self, config: SASRecConfig | None = None) -> None:
        super().__init__(config)
        self.net: _Net | None = None
        self.training_log: list[dict[str, Any]] = []
        self.best_epoch: int = 0
        self._warned_device = False
        self._item_cache: tuple[Any, np.ndarray, torch.Tensor] | None = None
        #: the weights' key and the ONNX graph of one-shopper queries (attach_query_graph)
        self._graph: tuple[Any, Any] | None = None
        self._tensors: tuple[Any, list[torch.Tensor]] | None = None
        self.dp_info: dict[str, Any] | None = None
        #: The fitted networks of an ensemble (``config.members > 1``); empty otherwise.
        self.members: list[SASRec] = []
        #: an ensemble's item vectors side by side: (the members' arrays, the array, a torch
        #: view of the same memory for queries)
        self._stacked: tuple[list[np.ndarray], np.ndarray, torch.Tensor] | None = None
        self._joint: tuple[tuple[Any, ...], _Stacked] | None = None

    @property
    def seconds_to_best(self) -> float:
        """Training seconds of ``fit`` up to and including the best epoch (of every member)."""
        if self.members:
            return float(sum(m.seconds_to_best for m in self.members))
        return float(sum(e["seconds"] for e in self.training_log
                         if e["phase"] == "fit" and e["epoch"] <= self.best_epoch))

    def fit_info(self) -> dict[str, Any]:
        if self.members:
            infos = [m.fit_info() for m in self.members]
            valid = [i["best_valid_ndcg@10"] for i in infos]
            return {"members": len(infos), "epochs_run": sum(i["epochs_run"] for i in infos),
                    "best_epoch": [i["best_epoch"] for i in infos],
                    "seconds_to_best": round(self.seconds_to_best, 3),
                    "best_valid_ndcg@10": valid, "softmax": infos[0]["softmax"],
                    "refit_epochs": sum(i["refit_epochs"] for i in infos)}
        fit = [e for e in self.training_log if e["phase"] == "fit"]
        return {"epochs_run": len(fit), "best_epoch": self.best_epoch,
                "seconds_to_best": round(self.seconds_to_best, 3),
                "best_valid_ndcg@10": max((e.get("valid_ndcg@10", 0.0) for e in fit),
                                          default=None),
                "softmax": fit[0]["softmax"] if fit else None,
                "refit_epochs": sum(e["phase"] == "refit" for e in self.training_log),
                **({"dp": dict(self.dp_info), "best_valid_ndcg@10": None}
                   if self.dp_info is not None else {})}

    # -- context managers: threads, RNG, device ----------------------------------------------
    @contextmanager
    def _threads(self, deterministic: bool = False) -> Iterator[None]:
        """torch threads (and deterministic algorithms when training), restored after."""
        before = torch.get_num_threads()
        change = bool(self.config.threads) and self.config.threads != before
        was_deterministic = torch.are_deterministic_algorithms_enabled()
        was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        if change:
            torch.set_num_threads(self.config.threads)
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            if change:  # (a query per request: no needless calls into the thread pool)
                torch.set_num_threads(before)
            if deterministic:
                torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)

    def _device(self) -> torch.device:
        dev = self.config.device
        if dev.startswith("cuda") and not torch.cuda.is_available():
            if not self._warned_device:
                warnings.warn(f"SASRec: device {dev!r} is not available, using the CPU",
                              stacklevel=3)
                self._warned_device = True
            return torch.device("cpu")
        return torch.device(dev)

    # -- training ------------------------------------------------------------------------------
    def _check_text(self, data: TrainData) -> None:
        c = self.config
        if not c.uses_text:
            return
        if data.item_text is None:
            raise ValueError(f"SASRec with item_repr={c.item_repr!r} needs item text "
                             "embeddings (TrainData.item_text), and the data has none; "
                             "use item_repr='id' or encode the item text first")
        if data.item_text.ndim != 2 or data.item_text.shape[0] != data.n_items:
            raise ValueError(f"item_text must be n_items × dim ({data.n_items} rows), got "
                             f"shape {data.item_text.shape}")

    def _build(self, data: TrainData) -> None:
        c = self.config
        self._check_text(data)
        text_dim = int(data.item_text.shape[1]) if c.uses_text else 0
        self.n_items = data.n_items
        self.net = _Net(c, self.n_items, text_dim, len(EVENT_TYPES) + 2)
        self.net.seen.zero_()  # _mark_seen turns on the items with interactions
        if c.uses_id and c.uses_text:
            self.net.id_mask.zero_()  # _mark_seen turns on the items with interactions
        if c.uses_text:
            self.net.item_text.copy_(torch.as_tensor(
                np.asarray(data.item_text, dtype=np.float32)))

    def _mark_seen(self, data: TrainData) -> None:
        assert self.net is not None
        now = torch.as_tensor(np.bincount(data.interactions.item, minlength=self.n_items) > 0)
        self.net.seen.copy_(self.net.seen | now)
        if self.config.uses_id and self.config.uses_text:
            seen = np.bincount(data.interactions.item, minlength=self.n_items) > 0
            mask = self.net.id_mask.detach().cpu().numpy().ravel() > 0
            self.net.id_mask.copy_(torch.as_tensor((seen | mask).astype(np.float32)[:, None]))
        elif self.config.uses_id:
            self.net.id_mask.fill_(1.0)

    def _member_configs(self) -> list[SASRecConfig]:
        c = self.config
        return [c.replace(members=1, seed=c.seed + 1000 * j) for j in range(c.members)]

    def _gather_logs(self) -> None:
        """An ensemble's ``training_log``: its members' entries, each marked with its member."""
        self.training_log = [{**e, "member": j} for j, m in enumerate(self.members)
                             for e in m.training_log]

    def fit(self, data: TrainData) -> Self:
        c = self.config
        if not len(data.interactions):
            raise ValueError("SASRec cannot fit on no interactions")
        self._check_text(data)
        if c.members > 1:
            self.n_items = data.n_items
            self.members = [SASRec(mc).fit(data) for mc in tqdm(
                self._member_configs(), desc="sasrec members", unit="network", disable=None,
                file=sys.stderr, leave=False)]
            self._gather_logs()
            return self
        if c.private:
            self.training_log = []
            with self._threads(deterministic=True), torch.random.fork_rng(devices=[]):
                torch.manual_seed(c.seed)
                self._fit_private(data)
            return self
        self.dp_info = None
        inter = data.interactions
        off = inter.offsets()
        lengths = np.diff(off)
        valid_users = np.flatnonzero(lengths >= 3)
        if c.valid_users and len(valid_users) > c.valid_users:
            rng = np.random.default_rng(c.seed)
            valid_users = np.sort(rng.choice(valid_users, c.valid_users, replace=False))
        keep = np.ones(len(inter), dtype=bool)
        keep[off[valid_users + 1] - 1] = False
        valid = _Validation(inter, valid_users)
        self.training_log = []
        with self._threads(deterministic=True), torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            self._build(data)
            train_data = TrainData(inter.subset(keep), data.item_category, data.item_text)
            self._mark_seen(train_data)
            best_state, best = self._train(train_data, c.epochs, valid, "fit", c.seed)
            if best_state is not None:
                self.net.load_state_dict(best_state)
            if c.refit_on_full and self.best_epoch:
                torch.manual_seed(c.seed)
                self._build(data)
                self._mark_seen(data)
                self._train(data, self.best_epoch, None, "refit", c.seed)
        return self

    def fine_tune(self, data: TrainData, epochs: int = 1) -> Self:
        """Continue training from the current weights on ``data`` (all of it, no validation,
        a fresh optimiser) for ``epochs`` epochs.

        ``data`` must use the same item vocabulary (same indices, same number of items) as the
        data the model was fitted on; with text, ``data.item_text`` (if given) replaces the
        stored text embeddings. Items seen for the first time get their ID embedding turned on
        (from its zero initialisation) in "id+text" mode.
        """
        if self.net is None and not self.members:
            raise ValueError("fine_tune needs a fitted model: call fit first")
        if data.n_items != self.n_items:
            raise ValueError(f"fine_tune needs the model's item vocabulary ({self.n_items} "
                             f"items), got {data.n_items}")
        if epochs < 1:
            raise ValueError(f"epochs must be ≥ 1, got {epochs}")
        if self.members:
            for m in self.members:
                m.fine_tune(data, epochs)
            self._gather_logs()
            return self
        if self.config.private or self.dp_info is not None:
            raise ValueError("fine_tune trains without differential privacy, which would void "
                             "the guarantee of this DP model: fit a new one instead")
        with self._threads(deterministic=True), torch.random.fork_rng(devices=[]):
            seed = self.config.seed + 1 + len(self.training_log)
            torch.manual_seed(seed)
            if self.config.uses_text and data.item_text is not None:
                if tuple(data.item_text.shape) != tuple(self.net.item_text.shape):
                    raise ValueError(f"fine_tune item_text has shape {data.item_text.shape}, "
                                     f"the model {tuple(self.net.item_text.shape)}")
                self.net.item_text.copy_(torch.as_tensor(np.asarray(data.item_text,
                                                                    dtype=np.float32)))
            self._mark_seen(data)
            self._train(data, epochs, None, "fine_tune", seed)
        return self

    def _train(self, data: TrainData, epochs: int, valid: _Validation | None, phase: str,
               seed: int) -> tuple[dict[str, torch.Tensor] | None, float]:
        c = self.config
        net = self.net
        assert net is not None
        device = self._device()
        net.to(device)
        win = _windows(data.interactions, c.time_buckets, c.max_len)
        rng = np.random.default_rng(seed)
        opt = torch.optim.Adam(net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        sampled = self.n_items > c.sampled_softmax_above
        if c.negative_sampling == "popularity":
            q = np.bincount(data.interactions.item, minlength=self.n_items) + 1.0
        else:
            q = np.ones(self.n_items)
        never = ~net.seen.cpu().numpy()
        q[never] = 0.0  # never sampled as negatives either
        q = q / q.sum()
        never_t = torch.as_tensor(never, device=device) if never.any() else None
        q_t = torch.as_tensor(q, dtype=torch.float32, device=device)
        log_q = torch.log(q_t)
        best, best_state, stale = -1.0, None, 0
        bar = tqdm(range(1, epochs + 1), desc=f"sasrec {phase}", unit="epoch", disable=None,
                   file=sys.stderr, leave=False)
        for epoch in bar:
            started = time.perf_counter()
            net.train()
            order = rng.permutation(len(win))
            if c.context_dropout > 0:
                hide = rng.random(len(win)) < c.context_dropout
            else:
                hide = np.zeros(len(win), dtype=bool)
            total, count = 0.0, 0
            for lo in range(0, len(order), c.batch_size):
                rows = order[lo:lo + c.batch_size]
                batch = _tensors(win, rows, hide[rows], device)
                tokens, types, gp, gn, targets = batch
                h = net(tokens, types, gp, gn)
                at = targets >= 0
                hv, tv = h[at], targets[at]
                if sampled:
                    if c.negative_sampling == "uniform":
                        neg = torch.randint(self.n_items, (c.negatives,), device=device)
                    else:
                        neg = torch.multinomial(q_t, c.negatives, replacement=True)
                    pos_logit = (hv * net.items(tv)).sum(-1) - log_q[tv]
                    neg_logit = hv @ net.items(neg).T - log_q[neg]
                    neg_logit = neg_logit.masked_fill(neg.unsqueeze(0) == tv.unsqueeze(1),
                                                      float("-inf"))
                    logits = torch.cat([pos_logit.unsqueeze(1), neg_logit], dim=1)
                    loss = F.cross_entropy(logits, torch.zeros_like(tv))
                else:
                    logits = hv @ net.items().T
                    if never_t is not None:
                        logits = logits.masked_fill(never_t, float("-inf"))
                    loss = F.cross_entropy(logits, tv)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(tv)
                count += len(tv)
            entry: dict[str, Any] = {"phase": phase, "epoch": epoch,
                                     "loss": round(total / max(count, 1), 6),
                                     "softmax": "sampled" if sampled else "full"}
            if valid is not None and valid.n_users:
                ndcg = valid.ndcg(self)
                entry["valid_ndcg@10"] = round(ndcg, 6)
                if ndcg > best:
                    best, stale = ndcg, 0
                    self.best_epoch = epoch
                    best_state = copy.deepcopy(net.state_dict())
                else:
                    stale += 1
            entry["seconds"] = round(time.perf_counter() - started, 3)
            self.training_log.append(entry)
            bar.set_postfix({k: v for k, v in entry.items() if k in ("loss", "valid_ndcg@10")})
            if valid is not None and stale >= c.patience:
                break
        bar.close()
        if valid is None or not valid.n_users:
            self.best_epoch = epochs if phase == "fit" else self.best_epoch
        net.eval()
        return best_state, best

    def _fit_private(self, data: TrainData) -> None:
        """User-level DP-SGD (Opacus): Poisson-sampled users, one window of each sampled user
        per step, per-user gradient clipping to ``dp_max_grad_norm``, Gaussian noise calibrated
        by Opacus so that ``epochs`` epochs spend at most ``dp_epsilon`` at ``dp_delta``.

        Nothing data-dependent leaves the run except through the noised gradients: every item
        of the (public) catalogue competes in the softmax (``seen`` and ``id_mask`` all on),
        sampled-softmax negatives are uniform, and the log holds no training loss."""
        from tansuo.privacy.dpsgd import ACCOUNTANT, per_sample_grads, require_opacus

        require_opacus()
        from opacus import PrivacyEngine
        from torch.utils.data import DataLoader, TensorDataset

        c = self.config
        self._build(data)
        net = self.net
        assert net is not None
        net.seen.fill_(True)
        if c.uses_id:
            net.id_mask.fill_(1.0)
        device = self._device()
        net.to(device)
        inter = data.interactions
        lengths = np.diff(inter.offsets())
        win = _windows(inter, c.time_buckets, c.max_len)
        counts = -(-lengths // c.max_len)  # windows of each user (0 without interactions)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        users = np.flatnonzero(lengths > 0)
        n_users = len(users)
        delta = c.dp_delta if c.dp_delta is not None else 1.0 / (10 * n_users)
        loader = DataLoader(TensorDataset(torch.arange(n_users)),
                            batch_size=min(c.batch_size, n_users),
                            generator=torch.Generator().manual_seed(c.seed))
        noise = torch.Generator(device=device).manual_seed(c.seed + 1)
        objective = _DPObjective(net)
        params = [p for p in net.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        with warnings.catch_warnings():  # "secure RNG off": we want seeded, repeatable runs
            warnings.filterwarnings("ignore", module=r"opacus\..*")
            engine = PrivacyEngine(accountant=ACCOUNTANT)
            _, dp_opt, dp_loader = engine.make_private_with_epsilon(
                module=net, optimizer=opt, data_loader=loader, target_epsilon=c.dp_epsilon,
                target_delta=delta, epochs=c.epochs, max_grad_norm=c.dp_max_grad_norm,
                grad_sample_mode="no_op", poisson_sampling=True, noise_generator=noise)
        sample_rate = 1.0 / len(loader)
        sampled = self.n_items > c.sampled_softmax_above
        rng = np.random.default_rng(c.seed)
        named = [(f"net.{k}", p) for k, p in net.named_parameters() if p.requires_grad]
        steps = 0
        bar = tqdm(range(1, c.epochs + 1), desc="sasrec fit (dp)", unit="epoch",
                   disable=None, file=sys.stderr, leave=False)
        try:
            for epoch in bar:
                started = time.perf_counter()
                net.train()
                for (idx,) in dp_loader:
                    u = users[idx.numpy().astype(np.int64)]
                    if not len(u):  # an empty Poisson batch: the step is noise only
                        for _, p in named:
                            p.grad_sample = torch.zeros((0, *p.shape), device=device)
                    else:
                        rows = first[u] + (rng.random(len(u)) * counts[u]).astype(np.int64)
                        hide = rng.random(len(u)) < c.context_dropout
                        batch = _tensors(win, rows, hide, device)
                        shared = ((torch.randint(self.n_items, (c.negatives,), device=device),)
                                  if sampled else ())
                        _, grads = per_sample_grads(objective, _call, batch, shared)
                        for name, p in named:
                            p.grad_sample = grads[name]
                    dp_opt.step()
                    dp_opt.zero_grad(set_to_none=True)
                    steps += 1
                spent = float(engine.get_epsilon(delta))
                entry: dict[str, Any] = {
                    "phase": "fit", "epoch": epoch, "softmax": "sampled" if sampled else "full",
                    "dp_epsilon_spent": round(spent, 6),
                    "seconds": round(time.perf_counter() - started, 3)}
                self.training_log.append(entry)
                bar.set_postfix({"epsilon": round(spent, 3)})
        finally:
            bar.close()
            for p in net.parameters():
                for attr in ("grad_sample", "summed_grad"):
                    if hasattr(p, attr):
                        delattr(p, attr)
                p.grad = None
        net.eval()
        self.best_epoch = c.epochs
        self.dp_info = {
            "unit": "user", "epsilon": round(float(engine.get_epsilon(delta)), 6),
            "target_epsilon": float(c.dp_epsilon), "delta": float(delta),
            "max_grad_norm": float(c.dp_max_grad_norm),
            "noise_multiplier": float(dp_opt.noise_multiplier), "sample_rate": sample_rate,
            "expected_users_per_step": round(sample_rate * n_users, 3), "users": n_users,
            "steps": steps, "epochs": c.epochs, "accountant": ACCOUNTANT,
            "sampling": "poisson", "early_stopping": False}

    # -- queries -------------------------------------------------------------------------------
    def _inputs(self, history: Sequence[np.ndarray], context: HistoryContext | None
                ) -> tuple[np.ndarray, ...]:
        c = self.config
        cols: list[list[np.ndarray]] = [[], [], [], []]
        for r, items in enumerate(history):
            items = np.asarray(items, dtype=np.int64)
            ok = (items >= 0) & (items < self.n_items)
            types: np.ndarray | None = None
            times: np.ndarray | None = None
            now: int | None = None
            if context is not None:
                types = np.asarray(context.types[r])[ok] if context.types is not None else None
                times = (np.asarray(context.timestamps[r], dtype=np.int64)[ok]
                         if context.timestamps is not None else None)
                now = int(context.now[r]) if context.now is not None else None
            items = items[ok][-c.max_len:]
            codes = _type_codes(None if types is None else types[-c.max_len:], len(items))
            feats = _user_features(items, codes, None if times is None else times[-c.max_len:],
                                   now, c.time_buckets)
            for col, f in zip(cols, feats, strict=True):
                col.append(f)
        return tuple(_pad_left(col, c.max_len) for col in cols)

    def user_vectors(self, users: np.ndarray, history: Sequence[np.ndarray],
                     context: HistoryContext | None = None) -> np.ndarray:
        """Each query's representation (the last position's hidden state), n × hidden.
        ``users`` is not used: the model knows a user only through the given history."""
        if self.members:
            return self._ensemble_vectors(history, context)
        if self.net is None:
            raise ValueError("SASRec is not fitted")
        if not len(history):
            return np.zeros((0, self.config.hidden), dtype=np.float32)
        device = self._serving()
        if len(history) == 1 and self._graph is not None and device.type == "cpu" \
                and self._graph[0] == self._weights_key():
            return self._graph_query(self._inputs(history, context))
        last = self.net.last
        if device.type == "cpu" and self.net.bos.dtype == torch.float32:
            # the history's item rows come from the cached scoring table (the same
            # representations, computed once) rather than from the network per query
            self.item_vectors()
            assert self._item_cache is not None
            last = partial(self.net.last, table=self._item_cache[2])
        return self._run_queries(last, self._inputs(history, context), device, 1024)

    def _run_queries(self, last: Any, arrays: tuple[np.ndarray, ...], device: torch.device,
                     step: int) -> np.ndarray:
        """``last`` (a network's or a _Stacked's) over the query inputs, ``step`` rows at a
        time."""
        with self._threads(), torch.inference_mode():
            out = [last(*[torch.as_tensor(a[lo:lo + step], device=device) for a in arrays])
                   .float().cpu().numpy() for lo in range(0, len(arrays[0]), step)]
        return np.concatenate(out).astype(np.float32)

    def _ensemble_vectors(self, history: Sequence[np.ndarray],
                          context: HistoryContext | None) -> np.ndarray:
        """The members' vectors side by side, divided by their number (so the dot product is
        the mean of the members' scores), all members computed in one pass (_Stacked)."""
        first, n = self.members[0], len(self.members)
        if not len(history):
            return np.zeros((0, n * first.config.hidden), dtype=np.float32)
        devices = [m._serving() for m in self.members]
        key = tuple(m._weights_key() for m in self.members)
        if len(history) == 1 and self._graph is not None and self._graph[0] == key \
                and devices[0].type == "cpu":
            return self._graph_query(first._inputs(history, context)) / np.float32(n)
        self._stacked_pass(key, devices[0])
        assert self._joint is not None
        # the members share one input layout; a chunk of 1,024 // members queries takes
        # roughly one network's memory
        vectors = self._run_queries(self._joint[1].last, first._inputs(history, context),
                                    devices[0], max(1, 1024 // n))
        return vectors / np.float32(n)

    def _stacked_pass(self, key: Any, device: torch.device) -> None:
        """The members' networks stacked (_Stacked), rebuilt when any member's weights
        changed (``key``)."""
        if self._joint is None or self._joint[0] != key:
            self.item_vectors()  # the item table: the scoring vectors, not another copy
            assert self._stacked is not None
            self._joint = (key, _Stacked([m.net for m in self.members if m.net is not None],
                                         self._stacked[2].to(device)))

    def _graph_query(self, arrays: tuple[np.ndarray, ...]) -> np.ndarray:
        """One query through the attached ONNX graph: its padding columns dropped (one row,
        so none is left), as ``_last`` does."""
        assert self._graph is not None
        keep = max(int((arrays[0] != 0).sum()), 1)
        return self._graph[1](tuple(a[:, -keep:] for a in arrays)).astype(np.float32)

    def attach_query_graph(self, path: str | Path | None = None, threads: int = 1) -> None:
        """Answer one-shopper CPU queries through ONNX Runtime
        (:mod:`tansuo.models.query_graph`, cheaper than the torch path): the
        graph is read from ``path`` when it exists, else exported (a few seconds) and saved
        there. Used while the weights stay as they are now; other queries, and all queries
        after a weight change (``fine_tune``), take the torch path."""
        from tansuo.models.query_graph import QueryGraph

        if (self.members[0] if self.members else self)._device().type != "cpu":
            return
        if self.members:
            key: Any = tuple(m._weights_key() for m in self.members)
            self._stacked_pass(key, torch.device("cpu"))
            assert self._joint is not None
            joint = self._joint[1]
            first = self.members[0]

            def make() -> bytes:
                return QueryGraph.export(joint, None, first.config.max_len, stacked=True)
        else:
            if self.net is None:
                raise ValueError("SASRec is not fitted")
            self._serving()
            self.item_vectors()
            assert self._item_cache is not None
            key, net, table = self._weights_key(), self.net, self._item_cache[2]

            def make() -> bytes:
                return QueryGraph.export(net, table, self.config.max_len, stacked=False)
        graph = (QueryGraph.cached(Path(path), make, threads) if path is not None
                 else QueryGraph(make(), threads))
        self._graph = (key, graph)

    def _weights_key(self) -> tuple[int, tuple[int, ...]]:
        """Changes whenever any weight of the network changes (torch bumps a tensor's
        version on every in-place update) or the network is replaced."""
        assert self.net is not None
        if self._tensors is None or self._tensors[0] is not self.net:
            self._tensors = (self.net, [*self.net.parameters(), *self.net.buffers()])
        return (id(self.net), tuple(t._version for t in self._tensors[1]))

    def _serving(self) -> torch.device:
        """Put the network on its device in eval mode, only when it is not already (a
        service calls this per request)."""
        assert self.net is not None
        device = self._device()
        if self.net.seen.device != device:
            self.net.to(device)
        if self.net.training:
            self.net.eval()
        return device

    def item_vectors(self) -> np.ndarray:
        """Every item's representation (the output weights), n_items × hidden; cached until
        any weight changes (torch bumps a tensor's version on every in-place update). An
        ensemble's are its members' side by side, n_items × (members · hidden)."""
        if self.members:
            # a member returns the same cached array until its weights change; the parts are
            # kept (not their ids, which a freed array's successor may reuse)
            parts = [m.item_vectors() for m in self.members]
            if self._stacked is None or any(
                    a is not b for a, b in zip(self._stacked[0], parts, strict=True)):
                stacked = np.concatenate(parts, axis=1)
                view = torch.from_numpy(stacked)  # before write=False (torch warns after)
                stacked.setflags(write=False)
                self._stacked = (parts, stacked, view)
            return self._stacked[1]
        if self.net is None:
            raise ValueError("SASRec is not fitted")
        key = self._weights_key()
        if self._item_cache is None or self._item_cache[0] != key:
            self._serving()
            with self._threads(), torch.inference_mode():
                vectors = self.net.items().float().cpu().numpy().astype(np.float32)
            view = torch.from_numpy(vectors)  # before write=False (torch warns after)
            vectors.setflags(write=False)
            self._item_cache = (key, vectors, view)
        return self._item_cache[1]

    def score(self, users: np.ndarray, history: Sequence[np.ndarray],
              context: HistoryContext | None = None) -> np.ndarray:
        """user_vectors @ item_vectors.T. Never NaN: an empty history is scored from the
        begin token's learned state."""
        u = self.user_vectors(users, history, context)
        return (u @ self.item_vectors().T).astype(np.float32)

    # -- persistence ---------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        if self.members:
            return {f"member{j}.{k}": v for j, m in enumerate(self.members)
                    for k, v in m._arrays().items()}
        if self.net is None:
            raise ValueError("SASRec is not fitted")
        meta = {"text_dim": int(self.net.item_text.shape[1]) if self.config.uses_text else 0,
                "event_types": list(EVENT_TYPES), "best_epoch": self.best_epoch,
                "training_log": self.training_log}
        if self.dp_info is not None:
            meta["dp"] = self.dp_info
        out = {f"state.{k}": v.detach().cpu().numpy()
               for k, v in self.net.state_dict().items()}
        out["meta"] = np.array(json.dumps(meta))
        return out

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        if self.config.members > 1:
            self.members = []
            for j, mc in enumerate(self._member_configs()):
                prefix = f"member{j}."
                member = SASRec(mc)
                member.n_items = self.n_items
                member._restore({k.removeprefix(prefix): v for k, v in arrays.items()
                                 if k.startswith(prefix)})
                self.members.append(member)
            self._gather_logs()
            return
        meta = json.loads(str(arrays["meta"]))
        self.best_epoch = int(meta["best_epoch"])
        self.training_log = list(meta["training_log"])
        self.dp_info = dict(meta["dp"]) if meta.get("dp") is not None else None
        self.net = _Net(self.config, self.n_items, int(meta["text_dim"]),
                        len(meta["event_types"]) + 2)
        if tuple(meta["event_types"]) != EVENT_TYPES:
            raise ValueError(f"saved SASRec knows event types {meta['event_types']}, this "
                             f"version {list(EVENT_TYPES)}: retrain it")
        state = {k.removeprefix("state."): torch.as_tensor(v) for k, v in arrays.items()
                 if k.startswith("state.")}
        state.setdefault("seen", torch.ones(self.n_items, dtype=torch.bool))  # older saves
        self.net.load_state_dict(state)
        self.net.eval()


def _tensors(win: _Windows, rows: np.ndarray, hide: np.ndarray, device: torch.device
             ) -> tuple[torch.Tensor, ...]:
    tokens = win.tokens[rows]
    types, gp, gn = win.types[rows].copy(), win.gap_prev[rows].copy(), win.gap_next[rows].copy()
    if hide.any():  # context dropout: the whole sequence's types and times unknown
        pad = tokens[hide] == 0
        for arr in (types, gp, gn):
            arr[hide] = np.where(pad, _PAD, _UNKNOWN)
    return tuple(torch.as_tensor(a, device=device)
                 for a in (tokens, types, gp, gn, win.targets[rows]))


class _DPObjective(nn.Module):
    """The training loss of one window (unbatched inputs), for per-user gradients: mean
    cross-entropy over its predicted positions, full softmax, or with ``neg`` a sampled
    softmax over uniform negatives (logQ constant, so no correction)."""

    def __init__(self, net: _Net) -> None:
        super().__init__()
        self.net = net

    def forward(self, tokens: torch.Tensor, types: torch.Tensor, gap_prev: torch.Tensor,
                gap_next: torch.Tensor, targets: torch.Tensor,
                neg: torch.Tensor | None = None) -> torch.Tensor:
        h = self.net(tokens[None], types[None], gap_prev[None], gap_next[None])[0]
        weight = (targets >= 0).to(h.dtype)
        tv = targets.clamp(min=0)
        if neg is None:
            logits = h @ self.net.items().T
        else:
            pos = (h * self.net.items(tv)).sum(-1, keepdim=True)
            negl = (h @ self.net.items(neg).T).masked_fill(neg[None] == tv[:, None],
                                                           float("-inf"))
            logits = torch.cat([pos, negl], dim=1)
            tv = torch.zeros_like(tv)
        ce = F.cross_entropy(logits, tv, reduction="none")
        return (ce * weight).sum() / weight.sum().clamp(min=1.0)


def _call(module_call: Any, *example: torch.Tensor) -> torch.Tensor:
    return module_call(*example)


class _Validation:
    """Each chosen user's last training interaction as the target, the rest as history."""

    def __init__(self, inter: Interactions, users: np.ndarray) -> None:
        off = inter.offsets()
        types = inter.event_type
        self.n_users = len(users)
        self.history = [inter.item[off[u]:off[u + 1] - 1] for u in users]
        self.targets = [inter.item[off[u + 1] - 1:off[u + 1]] for u in users]
        self.context = HistoryContext(
            [types[off[u]:off[u + 1] - 1] if types is not None
             else np.full(off[u + 1] - 1 - off[u], "view", dtype=object) for u in users],
            [inter.timestamp[off[u]:off[u + 1] - 1] for u in users],
            np.array([inter.timestamp[off[u + 1] - 1] for u in users], dtype=np.int64))
        self.users = np.asarray(users, dtype=np.int64)

    def ndcg(self, model: SASRec) -> float:
        batch = max(1, min(512, 20_000_000 // max(model.n_items, 1)))  # bounds score memory
        total = 0.0
        for lo in range(0, self.n_users, batch):
            sl = slice(lo, lo + batch)
            scores = model.score(self.users[sl], self.history[sl], self.context[sl])
            ranked = top_k(scores, 10, self.history[sl])
            total += float(accuracy(ranked, self.targets[sl], 10)["ndcg@10"].sum())
        return total / max(self.n_users, 1)

