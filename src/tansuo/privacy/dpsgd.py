"""DP-SGD helpers (Opacus) for user-level differentially private training of neural models.

Opacus is an optional dependency (``pip install 'tansuo[dp]'``): nothing here imports it at
module import time; :func:`require_opacus` does, when a private fit actually starts.

Opacus computes per-sample gradients with module hooks, which cannot follow a weight used
outside a supported layer (SASRec ties its item embedding to its output layer and keeps a raw
``nn.Parameter`` begin token). So we use Opacus in ``grad_sample_mode="no_op"`` — it wraps the
model, samples with Poisson sampling, clips per sample, adds Gaussian noise and accounts for
privacy — and compute the exact per-sample gradients ourselves with ``torch.func``
(``vmap(grad(loss of one example))``), written into ``p.grad_sample`` as Opacus expects.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from tansuo.errors import MissingDependencyError

__all__ = ["require_opacus", "per_sample_grads", "ACCOUNTANT"]

#: Opacus accountant used to calibrate the noise and report the ε spent (Rényi DP).
ACCOUNTANT = "rdp"


def require_opacus() -> Any:
    """The ``opacus`` module, or a :class:`MissingDependencyError` saying how to install it."""
    try:
        import opacus
    except ImportError as exc:
        raise MissingDependencyError(
            "differentially private training (dp_epsilon) needs Opacus, which is not "
            "installed: pip install 'tansuo[dp]'") from exc
    return opacus


def per_sample_grads(module: nn.Module, loss_one: Callable[..., torch.Tensor],
                     batched: tuple[torch.Tensor, ...], shared: tuple[Any, ...] = (),
                     chunk_size: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-example gradients of ``loss_one`` w.r.t. ``module``'s trainable parameters.

    ``loss_one(module_call, *example, *shared)`` returns the scalar loss of one example, where
    ``example`` are the rows of ``batched`` (each without its leading batch dimension) and
    ``module_call(*args)`` runs ``module`` functionally on them. Dropout draws independently
    per example. Returns the per-example losses (detached) and ``{name: B × *param.shape}``.
    """
    from torch.func import functional_call, grad_and_value, vmap

    params = {k: p.detach() for k, p in module.named_parameters() if p.requires_grad}
    buffers = {k: b.detach() for k, b in module.named_buffers()}

    def one(p: dict[str, torch.Tensor], *args: Any) -> torch.Tensor:
        def call(*inputs: Any) -> Any:
            return functional_call(module, (p, buffers), inputs)
        return loss_one(call, *args)

    fn = vmap(grad_and_value(one), in_dims=(None, *([0] * len(batched)), *([None] * len(shared))),
              randomness="different", chunk_size=chunk_size)
    with warnings.catch_warnings():  # vmap falls back to a loop for attention's backward
        warnings.filterwarnings("ignore", message=".*not yet implemented the batching rule.*")
        grads, losses = fn(params, *batched, *shared)
    return losses.detach(), grads
