"""Keyed pseudonymisation at the door, minimisation, key rotation without re-import, and a scan
of a whole data directory after a realistic run that finds no raw user id."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tansuo.config import Settings
from tansuo.data.importer import ImportOptions, import_events
from tansuo.errors import ConfigError
from tansuo.privacy.policy import PrivacyError, PrivacyPolicy
from tansuo.privacy.pseudonym import Pseudonymizer, is_pseudonym, load_ring
from test_cli import run
from test_service import _Server

K1 = "first-key-0123456789abcdef"
K2 = "second-key-0123456789abcdef"


def test_pseudonyms_are_keyed_deterministic_and_well_formed():
    p = Pseudonymizer([K1])
    a = p("alice@example.com")
    assert a == p("alice@example.com") and is_pseudonym(a)
    assert a != Pseudonymizer([K2])("alice@example.com")  # the key matters
    assert a != p("alice@example.co")
    assert p.lookup(a) == a and p.lookup("alice@example.com") == a
    assert Pseudonymizer([K1]).key_id == p.key_id != Pseudonymizer([K1, K2]).key_id
    with pytest.raises(ConfigError, match="fewer than 16"):
        Pseudonymizer(["short"])
    with pytest.raises(ConfigError, match="empty"):
        Pseudonymizer([" "])


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_rotation_step_equals_the_longer_chain(raw):
    one, two = Pseudonymizer([K1]), Pseudonymizer([K1, K2])
    assert two.rekey(one(raw)) == two(raw)
    assert one.rotated(K2).key_id == two.key_id


def test_ring_from_env_or_file(tmp_path):
    assert load_ring(None, None) is None and load_ring("  ", None) is None
    f = tmp_path / "ring"
    f.write_text(f"{K1}\n{K2}\n")
    assert load_ring(None, f).key_id == Pseudonymizer([K1, K2]).key_id
    assert load_ring(f"{K1},{K2}", None).key_id == Pseudonymizer([K1, K2]).key_id
    with pytest.raises(ConfigError, match="cannot read"):
        load_ring(None, tmp_path / "missing")


EVENTS = ("user_id,item_id,type,timestamp,query,dwell_seconds\n"
          "alice,i1,view,2026-01-01T00:00:00Z,,12\n"
          "alice,,search,2026-01-01T00:01:00Z,red running shoes,\n"
          "bob,i2,purchase,2026-01-01T00:02:00Z,,\n"
          "bob,i2,teleport,2026-01-01T00:03:00Z,,\n"          # unknown type: quarantined
          "carol,i3,view,not-a-time,,\n")                      # bad timestamp: quarantined


def _policy(home, **kw):
    return PrivacyPolicy.from_settings(Settings(home=home, **kw))


def test_import_stores_pseudonyms_and_key_ids_only(tmp_path, store, write):
    path = write("e.csv", EVENTS)
    policy = _policy(tmp_path, pseudonym_key=K1)
    report = import_events(store, path, ImportOptions(privacy=policy))
    assert report.accepted == 3 and report.rejected == 2
    p = policy.pseudonymizer
    stored = store.events(["user_id", "key_id"])
    assert set(stored["user_id"]) == {p("alice"), p("bob")}
    assert set(stored["key_id"]) == {p.key_id}
    assert store.get_meta("pseudonym_key_id") == p.key_id
    raw = " ".join(str(x) for x in store.quarantined()["raw"])
    assert "bob" not in raw and "carol" not in raw and p("carol") in raw
    imports = json.dumps(store.imports().to_dict(orient="records"), default=str)
    assert "alice" not in imports and "bob" not in imports
    # the same file again: the same pseudonyms, so nothing new
    again = import_events(store, path, ImportOptions(privacy=policy))
    assert again.accepted == 0 and again.duplicates == 3


def test_a_store_refuses_the_wrong_ring_or_none(tmp_path, store, write):
    path = write("e.csv", EVENTS)
    import_events(store, path, ImportOptions(privacy=_policy(tmp_path, pseudonym_key=K1)))
    with pytest.raises(PrivacyError, match="no key is configured"):
        import_events(store, path, ImportOptions())
    with pytest.raises(PrivacyError, match="is not the one this store uses"):
        import_events(store, path, ImportOptions(privacy=_policy(tmp_path, pseudonym_key=K2)))


def test_a_raw_store_is_not_silently_mixed_with_pseudonyms(tmp_path, store, write):
    path = write("e.csv", EVENTS)
    import_events(store, path, ImportOptions())
    with pytest.raises(PrivacyError, match="rotate-pseudonym"):
        import_events(store, path, ImportOptions(privacy=_policy(tmp_path, pseudonym_key=K1)))


def test_minimisation_drops_fields_and_keeps_text_as_embeddings_only(tmp_path, store, write):
    path = write("e.csv", EVENTS)
    policy = _policy(tmp_path, stored_fields=["query"], text_storage="embedding")
    import_events(store, path, ImportOptions(privacy=policy))
    ev = store.events(["user_id", "query", "dwell_seconds"])
    assert ev["dwell_seconds"].isna().all()  # not on the allow-list
    refs = [q for q in ev["query"] if q]
    assert len(refs) == 1 and refs[0].startswith("emb:") and "shoes" not in refs[0]
    from tansuo.text.encoder import EmbeddingCache, cache_path

    with EmbeddingCache(cache_path(tmp_path)) as cache:
        vec = cache.get(policy._encoder.name, refs)[refs[0]]
    assert vec.shape == (384,) and abs(float(np.linalg.norm(vec)) - 1) < 1e-3
    none = _policy(tmp_path, text_storage="none")
    path.write_text(EVENTS.replace("red running shoes", "blue running shoes"))
    import_events(store, path, ImportOptions(privacy=none))
    assert not any("blue" in str(q) for q in store.events(["query"])["query"])
    with pytest.raises(ConfigError, match="unknown fields"):
        _policy(tmp_path, stored_fields=["dwell"])


def _raw_ids_in(home: Path, pattern: re.Pattern[bytes]) -> list[str]:
    hits = []
    for f in sorted(home.rglob("*")):
        if f.is_file() and pattern.search(f.read_bytes()):
            hits.append(str(f.relative_to(home)))
    return hits


RAW = re.compile(rb"U0\d{5}")


@pytest.mark.slow
def test_no_raw_user_id_anywhere_in_the_data_directory_after_a_full_run(tmp_path):
    home = tmp_path / "home"
    env = {"TANSUO_PSEUDONYM_KEY": K1}
    run(home, "datasets", "load", "synthetic-shop", "--users", "60", "--items", "80", env=env)
    run(home, "train", "--model", "sasrec:epochs=1", "--evaluate", env=env)
    run(home, "evaluate", "--models", "pop", "--k", "10", env=env)
    shown = run(home, "interests", "U000003", "--json", env=env).stdout
    assert json.loads(shown)["user_id"] == Pseudonymizer([K1])("U000003")
    from tansuo.service.app import create_app
    from tansuo.service.auth import KeyStore
    from tansuo.service.engine import Engine

    engine = Engine(Settings(home=home, pseudonym_key=K1, rate_limit_per_minute=0))
    key = KeyStore(home).create(["admin"])[0]
    h = {"Authorization": f"Bearer {key}"}
    with _Server(create_app(engine)) as url:
        rec = httpx.get(f"{url}/v1/users/U000004/recommendations", headers=h).json()
        click = [{"user_id": "U000004", "item_id": rec["items"][0]["item_id"], "type": "click",
                  "timestamp": "2026-06-01T00:00:00Z", "request_id": rec["request_id"],
                  "position": 0},
                 {"user_id": "U000999", "item_id": "I000001", "type": "view",
                  "timestamp": "2026-06-01T00:00:01Z"},
                 {"user_id": "U000998", "type": "teleport", "timestamp": "x"}]
        assert httpx.post(f"{url}/v1/events", json=click, headers=h).json()["accepted"] == 2
        assert httpx.get(f"{url}/v1/users/U000999/interests", headers=h).status_code == 200
        assert httpx.delete(f"{url}/v1/users/U000005", headers=h).status_code == 200
        for page in ("/v1/insights/overview", "/v1/insights/exploration"):
            assert httpx.get(url + page, headers=h).status_code == 200
    engine.close()
    for db in home.glob("*.db"):  # fold the WAL into the file too, then look everywhere
        sqlite3.connect(db).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    assert _raw_ids_in(home, RAW) == []
    # the check can fail: without a key the same run leaves raw ids behind
    plain = tmp_path / "plain"
    run(plain, "datasets", "load", "synthetic-shop", "--users", "20", "--items", "40")
    assert _raw_ids_in(plain, RAW)


def test_rotation_rekeys_in_place_and_the_old_ring_is_refused(tmp_path, write):
    home = tmp_path / "home"
    path = write("e.csv", EVENTS)
    items = write("items.csv", "item_id,title,category\ni1,trail shoe,Sports > Running\n"
                  "i2,cake tin,Home > Baking\ni3,headphones,Electronics > Audio\n")
    run(home, "import", "items", str(items))
    run(home, "import", "events", str(path))  # raw ids, as a store made before privacy
    first = json.loads(run(home, "keys", "rotate-pseudonym", "--new-key", K1, "--json").stdout)
    assert first["users"] == 2 and first["previous_key_id"] is None
    ring1 = Pseudonymizer([K1])
    shown = run(home, "interests", "alice", "--json", env={"TANSUO_PSEUDONYM_KEY": K1})
    assert json.loads(shown.stdout)["user_id"] == ring1("alice")
    second = json.loads(run(home, "keys", "rotate-pseudonym", "--new-key", K2, "--json",
                            env={"TANSUO_PSEUDONYM_KEY": K1}).stdout)
    assert second["ring"] == f"{K1},{K2}" and second["previous_key_id"] == ring1.key_id
    ring2 = Pseudonymizer([K1, K2])
    shown = run(home, "interests", "bob", "--json", env={"TANSUO_PSEUDONYM_KEY": second["ring"]})
    assert json.loads(shown.stdout)["user_id"] == ring2("bob")
    stale = run(home, "import", "events", str(path), env={"TANSUO_PSEUDONYM_KEY": K1},
                check=False)
    assert stale.returncode != 0 and "is not the one this store uses" in stale.stderr
    audit = (home / "logs" / "audit.jsonl").read_text()
    assert audit.count("pseudonym.rotate") == 2 and K1 not in audit and K2 not in audit


def test_production_mode_refuses_to_serve_without_a_key(tmp_path):
    home = tmp_path / "home"
    r = run(home, "serve", "--port", "1", check=False, env={"TANSUO_MODE": "production"})
    assert r.returncode == 2 and "production mode needs a pseudonymisation key" in r.stderr
    with pytest.raises(ConfigError, match="production mode"):
        from tansuo.service.engine import Engine

        Engine(Settings(home=home, mode="production"))
