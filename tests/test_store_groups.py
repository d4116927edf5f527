"""Small write batches are grouped row by row exactly as the vectorised grouping does."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from tansuo.data.store import _event_groups_by_row, _event_groups_vectorised

OPTIONAL = {
    "item_id": st.sampled_from([None, "i1", "i2"]),
    "dwell_seconds": st.sampled_from([np.nan, 0.0, 2.5]),
    "query": st.sampled_from([None, "red shoes"]),
    "quantity": st.sampled_from([np.nan, 1.0, 3.0]),
    "amount": st.sampled_from([np.nan, 9.99]),
    "rating": st.sampled_from([np.nan, 4.5]),
    "text": st.sampled_from([None, "nice"]),
    "request_id": st.sampled_from([None, "r1"]),
    "position": st.sampled_from([np.nan, 0.0, 7.0]),
}


@st.composite
def batches(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(1, 12))
    data: dict[str, list] = {
        "event_id": [f"e{i}" for i in range(n)],
        "user_id": [draw(st.sampled_from(["u1", "u2"])) for _ in range(n)],
        "type": [draw(st.sampled_from(["view", "search"])) for _ in range(n)],
        "timestamp": [draw(st.integers(0, 2**50)) for _ in range(n)],
    }
    used = draw(st.lists(st.sampled_from(sorted(OPTIONAL)), unique=True))
    for c, values in OPTIONAL.items():  # a clean frame has every column; unused ones empty
        data[c] = [draw(values) if c in used else None for _ in range(n)]
    frame = pd.DataFrame(data)
    for c in ("dwell_seconds", "quantity", "amount", "rating", "position"):
        frame[c] = frame[c].astype("float64")
    if draw(st.booleans()):
        frame["unknown_item"] = np.array([draw(st.sampled_from([0, 1])) for _ in range(n)],
                                         dtype="int8")
    if draw(st.booleans()):
        frame["key_id"] = [draw(st.sampled_from([None, "k1"])) for _ in range(n)]
    return frame


@settings(max_examples=200, deadline=None)
@given(batch=batches(), import_id=st.sampled_from([None, 3]))
def test_row_grouping_equals_vectorised_grouping(batch: pd.DataFrame, import_id) -> None:
    fast = _event_groups_by_row(batch, import_id)
    slow = _event_groups_vectorised(batch, import_id)
    assert fast == slow
    for (_, cols_f), (_, cols_s) in zip(fast, slow, strict=True):
        for cf, cs in zip(cols_f, cols_s, strict=True):  # same Python types bound
            assert [type(v) for v in cf] == [type(v) for v in cs]
