"""Tansuo's leave-one-out split of MovieLens latest-small, exported for peer libraries.

Runs in the MAIN virtualenv (it imports ``tansuo``). The split is Tansuo's own
(:func:`tansuo.evaluation.protocols.leave_one_out`), not a re-implementation:

- events from :func:`tansuo.data.bundled.movielens_frames`, stably sorted by (user_id, timestamp)
  so ties keep the ratings-file order, exactly as the event store returns them;
- interactions via :func:`interactions_from_events`, split via :func:`leave_one_out`.

RecBole export (``benchmark_filename: [train, valid, test]``): the files
``ml-tansuo.{train,valid,test}.inter`` have the columns
``user_id:token item_id:token timestamp:float item_id_list:token_seq``.
With benchmark files RecBole's SequentialDataset does *not* augment sequences itself
(``SequentialDataset._change_feat_format`` returns early and ``_benchmark_presets`` reads the
``item_id_list`` column), so the rows are pre-augmented exactly like RecBole's own
``data_augmentation`` with ``MAX_ITEM_LIST_LENGTH`` items:

- train: one row per training interaction except each user's first, the input list being the
  user's previous training items (last ``max_len``);
- valid: one row per user, target = validation item, list = the user's training items;
- test: one row per user, target = test item, list = training + validation items.

Timestamps are the rating's epoch seconds + position_in_user * 1e-6, so sorting by time
reproduces Tansuo's order, ties included (written with 6 decimals).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATASET = "ml-tansuo"
EXPECTED = {"users": 671, "items": 9066, "interactions": 100_004}


@dataclass(frozen=True)
class PeerSplit:
    split: object  # tansuo.evaluation.protocols.EvalSplit
    user_ids: np.ndarray  # str per user index
    item_ids: np.ndarray  # str per item index
    runs: list[np.ndarray]  # per user index: all item indices in time order
    seconds: list[np.ndarray]  # per user index: epoch seconds (int) in time order

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def train_matrix(self):
        """Binary user × item CSR of the training interactions."""
        import scipy.sparse as sp

        train = self.split.valid.train
        data = np.ones(len(train.user), dtype=np.float32)
        return sp.csr_matrix((data, (train.user, train.item)),
                             shape=(self.n_users, self.n_items))


def build_split() -> PeerSplit:
    from tansuo.data.bundled import movielens_frames
    from tansuo.evaluation.protocols import interactions_from_events, leave_one_out

    events, _items = movielens_frames()
    # The store's order: by user, then timestamp, then ingestion (file) order.
    order = np.lexsort((np.arange(len(events)), events["timestamp"].to_numpy(),
                        events["user_id"].to_numpy(dtype=str)))
    events_sorted = events.iloc[order].reset_index(drop=True)
    inter = interactions_from_events(events_sorted)
    split = leave_one_out(inter)
    off = inter.offsets()
    runs = [inter.item[off[u]:off[u + 1]] for u in range(len(inter.users))]
    secs = [inter.timestamp[off[u]:off[u + 1]] // 1000 for u in range(len(inter.users))]
    ps = PeerSplit(split, np.asarray(inter.users.ids, dtype=object),
                   np.asarray(inter.items.ids, dtype=object), runs, secs)
    check_split(ps)
    return ps


def check_split(ps: PeerSplit) -> dict[str, int]:
    split = ps.split
    inter = split.interactions
    n_users, n_items = ps.n_users, ps.n_items
    counts = {
        "users": n_users,
        "items": n_items,
        "interactions": len(inter),
        "train_interactions": len(split.valid.train),
        "valid_users": int(split.valid.n_users),
        "test_users": int(split.test.n_users),
        "valid_targets": int(sum(len(t) for t in split.valid.targets)),
        "test_targets": int(sum(len(t) for t in split.test.targets)),
    }
    want = {
        "users": EXPECTED["users"], "items": EXPECTED["items"],
        "interactions": EXPECTED["interactions"],
        "train_interactions": EXPECTED["interactions"] - 2 * EXPECTED["users"],
        "valid_users": EXPECTED["users"], "test_users": EXPECTED["users"],
        "valid_targets": EXPECTED["users"], "test_targets": EXPECTED["users"],
    }
    if counts != want:
        raise SystemExit(f"Tansuo split counts differ from the expected ones: {counts} vs {want}")
    # Every phase is consistent with the runs it was cut from.
    for j, u in enumerate(split.test.users):
        run = ps.runs[u]
        assert np.array_equal(split.valid.history[j], run[:-2])
        assert np.array_equal(split.test.history[j], run[:-1])
        assert split.valid.targets[j][0] == run[-2] and split.test.targets[j][0] == run[-1]
    return counts


def _row(user: str, item: str, ts: float, hist: list[str]) -> str:
    return f"{user}\t{item}\t{ts:.6f}\t{' '.join(hist)}\n"


def export_recbole(ps: PeerSplit, out_dir: Path, max_len: int = 50) -> dict[str, object]:
    """Write the three benchmark files into ``out_dir/ml-tansuo/``; returns the manifest."""
    folder = out_dir / DATASET
    folder.mkdir(parents=True, exist_ok=True)
    header = "user_id:token\titem_id:token\ttimestamp:float\titem_id_list:token_seq\n"
    ids = ps.item_ids
    rows = {"train": 0, "valid": 0, "test": 0}
    files = {}
    with ExitStack() as stack:
        handles = {p: stack.enter_context(open(folder / f"{DATASET}.{p}.inter", "w",
                                               encoding="utf-8"))
                   for p in rows}
        for h in handles.values():
            h.write(header)
        for u in range(ps.n_users):
            run = [str(ids[i]) for i in ps.runs[u]]
            ts = ps.seconds[u].astype(np.float64) + np.arange(len(run)) * 1e-6
            user = str(ps.user_ids[u])
            n = len(run)
            for t in range(1, n):
                part = "train" if t < n - 2 else ("valid" if t == n - 2 else "test")
                handles[part].write(_row(user, run[t], ts[t], run[max(0, t - max_len):t]))
                rows[part] += 1
    for p in rows:
        path = folder / f"{DATASET}.{p}.inter"
        files[p] = {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    counts = check_split(ps)
    manifest = {
        "dataset": DATASET,
        "max_item_list_length": max_len,
        "tansuo_counts": counts,
        # RecBole-side expectations, checked inside RecBole after it loads the dataset.
        "expected_recbole": {
            "user_num_incl_pad": ps.n_users + 1,
            "item_num_incl_pad": ps.n_items + 1,
            "train_rows": counts["train_interactions"] - ps.n_users,
            "train_interactions": counts["train_interactions"],
            "valid_rows": counts["valid_users"],
            "test_rows": counts["test_users"],
        },
        "rows_written": rows,
        "files": files,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--max-len", type=int, default=50)
    args = ap.parse_args()
    manifest = export_recbole(build_split(), args.out, args.max_len)
    print(json.dumps({k: manifest[k] for k in ("tansuo_counts", "expected_recbole",
                                               "rows_written")}, indent=2))


if __name__ == "__main__":
    main()
