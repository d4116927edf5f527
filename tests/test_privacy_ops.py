"""Erasure with receipts, retention and the audit log (issue 9, parts 2, 3 and 5).

Store-level tests take the ``store`` fixture, so they run on SQLite and PostgreSQL. The key
test is bit-exact unlearning: erasing a user and retraining gives exactly the model trained on
data that never held the user.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tansuo.data.schema import EVENT_COLUMNS, derive_event_id
from tansuo.data.store import EventStore, QuarantineRow
from tansuo.privacy.audit import REDACTED, AuditLog
from tansuo.privacy.erasure import erase_user, mentions, receipts
from tansuo.privacy.policy import PrivacyError
from tansuo.privacy.retention import apply_retention
from test_cli import run

DAY = 86_400_000


def _events(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    """(user, item, timestamp ms) → a batch of views."""
    frame = pd.DataFrame({c: [None] * len(rows) for c in EVENT_COLUMNS})
    frame["user_id"] = [u for u, _, _ in rows]
    frame["item_id"] = [i for _, i, _ in rows]
    frame["type"] = "view"
    frame["timestamp"] = np.array([t for _, _, t in rows], dtype=np.int64)
    for c in ("dwell_seconds", "quantity", "amount", "rating", "position"):
        frame[c] = frame[c].astype("float64")
    frame["event_id"] = [derive_event_id(u, i, "view", t) for u, i, t in rows]
    return frame[list(EVENT_COLUMNS)]


def _q(line: int, raw: str | None) -> QuarantineRow:
    return QuarantineRow("events", "f.csv", line, "bad_timestamp", "timestamp 'x'", raw)


def _served(home: Path, rows: list[tuple[str, int]]) -> Path:
    path = home / "logs" / "served.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"request_id": f"r{n}", "user_id": u, "ts": ts, "items": ["a"]})
             for n, (u, ts) in enumerate(rows)]
    path.write_text("\n".join([*lines, "not json at all"]) + "\n")
    return path


def _served_users(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line)["user_id"])
        except json.JSONDecodeError:
            out.append("?")
    return out


def _sql(store: EventStore, sql: str, params: tuple = ()) -> None:
    with store.transaction() as cur:
        cur.execute(store._q(sql), params)


# -- matching ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "hit"), [
    ('{"user_id": "u1", "item_id": "a"}', True),
    ('{"visitorid": 1, "item_id": "a"}', False),      # 1 is not "u1"
    ('{"user_id": "u10", "item_id": "u1x"}', False),   # substrings of other ids
    ('{"customer": " u1 ", "n": 3}', True),            # any field, trimmed
    ("u1,a,view,not-a-time", True),                    # a CSV line the reader rejected
    ("u10,a,view,2026", False),
    ("x\tu1\tview", True),                             # TSV
    ('{"user_id": "u1", "item_id": ', True),           # broken JSON: its string literals
    ('{"user_id": "u11", "item_id": ', False),
    ("xu1;u1x", False),
    (None, False),
    ("", False),
])
def test_mentions_matches_whole_fields_only(raw, hit):
    assert mentions(raw, "u1") is hit


def test_mentions_numeric_ids():
    assert mentions('{"visitorid": 257597, "itemid": 3}', "257597")
    assert mentions('{"visitorid": 257597.0}', "257597")
    assert not mentions('{"visitorid": 2575970}', "257597")


# -- erasure ---------------------------------------------------------------------------------------
def _populate(store: EventStore, home: Path) -> None:
    store.write_events(_events([("u1", "a", 1_000), ("u1", "b", 2_000), ("u10", "a", 1_500),
                                ("u2", "c", 3_000)]),
                       quarantine=[_q(1, '{"user_id": "u1", "timestamp": "x"}'),
                                   _q(2, '{"user_id": "u10", "timestamp": "x"}'),
                                   _q(3, "u1,a,view,yesterday"),
                                   _q(4, "u2,a,view,u1-ish"),
                                   _q(5, None)])
    iid = store.begin_import("events", "f.csv", "csv")
    store.finish_import(iid, "ok", {
        "rejected": 3, "bot_users": ["u1", "u10"],
        "first_rejected": [{"line": 1, "reason": "r", "detail": "d", "raw": '{"user_id": "u1"}'},
                           {"line": 2, "reason": "r", "detail": "d", "raw": '{"user_id": "u10"}'},
                           {"line": 3, "reason": "r", "detail": "d", "raw": "u2,a"}]})
    _served(home, [("u1", 1), ("u10", 2), ("u1", 3), ("u2", 4)])
    shop = home / "datasets" / "synthetic-shop"
    shop.mkdir(parents=True)
    (shop / "truth_interests.csv").write_text(
        "user_id,interest,weight\nu1,Sports,0.5\nu10,Home,1.0\n\"u1\",\"Home, Garden\",0.5\n")
    version = home / "models" / "20200101T000000000000Z-pop"
    version.mkdir(parents=True)
    (version / "meta.json").write_text(json.dumps(
        {"version": version.name, "model": "pop", "created_at": "20200101T000000000000Z"}))


def test_erase_removes_that_user_everywhere_and_nobody_else(store, tmp_path):
    home = tmp_path / "home"
    _populate(store, home)
    receipt = erase_user(store, home, "u1", actor="key_abc")

    assert receipt.removed == {"events": 2, "quarantine_rows": 2, "import_report_rows": 2,
                               "served_slates": 2, "dataset_rows": 2}
    assert receipt.verified and not any(receipt.remaining.values())
    assert receipt.models_predating == ["20200101T000000000000Z-pop"]
    assert receipt.retrained is None and not receipt.already_erased
    # everyone else is untouched
    assert store.events()[["user_id", "item_id"]].values.tolist() == [
        ["u10", "a"], ["u2", "c"]]
    assert store.quarantined()["line"].tolist() == [2, 4, 5]
    report = json.loads(store.imports()["report"][0])
    assert report["bot_users"] == ["u10"] and report["rejected"] == 3
    assert [r["line"] for r in report["first_rejected"]] == [2, 3]
    assert _served_users(home / "logs" / "served.jsonl") == ["u10", "u2", "?"]
    truth = (home / "datasets" / "synthetic-shop" / "truth_interests.csv").read_text()
    assert truth == "user_id,interest,weight\nu10,Home,1.0\n"
    # no model trains on the user again; a running service is told to forget them
    assert json.loads(store.get_meta("erased_users")) == ["u1"]
    assert store.get_meta("sync_erased")
    # the receipt on disk and the audit entry
    path = Path(receipt.path)
    assert path.parent == home / "privacy" / "receipts"
    assert path.name == f"{receipt.receipt_id}.json"
    on_disk = json.loads(path.read_text())
    assert on_disk == receipt.to_dict() and on_disk["verified"] is True
    assert receipts(home) == [on_disk]
    (entry,) = AuditLog(home).entries()
    assert (entry["action"], entry["actor"], entry["target"]) == ("erase", "key_abc", "u1")
    assert entry["details"]["receipt"] == receipt.receipt_id
    assert entry["details"]["removed"] == receipt.removed


def test_erase_is_idempotent_and_records_unknown_users(store, tmp_path):
    home = tmp_path / "home"
    _populate(store, home)
    first = erase_user(store, home, "u1")
    again = erase_user(store, home, "u1")
    assert again.already_erased and again.verified
    assert not any(again.removed.values())
    assert again.receipt_id != first.receipt_id
    nobody = erase_user(store, home, "nobody")
    assert not any(nobody.removed.values()) and not nobody.already_erased
    assert json.loads(store.get_meta("erased_users")) == ["nobody", "u1"]
    assert len(receipts(home)) == 3
    assert [e["target"] for e in AuditLog(home).entries(action="erase")] == [
        "u1", "u1", "nobody"]
    assert store.count_events() == 2
    with pytest.raises(PrivacyError, match="user id"):
        erase_user(store, home, "  ")


def test_erase_ids_with_sql_wildcards_quotes_and_case(store, tmp_path):
    raws = ['{"user_id": "u_1"}', '{"user_id": "ux1"}', '{"user_id": "a%b"}',
            '{"user_id": "aXYb"}', '{"user_id": "q\\"x"}', '{"user_id": "U1"}',
            '{"user_id": "u1"}']
    store.write_events(_events([]), quarantine=[_q(n, r) for n, r in enumerate(raws)])
    for user in ("u_1", "a%b", 'q"x', "u1"):
        assert erase_user(store, tmp_path, user).removed["quarantine_rows"] == 1, user
    assert store.quarantined()["line"].tolist() == [1, 3, 5]


# -- retention -------------------------------------------------------------------------------------
NOW = 100 * DAY


def _aged(store: EventStore, home: Path) -> int:
    """Rows either side of the 30-day cutoff; returns the cutoff."""
    cutoff = NOW - 30 * DAY
    store.write_events(_events([("u1", "a", cutoff - 1), ("u1", "b", cutoff),
                                ("u2", "a", cutoff + 1), ("u2", "b", 1)]),
                       quarantine=[_q(1, '{"user_id": "u1"}'), _q(2, '{"user_id": "u2"}'),
                                   _q(3, '{"user_id": "u3"}')])
    for line, created in ((1, cutoff - 1), (2, cutoff), (3, cutoff + 5)):
        _sql(store, "UPDATE quarantine SET created_at = ? WHERE line = ?", (created, line))
    for started in (cutoff - 1, cutoff):
        iid = store.begin_import("events", f"f{started}.csv", "csv")
        store.finish_import(iid, "ok", {"bot_users": ["u9"], "first_rejected": [
            {"line": 1, "reason": "r", "detail": "d", "raw": "u9"}]})
        _sql(store, "UPDATE imports SET started_at = ? WHERE import_id = ?", (started, iid))
    _served(home, [("u1", cutoff - 1), ("u1", cutoff), ("u2", cutoff + 1)])
    return cutoff


def _snapshot(store: EventStore, home: Path) -> tuple:
    return (store.events().values.tolist(), store.quarantined().values.tolist(),
            store.imports()["report"].tolist(),
            (home / "logs" / "served.jsonl").read_text())


def test_retention_purges_exactly_what_is_older_than_the_cutoff(store, tmp_path):
    home = tmp_path / "home"
    cutoff = _aged(store, home)
    report = apply_retention(store, home, 30, now_ms=NOW)
    assert report.cutoff_ms == cutoff and report.cutoff == "1970-03-12T00:00:00.000Z"
    assert (report.events, report.served_slates, report.quarantine_rows,
            report.import_report_rows) == (2, 1, 1, 2)
    assert "profiles" in report.note
    assert store.events()["timestamp"].tolist() == [cutoff, cutoff + 1]  # the boundary stays
    assert store.quarantined()["line"].tolist() == [2, 3]
    reports = [json.loads(r) for r in store.imports()["report"]]
    assert [r["bot_users"] for r in reports] == [[], ["u9"]]
    assert [len(r["first_rejected"]) for r in reports] == [0, 1]
    assert [json.loads(x)["ts"] for x in
            (home / "logs" / "served.jsonl").read_text().splitlines()[:-1]] == [cutoff,
                                                                                cutoff + 1]
    (entry,) = AuditLog(home).entries()
    assert entry["action"] == "retention" and entry["details"]["events"] == 2
    # a second run finds nothing more
    again = apply_retention(store, home, 30, now_ms=NOW)
    assert (again.events, again.served_slates, again.quarantine_rows,
            again.import_report_rows) == (0, 0, 0, 0)


def test_retention_dry_run_counts_and_changes_nothing(store, tmp_path):
    home = tmp_path / "home"
    _aged(store, home)
    before = _snapshot(store, home)
    dry = apply_retention(store, home, 30, now_ms=NOW, dry_run=True)
    assert dry.dry_run and (dry.events, dry.served_slates, dry.quarantine_rows,
                            dry.import_report_rows) == (2, 1, 1, 2)
    assert _snapshot(store, home) == before
    assert AuditLog(home).entries() == []
    with pytest.raises(PrivacyError, match="positive"):
        apply_retention(store, home, 0, now_ms=NOW)


# -- audit log -------------------------------------------------------------------------------------
def _append_many(home: str, worker: int) -> None:
    log = AuditLog(home)
    for i in range(50):
        log.record("reload", f"w{worker}", str(i), {"pad": "x" * 500})


def test_audit_entries_filter_limit_and_redaction(tmp_path):
    log = AuditLog(tmp_path)
    assert log.entries() == []
    log.record("key.create", "key_admin", "key_new", {"scopes": ["read"], "key": "tsk_secret",
                                                     "nested": {"api_token": "t"}})
    log.record("erase", "cli", "u1", {"removed": {"events": 2}})
    log.record("key.revoke", "cli", "key_new")
    log.path.open("a").write("garbage line\n")
    log.record("retention", "cli", "before x", {})
    entries = log.entries()
    assert [e["action"] for e in entries] == ["key.create", "erase", "key.revoke", "retention"]
    first = entries[0]
    assert set(first) == {"at", "action", "actor", "target", "details"}
    assert first["at"].endswith("Z") and "T" in first["at"]
    assert first["details"] == {"scopes": ["read"], "key": REDACTED,
                                "nested": {"api_token": REDACTED}}
    assert "tsk_secret" not in log.path.read_text()
    assert [e["action"] for e in log.entries(action="key")] == ["key.create", "key.revoke"]
    assert [e["target"] for e in log.entries(action="erase")] == ["u1"]
    assert [e["action"] for e in log.entries(limit=2)] == ["key.revoke", "retention"]
    assert log.entries(limit=0) == []


def test_audit_appends_from_several_processes_stay_whole(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    lines = (tmp_path / "logs" / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 200
    entries = [json.loads(line) for line in lines]
    for w in range(4):  # each writer's entries in its own order
        assert [e["target"] for e in entries if e["actor"] == f"w{w}"] == [
            str(i) for i in range(50)]


# -- command line ---------------------------------------------------------------------------------
EVENTS = ("user_id,item_id,type,timestamp\nu1,i1,view,2020-01-01T00:00:00Z\n"
          "u1,i2,purchase,2020-01-02T00:00:00Z\nu10,i1,click,2020-01-02T00:00:00Z\n"
          "u2,i1,view,2099-01-01T00:00:00Z\n")


def test_cli_erase_audit_and_retention(tmp_path, write, monkeypatch):
    monkeypatch.delenv("TANSUO_RETENTION_DAYS", raising=False)
    home = tmp_path / "home"
    run(home, "import", "events", str(write("e.csv", EVENTS)), "--max-future-seconds",
        "1e12")
    doc = json.loads(run(home, "erase", "u1", "--retrain", "--json").stdout)
    assert doc["user_id"] == "u1" and doc["removed"]["events"] == 2 and doc["verified"]
    assert doc["retrained"] is None and Path(doc["path"]).exists()
    table = run(home, "erase", "u10")
    assert "erased user u10" in table.stdout and "verified: nothing left" in table.stdout
    audit = json.loads(run(home, "audit", "--json", "--action", "erase").stdout)
    assert [e["target"] for e in audit] == ["u1", "u10"]
    assert "erase" in run(home, "audit").stdout

    none = run(home, "retention", "apply", check=False)
    assert none.returncode == 2 and "no retention period" in none.stderr
    zero = run(home, "retention", "apply", "--days", "0", check=False)
    assert zero.returncode == 2 and "positive" in zero.stderr
    dry = json.loads(run(home, "retention", "apply", "--dry-run", "--json",
                         env={"TANSUO_RETENTION_DAYS": "365"}).stdout)
    assert dry["dry_run"] and dry["events"] == 0  # u1 and u10 are gone, u2 is in 2099
    purged = run(home, "retention", "apply", "--days", "0.5")
    assert "retention 0.5 days: purged" in purged.stdout and "profiles" in purged.stdout
    assert [e["action"] for e in json.loads(run(home, "audit", "--json").stdout)] == [
        "erase", "erase", "retention"]


def test_cli_erase_takes_the_raw_id_when_pseudonymising(tmp_path, write):
    home = tmp_path / "home"
    env = {"TANSUO_PSEUDONYM_KEY": "k" * 32}
    run(home, "import", "events", str(write("e.csv", EVENTS)), "--max-future-seconds", "1e12",
        env=env)
    doc = json.loads(run(home, "erase", "u1", "--json", env=env).stdout)
    assert doc["user_id"].startswith("p_") and doc["removed"]["events"] == 2


def _model_arrays(home: Path) -> dict[str, np.ndarray]:
    version = (home / "models" / "LATEST").read_text().strip()
    out = {}
    for name in ("arrays.npz", "vocab.npz"):
        with np.load(home / "models" / version / name, allow_pickle=False) as z:
            out.update({f"{name}:{k}": z[k] for k in z.files})
    return out


def _drop_timings(value):
    if isinstance(value, dict):
        return {k: _drop_timings(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_drop_timings(v) for v in value]
    return value


def test_erase_and_retrain_equals_training_without_the_user_bit_for_bit(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shop = ("datasets", "load", "synthetic-shop", "--users", "60", "--items", "80", "--json")
    run(a, *shop)
    first = json.loads(run(a, "train", "--model", "sasrec:epochs=2", "--json").stdout)
    receipt = json.loads(run(a, "erase", "U000003", "--retrain", "--json").stdout)
    assert receipt["removed"]["events"] > 0 and receipt["verified"]
    assert receipt["models_predating"] == [first["version"]]
    assert receipt["retrained"] == (a / "models" / "LATEST").read_text().strip()

    run(b, *shop)
    assert json.loads(run(b, "erase", "U000003", "--json").stdout)["retrained"] is None
    run(b, "train", "--model", "sasrec:epochs=2", "--json")

    got, want = _model_arrays(a), _model_arrays(b)
    assert sorted(got) == sorted(want)
    assert "U000003" not in got["vocab.npz:users"].tolist()
    for name, x in got.items():
        y = want[name]
        if name == "arrays.npz:meta":  # SASRec's JSON training log: equal but for timings
            # (whose digits also change the string's length, hence its numpy dtype)
            assert _drop_timings(json.loads(str(x))) == _drop_timings(json.loads(str(y)))
            continue
        assert x.dtype == y.dtype and x.shape == y.shape, name
        if x.dtype.kind == "U":
            assert np.array_equal(x, y), name
        else:
            assert x.tobytes() == y.tobytes(), f"{name} differs"
    audit = [e["action"] for e in json.loads(run(a, "audit", "--json").stdout)]
    assert audit == ["erase", "retrain"]
