"""Interest models behind one protocol: fit, score, recommend, save, load.

``MODELS`` maps a model name to its class, importing it only when asked for (the sequence
model pulls in PyTorch).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from tansuo.models.base import Recommender

__all__ = ["MODELS", "DEFAULT_MODEL", "DEMO_MODEL"]

_PATHS = {
    "pop": "tansuo.models.baselines:Popularity",
    "recent-pop": "tansuo.models.baselines:RecentPopularity",
    "itemknn": "tansuo.models.baselines:ItemKNN",
    "als": "tansuo.models.baselines:ALS",
    "bpr": "tansuo.models.baselines:BPR",
    "sasrec": "tansuo.models.sasrec:SASRec",
}

#: The model `tansuo train` uses with no --model: the best by the yardstick so far — an
#: ensemble of five sequence models with ID + text items (MovieLens leave-one-out NDCG@10
#: 0.0738, mean of 3 seeds: 1.14× RecBole's SASRec, 1.62× item-kNN, the best baseline; one
#: network alone 0.0643; docs/benchmarks.md). A model spec: name + settings.
DEFAULT_MODEL = "sasrec:item_repr=id+text:members=5"

#: What `tansuo demo` trains: one network of the default ensemble, so that the demo is up in
#: minutes (the ensemble trains five times as long and scores five times as slowly).
DEMO_MODEL = "sasrec:item_repr=id+text"


class _Registry(Mapping[str, type[Recommender]]):
    def __getitem__(self, name: str) -> type[Recommender]:
        if name not in _PATHS:
            raise KeyError(name)
        module, cls = _PATHS[name].split(":")
        return getattr(importlib.import_module(module), cls)

    def __iter__(self) -> Iterator[str]:
        return iter(_PATHS)

    def __len__(self) -> int:
        return len(_PATHS)


MODELS: Mapping[str, type[Recommender]] = _Registry()
