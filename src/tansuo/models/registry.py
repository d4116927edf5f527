"""Trained models, versioned in the data directory: ``models/<version>/`` plus ``LATEST``.

A version holds the model's own files (arrays + JSON), the id vocabularies that map its
indices back to user and item ids (``vocab.npz``, fixed-width unicode arrays: no pickle), and
``meta.json`` (model name, config, data it was trained on, when). ``LATEST`` names the version
the service loads; it is replaced atomically.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tansuo.data.dataset import Vocabulary
from tansuo.errors import TansuoError
from tansuo.models.base import Recommender

__all__ = ["ModelRegistry", "TrainedModel"]


@dataclass
class TrainedModel:
    version: str
    model: Recommender
    users: Vocabulary
    items: Vocabulary
    meta: dict[str, Any]


class ModelRegistry:
    def __init__(self, home: Path) -> None:
        self.root = Path(home) / "models"

    def save(self, model: Recommender, users: Vocabulary, items: Vocabulary,
             meta: dict[str, Any], make_latest: bool = True) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        version = f"{stamp}-{model.name}"
        path = self.root / version
        model.save(path)
        np.savez(path / "vocab.npz", users=np.array(users.ids.tolist(), dtype=str),
                 items=np.array(items.ids.tolist(), dtype=str))
        full = {"version": version, "model": model.name, "config": model.config.to_dict(),
                "created_at": stamp, "users": len(users), "items": len(items), **meta}
        (path / "meta.json").write_text(json.dumps(full, indent=2, default=str))
        if make_latest:
            self.promote(version)
        return version

    def promote(self, version: str) -> None:
        if not (self.root / version / "meta.json").exists():
            raise TansuoError(f"no trained model {version!r} in {self.root}")
        tmp = self.root / f".LATEST.{os.getpid()}.{time.monotonic_ns()}"
        tmp.write_text(version)
        tmp.replace(self.root / "LATEST")  # atomic on POSIX

    def latest(self) -> str | None:
        pointer = self.root / "LATEST"
        return pointer.read_text().strip() if pointer.exists() else None

    def versions(self) -> list[dict[str, Any]]:
        if not self.root.exists():
            return []
        out = []
        for meta in sorted(self.root.glob("*/meta.json")):
            out.append(json.loads(meta.read_text()))
        return out

    def load(self, version: str = "latest") -> TrainedModel:
        from tansuo.models import MODELS

        name = self.latest() if version == "latest" else version
        if name is None:
            raise TansuoError(f"no trained model in {self.root}: run `tansuo train` first")
        path = self.root / name
        if not (path / "meta.json").exists():
            raise TansuoError(f"no trained model {name!r} in {self.root}")
        meta = json.loads((path / "meta.json").read_text())
        cls = MODELS.get(meta["model"])
        if cls is None:
            raise TansuoError(f"model {name} is a {meta['model']!r}, which this version of "
                              "Tansuo does not know")
        with np.load(path / "vocab.npz", allow_pickle=False) as vocab:
            users = Vocabulary(np.array(vocab["users"].tolist(), dtype=object))
            items = Vocabulary(np.array(vocab["items"].tolist(), dtype=object))
        return TrainedModel(name, cls.load(path), users, items, meta)
