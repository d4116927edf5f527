"""The HTTP service against a real uvicorn server on a free port: ingestion, explained
recommendations, interests, items, erasure, hot-swap, auth, limits, metrics."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
import uvicorn

from tansuo.config import Settings
from tansuo.service.app import create_app
from tansuo.service.auth import KeyStore
from tansuo.service.engine import Engine, ServiceError
from test_cli import run

CATS = {"R": "Sports > Running > Shoes", "B": "Home > Baking > Tins",
        "A": "Electronics > Audio > Headphones"}
TITLES = {"R": "trail running shoe", "B": "non-stick cake tin", "A": "wireless headphones"}
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def _data(tmp):
    items = ["item_id,title,category,brand"]
    for letter in CATS:
        for j in range(8):
            items.append(f"{letter}{j},{TITLES[letter]} {j},{CATS[letter]},brand{j % 3}")
    (tmp / "items.csv").write_text("\n".join(items) + "\n")
    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,type,timestamp"]
    for u in range(20):
        letter = "R" if u < 12 else "A"
        for k in range(12):
            typ = "purchase" if k % 6 == 5 else "view"
            lines.append(f"u{u},{letter}{rng.integers(8)},{typ},{T0 + u * 3600 + k * 60}")
    (tmp / "events.csv").write_text("\n".join(lines) + "\n")


class _Server:
    def __init__(self, app) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                break
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@contextmanager
def serve_subprocess(home, *args: str, env: dict[str, str] | None = None):
    """`tansuo serve` on ``home`` in a subprocess on a free port, once it answers /v1/health:
    yields (the process, its base URL); stopped (if still running) on exit."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    full = {**os.environ, "TANSUO_HOME": str(home), **(env or {})}
    full.pop("TANSUO_DATABASE_URL", None)
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tansuo.cli", "serve", "--port",
                                 str(port), *args], env=full, stdout=subprocess.DEVNULL,
                                stderr=log, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(1200):
                if proc.poll() is not None:
                    log.seek(0)
                    raise AssertionError(f"tansuo serve exited: {log.read()}")
                try:
                    if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            else:
                raise AssertionError("tansuo serve never answered /v1/health")
            yield proc, url
        finally:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(30)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("service")
    _data(tmp)
    home = tmp / "home"
    run(home, "import", "items", str(tmp / "items.csv"))
    run(home, "import", "events", str(tmp / "events.csv"))
    settings = Settings(home=home, rate_limit_per_minute=100_000)
    engine = Engine(settings)
    keys = KeyStore(home)
    tokens = {s: keys.create([s])[0] for s in ("read", "ingest", "admin")}
    with _Server(create_app(engine)) as url:
        yield {"url": url, "home": home, "engine": engine, "tokens": tokens, "tmp": tmp}
    engine.close()


def _h(service, scope):
    return {"Authorization": f"Bearer {service['tokens'][scope]}"}


def test_recommendations_are_explained_with_propensities(service):
    r = httpx.get(f"{service['url']}/v1/users/u1/recommendations", params={"k": 5},
                  headers=_h(service, "read"))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert len(doc["items"]) == 5 and doc["request_id"] and doc["strategy"] == "interest-ts"
    for item in doc["items"]:
        assert 0 < item["propensity"] <= 1 and item["reason"]["text"]
    seen = {line.split(",")[1] for line in (service["tmp"] / "events.csv").read_text()
            .splitlines()[1:] if line.startswith("u1,")}
    assert not seen & {i["item_id"] for i in doc["items"]}  # seen items excluded by default
    # the exploring slate is drawn per request (u1 has only two unseen Running items, which
    # exploration may displace); the greedy one is deterministic and leads with the interest
    greedy = httpx.get(f"{service['url']}/v1/users/u1/recommendations",
                       params={"k": 5, "explore": 0}, headers=_h(service, "read")).json()
    assert all(i["propensity"] == 1.0 for i in greedy["items"])
    reasons = [i["reason"] for i in greedy["items"]]
    assert any(r["type"] == "interest" and r["tag"] == "Running" and r["because"]
               for r in reasons)
    log = (service["home"] / "logs" / "served.jsonl").read_text().splitlines()
    assert any(json.loads(x)["request_id"] == doc["request_id"] for x in log)


def test_unknown_user_gets_a_cold_start_slate(service):
    r = httpx.get(f"{service['url']}/v1/users/stranger/recommendations",
                  params={"k": 4}, headers=_h(service, "read"))
    assert r.status_code == 200
    items = r.json()["items"]
    assert len(items) == 4 and all(i["reason"]["type"] == "popular" for i in items)


def test_contexts_filters_and_exclusions(service):
    url, h = service["url"], _h(service, "read")
    r = httpx.get(f"{url}/v1/users/u1/recommendations",
                  params={"context": "search:wireless headphones", "k": 3,
                          "exclude_seen": "false", "explore": 0}, headers=h).json()
    assert all(i["item_id"].startswith("A") for i in r["items"])
    r = httpx.get(f"{url}/v1/users/u1/recommendations",
                  params={"category": "Home > Baking", "k": 3, "exclude": "B0,B1"},
                  headers=h).json()
    assert {i["item_id"][0] for i in r["items"]} == {"B"}
    assert not {"B0", "B1"} & {i["item_id"] for i in r["items"]}
    r = httpx.get(f"{url}/v1/users/u1/recommendations", params={"context": "item:A3", "k": 2,
                                                               "explore": 0}, headers=h)
    assert r.status_code == 200 and "A3" not in {i["item_id"] for i in r.json()["items"]}
    bad = httpx.get(f"{url}/v1/users/u1/recommendations", params={"context": "weather:sun"},
                    headers=h)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "context"
    bad = httpx.get(f"{url}/v1/users/u1/recommendations", params={"k": 0}, headers=h)
    assert bad.status_code == 422 and "k" in bad.json()["error"]["message"]
    bad = httpx.get(f"{url}/v1/users/u1/recommendations", params={"context": "item:nope"},
                    headers=h)
    assert bad.status_code == 404 and "nope" in bad.json()["error"]["message"]


def test_events_change_the_next_recommendations(service):
    url = service["url"]
    batch = [{"user_id": "newbie", "item_id": f"B{j}", "type": "purchase",
              "timestamp": T0 + 90_000 + j} for j in range(4)]
    batch.append({"user_id": "newbie", "item_id": "B0", "type": "teleport", "timestamp": T0})
    r = httpx.post(f"{url}/v1/events", json=batch, headers=_h(service, "ingest"))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["accepted"] == 4 and doc["rejected"][0]["index"] == 4
    assert doc["rejected"][0]["reason"] == "unknown_type"
    again = httpx.post(f"{url}/v1/events", json=batch[:4], headers=_h(service, "ingest")).json()
    assert again["accepted"] == 0 and again["duplicates"] == 4
    interests = httpx.get(f"{url}/v1/users/newbie/interests", headers=_h(service, "read"))
    assert interests.json()["interests"][0]["name"] == "Home > Baking"
    assert interests.json()["interests"][0]["events"] == 4  # duplicates folded in once
    recs = httpx.get(f"{url}/v1/users/newbie/recommendations", params={"explore": 0, "k": 3},
                     headers=_h(service, "read")).json()
    assert all(i["item_id"].startswith("B") for i in recs["items"])
    assert recs["items"][0]["reason"]["type"] == "interest"


def test_every_batchs_rejected_rows_are_quarantined(service):
    """Each API batch quarantines its own rejects (they used to share one source, so a
    reject at the same position and for the same reason as an earlier batch's was dropped);
    a retried identical batch adds none. API batches leave the import log alone (a row per
    batch grew it without bound, and erasure reads every row)."""
    from tansuo.data.store import open_store

    url, h = service["url"], _h(service, "ingest")
    with open_store(service["engine"].settings.resolved_database_url) as store:
        logged = len(store.imports())
    batches = [[{"user_id": f"q{n}", "item_id": "R1", "type": "teleport",
                 "timestamp": T0 + 70_000 + n}] for n in range(3)]
    for batch in [*batches, batches[0]]:
        r = httpx.post(f"{url}/v1/events", json=batch, headers=h)
        assert r.status_code == 200 and r.json()["rejected"][0]["reason"] == "unknown_type"
    items = [[{"item_id": "", "title": f"nameless {n}"}] for n in range(2)]
    for batch in items:
        assert httpx.put(f"{url}/v1/items", json=batch, headers=h).json()["rejected"]
    with open_store(service["engine"].settings.resolved_database_url) as store:
        raws = [raw for _, raw in store.quarantine_raw("events")]
        item_raws = [raw for _, raw in store.quarantine_raw("items")]
        assert len(store.imports()) == logged
    for n in range(3):
        assert sum(f'"q{n}"' in raw for raw in raws) == 1, (n, raws)
    assert sum("nameless" in raw for raw in item_raws) == 2, item_raws


def test_new_items_are_recommendable_at_once(service):
    url = service["url"]
    r = httpx.put(f"{url}/v1/items", json=[{"item_id": "B99", "title": "springform cake tin",
                                            "category": "Home > Baking > Tins"}],
                  headers=_h(service, "ingest"))
    assert r.status_code == 200 and r.json()["accepted"] == 1
    sim = httpx.get(f"{url}/v1/items/B99/similar", params={"k": 3},
                    headers=_h(service, "read")).json()
    assert all(i["item_id"].startswith("B") for i in sim["items"])
    recs = httpx.get(f"{url}/v1/users/u1/recommendations",
                     params={"category": "Home > Baking", "k": 10, "explore": 0},
                     headers=_h(service, "read")).json()
    assert "B99" in {i["item_id"] for i in recs["items"]}


def test_complementary_items(service):
    url = service["url"]
    batch = [{"user_id": "buyer", "item_id": i, "type": "purchase", "timestamp": T0 + 5 + n}
             for n, i in enumerate(["R1", "R2"])]
    httpx.post(f"{url}/v1/events", json=batch, headers=_h(service, "ingest"))
    r = httpx.get(f"{url}/v1/items/R1/complementary", headers=_h(service, "read"))
    assert r.status_code == 200 and isinstance(r.json()["items"], list)
    assert httpx.get(f"{url}/v1/items/nope/similar", headers=_h(service, "read")).status_code \
        == 404


def test_auth_scopes_and_revocation(service):
    url = service["url"]
    r = httpx.get(f"{url}/v1/users/u1/recommendations")
    assert r.status_code == 401 and "Authorization" in r.json()["error"]["message"]
    r = httpx.get(f"{url}/v1/users/u1/recommendations",
                  headers={"Authorization": "Bearer tsk_dead_beef"})
    assert r.status_code == 401 and r.json()["error"]["message"] == "invalid API key"
    r = httpx.post(f"{url}/v1/events", json=[], headers=_h(service, "read"))
    assert r.status_code == 403 and "lacks the 'ingest' scope" in r.json()["error"]["message"]
    key, record = KeyStore(service["home"]).create(["read"])
    ok = httpx.get(f"{url}/v1/health", headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200
    KeyStore(service["home"]).revoke(record.key_id)
    r = httpx.get(f"{url}/v1/users/u1/interests", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
    stored = (service["home"] / "auth" / "keys.json").read_text()
    assert key.split("_", 2)[2] not in stored  # only the hash is kept


def test_limits_and_bad_bodies(service):
    url = service["url"]
    r = httpx.post(f"{url}/v1/events", content=b"x" * 6_000_000,
                   headers={**_h(service, "ingest"), "Content-Type": "application/json"})
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/v1/events", json=[{"user_id": "u", "colour": "red"}],
                   headers=_h(service, "ingest"))
    assert r.status_code == 422 and "colour" in r.json()["error"]["field"]
    r = httpx.post(f"{url}/v1/events", json=[], headers=_h(service, "ingest"))
    assert r.status_code == 422 and r.json()["error"]["field"] == "events"


def test_rate_limit(tmp_path):
    home = tmp_path / "home"
    _data(tmp_path)
    run(home, "import", "items", str(tmp_path / "items.csv"))
    engine = Engine(Settings(home=home, rate_limit_per_minute=3))
    key, _ = KeyStore(home).create(["read"])
    with _Server(create_app(engine)) as url:
        codes = [httpx.get(f"{url}/v1/items/R1/similar",
                           headers={"Authorization": f"Bearer {key}"}).status_code
                 for _ in range(5)]
    engine.close()
    assert codes[:3] == [200] * 3 and codes[3] == 429


def test_erasure_health_and_metrics(service):
    url = service["url"]
    assert httpx.delete(f"{url}/v1/users/u2", headers=_h(service, "read")).status_code == 403
    httpx.get(f"{url}/v1/users/u2/recommendations", headers=_h(service, "read"))
    r = httpx.delete(f"{url}/v1/users/u2", headers=_h(service, "admin"))
    assert r.status_code == 200 and r.json()["events_removed"] == 12
    assert r.json()["profile_removed"] and r.json()["served_slates_removed"] >= 1
    assert httpx.get(f"{url}/v1/users/u2/interests",
                     headers=_h(service, "read")).status_code == 404
    log = (service["home"] / "logs" / "served.jsonl").read_text()
    assert '"user_id": "u2"' not in log
    # events sent again for an erased user are stored but never train a model
    httpx.post(f"{url}/v1/events", json=[{"user_id": "u2", "item_id": "R1", "type": "view",
                                          "timestamp": T0 + 99}], headers=_h(service, "ingest"))
    from tansuo.data.store import open_store
    from tansuo.evaluation.report import load_events

    with open_store(service["engine"].settings.resolved_database_url) as store:
        events, _, _ = load_events(None, store, service["home"])
    assert "u2" not in set(events["user_id"]) and "u1" in set(events["user_id"])
    health = httpx.get(f"{url}/v1/health").json()
    assert health["status"] == "ok" and health["items"] >= 24
    metrics = httpx.get(f"{url}/metrics").text
    assert "http_request_duration_seconds" in metrics
    assert "tansuo_events_ingested_total" in metrics and "tansuo_exploration_share" in metrics


def test_reload_refuses_without_a_model_and_swaps_when_forced(service):
    url, h = service["url"], _h(service, "admin")
    r = httpx.post(f"{url}/v1/admin/reload", headers=h)
    assert r.status_code == 409 and "run `tansuo train` first" in r.json()["error"]["message"]
    run(service["home"], "train", "--model", "itemknn")
    r = httpx.post(f"{url}/v1/admin/reload", headers=h)
    assert r.status_code == 200 and r.json()["swapped"]  # nothing served before: swap
    version = r.json()["model_version"]
    recs = httpx.get(f"{url}/v1/users/u1/recommendations", headers=_h(service, "read")).json()
    assert recs["model_version"] == version
    run(service["home"], "train", "--model", "pop")
    r = httpx.post(f"{url}/v1/admin/reload", headers=h)
    assert r.status_code == 409 and "no yardstick score" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/v1/admin/reload", json={"force": True}, headers=h)
    assert r.status_code == 200 and r.json()["model_version"] != version
    # with recorded yardstick scores, a worse model is refused and a better one swapped in
    good = json.loads(run(service["home"], "train", "--model", "itemknn", "--evaluate",
                          "--json").stdout)
    assert 0 <= good["yardstick"]["ndcg@10"] <= 1
    assert httpx.post(f"{url}/v1/admin/reload", json={"force": True},
                      headers=h).json()["model_version"] == good["version"]
    worse = json.loads(run(service["home"], "train", "--model", "itemknn:neighbors=1:last_n=1",
                           "--evaluate", "--json").stdout)
    r = httpx.post(f"{url}/v1/admin/reload", headers=h)
    if worse["yardstick"]["ndcg@10"] < good["yardstick"]["ndcg@10"]:
        assert r.status_code == 409 and "< serving" in r.json()["error"]["message"]
    else:
        assert r.status_code == 200


def test_hot_swap_under_concurrent_load_fails_no_request(service):
    url = service["url"]
    run(service["home"], "train", "--model", "als:factors=8:iterations=3")
    stop = threading.Event()
    codes: list[int] = []

    def hammer() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                r = client.get(f"{url}/v1/users/u{len(codes) % 12}/recommendations",
                               params={"k": 5}, headers=_h(service, "read"))
                codes.append(r.status_code)

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    for w in workers:
        w.start()
    swaps = []
    for _ in range(3):
        time.sleep(0.3)
        swaps.append(httpx.post(f"{url}/v1/admin/reload", json={"force": True},
                                headers=_h(service, "admin")).status_code)
        run(service["home"], "train", "--model", "itemknn:neighbors=50")
    time.sleep(0.3)
    stop.set()
    for w in workers:
        w.join()
    assert swaps == [200, 200, 200] and len(codes) > 20
    assert set(codes) == {200}, sorted(set(codes))


def test_sigkill_during_ingestion_loses_no_acknowledged_event(tmp_path):
    import signal

    _data(tmp_path)
    home = tmp_path / "home"
    run(home, "import", "items", str(tmp_path / "items.csv"))
    key, _ = KeyStore(home).create(["ingest"])
    with serve_subprocess(home) as (proc, url):
        acknowledged: set[str] = set()
        killer = threading.Timer(2.0, lambda: proc.send_signal(signal.SIGKILL))
        killer.start()
        n = 0
        while True:
            batch = [{"event_id": f"e{n + j}", "user_id": f"k{(n + j) % 7}",
                      "item_id": f"R{(n + j) % 8}", "type": "view",
                      "timestamp": T0 + n + j} for j in range(50)]
            try:
                r = httpx.post(f"{url}/v1/events", json=batch, timeout=5,
                               headers={"Authorization": f"Bearer {key}"})
            except httpx.TransportError:
                break  # the server is gone
            if r.status_code == 200:
                acknowledged.update(e["event_id"] for e in batch)
            n += 50
        killer.cancel()
    from tansuo.data.store import open_store

    with open_store(Settings(home=home).resolved_database_url) as store:
        stored = set(store.events(["event_id"])["event_id"])
    assert len(acknowledged) >= 50 and acknowledged <= stored


def test_clicks_on_served_slates_feed_posteriors_and_ope(service):
    url = service["url"]
    recs = httpx.get(f"{url}/v1/users/u5/recommendations", params={"k": 4},
                     headers=_h(service, "read")).json()
    first = recs["items"][0]
    click = [{"user_id": "u5", "item_id": first["item_id"], "type": "click",
              "timestamp": T0 + 200_000, "request_id": recs["request_id"], "position": 0}]
    assert httpx.post(f"{url}/v1/events", json=click,
                      headers=_h(service, "ingest")).json()["accepted"] == 1
    engine = service["engine"]
    unit = int(engine.tracker.space.units([first["item_id"]])[0])
    clicks, shows = engine._posteriors["u5"][unit]
    assert clicks == 1 and shows >= 1
    rows = json.loads(run(service["home"], "ope", "--policy", "logged", "--n-boot", "50",
                          "--json").stdout)
    ipw = next(r for r in rows if r["estimator"] == "ipw")
    assert ipw["observed_ctr"] > 0 and ipw["estimate"] == pytest.approx(ipw["observed_ctr"])
    greedy = json.loads(run(service["home"], "ope", "--n-boot", "50", "--json").stdout)
    assert {r["estimator"] for r in greedy} == {"ipw", "snips"}


def test_the_sequence_model_serves(service):
    url = service["url"]
    run(service["home"], "train", "--model", "sasrec:epochs=2")
    # a new sequence model's first load exports its query graph (seconds), then swaps
    r = httpx.post(f"{url}/v1/admin/reload", json={"force": True}, headers=_h(service, "admin"),
                   timeout=180)
    assert r.status_code == 200 and r.json()["model_version"].endswith("-sasrec")
    recs = httpx.get(f"{url}/v1/users/u3/recommendations", params={"k": 5, "explore": 0},
                     headers=_h(service, "read")).json()
    assert len(recs["items"]) == 5 and recs["model_version"].endswith("-sasrec")
    assert all(i["score"] is not None for i in recs["items"])
    # one-shopper queries run the model's ONNX graph, exported once into its directory
    model = service["engine"].model
    assert model._graph is not None
    assert (service["home"] / "models" / recs["model_version"] / "query.onnx").exists()


def test_a_model_without_a_usable_query_graph_serves_through_torch(tmp_path, caplog):
    _data(tmp_path)
    home = tmp_path / "home"
    run(home, "import", "items", str(tmp_path / "items.csv"))
    run(home, "import", "events", str(tmp_path / "events.csv"))
    run(home, "train", "--model", "sasrec:epochs=1")
    version = (home / "models" / "LATEST").read_text().strip()
    (home / "models" / version / "query.onnx").write_bytes(b"not an ONNX graph")
    with caplog.at_level(logging.WARNING, logger="tansuo.service"):
        engine = Engine(Settings(home=home))
    assert engine.model._graph is None
    assert f"model {version}: no ONNX query graph" in caplog.text
    torch_only = Engine(Settings(home=home, serve_onnx=False))
    a = engine.recommend("u3", k=5, explore=0.0)
    b = torch_only.recommend("u3", k=5, explore=0.0)
    assert [i["item_id"] for i in a.items] == [i["item_id"] for i in b.items]
    engine.close()
    torch_only.close()


@pytest.mark.postgres
def test_service_on_postgresql(pg_url, tmp_path):
    """The same round trip on the production store: catalogue, events, recommendations that
    follow new events, erasure."""
    _data(tmp_path)
    home = tmp_path / "home"
    run(home, "--database-url", pg_url, "import", "items", str(tmp_path / "items.csv"))
    run(home, "--database-url", pg_url, "import", "events", str(tmp_path / "events.csv"))
    engine = Engine(Settings(home=home, database_url=pg_url, rate_limit_per_minute=0))
    key, _ = KeyStore(home).create(["admin"])
    h = {"Authorization": f"Bearer {key}"}
    with _Server(create_app(engine)) as url:
        batch = [{"user_id": "pg", "item_id": f"A{j}", "type": "purchase",
                  "timestamp": T0 + 50_000 + j} for j in range(3)]
        assert httpx.post(f"{url}/v1/events", json=batch, headers=h).json()["accepted"] == 3
        recs = httpx.get(f"{url}/v1/users/pg/recommendations", params={"explore": 0, "k": 3},
                         headers=h).json()
        assert all(i["item_id"].startswith("A") for i in recs["items"])
        assert httpx.delete(f"{url}/v1/users/pg", headers=h).json()["events_removed"] == 3
        assert httpx.get(f"{url}/v1/health").json()["users"] == 20
    engine.close()


def test_a_store_without_catalogue_still_serves(tmp_path):
    (tmp_path / "e.csv").write_text("user_id,item_id,type,timestamp\n" + "".join(
        f"u{u},i{(u + k) % 7},view,{T0 + u * 100 + k}\n" for u in range(6) for k in range(4)))
    home = tmp_path / "home"
    run(home, "import", "events", str(tmp_path / "e.csv"))
    engine = Engine(Settings(home=home))
    out = engine.ingest([{"user_id": "new", "item_id": "i3", "type": "view",
                          "timestamp": T0 + 9_999}])
    assert out["accepted"] == 1
    assert len(engine.recommend("new", k=3).items) == 3
    engine.close()


def test_workers_follow_each_other_through_the_store(tmp_path):
    """`tansuo serve --workers 2`: whichever worker answers, it reflects events, erasures,
    new items and model swaps that the other one acknowledged — on its very next request."""
    _data(tmp_path)
    home = tmp_path / "home"
    run(home, "import", "items", str(tmp_path / "items.csv"))
    run(home, "import", "events", str(tmp_path / "events.csv"))
    run(home, "train", "--model", "pop", "--evaluate")
    store_keys = KeyStore(home)
    h = {s: {"Authorization": f"Bearer {store_keys.create([s])[0]}"}
         for s in ("read", "ingest", "admin")}
    with serve_subprocess(home, "--workers", "2",
                          env={"TANSUO_RATE_LIMIT_PER_MINUTE": "0"}) as (_, url):

        def each_worker(method: str, path: str, **kw) -> dict[str, httpx.Response]:
            """One answer from every worker (a fresh connection per request)."""
            seen: dict[str, httpx.Response] = {}
            for _ in range(400):
                r = httpx.request(method, url + path, timeout=10, **kw)
                seen.setdefault(r.headers["x-tansuo-worker"], r)
                if len(seen) == 2:
                    return seen
            raise AssertionError(f"only workers {sorted(seen)} answered {path}")

        each_worker("GET", "/v1/health")  # both loaded
        batch = [{"user_id": "newbie", "item_id": f"A{j}", "type": "purchase",
                  "timestamp": T0 + 90_000 + j} for j in range(3)]
        assert httpx.post(f"{url}/v1/events", json=batch,
                          headers=h["ingest"]).json()["accepted"] == 3
        for r in each_worker("GET", "/v1/users/newbie/interests", headers=h["read"]).values():
            assert r.status_code == 200 and r.json()["stats"]["events"] == 3

        put = httpx.put(f"{url}/v1/items", headers=h["ingest"], json=[
            {"item_id": "Z1", "title": "wireless headphones pro", "category": CATS["A"]}])
        assert put.json()["accepted"] == 1
        for r in each_worker("GET", "/v1/items/Z1/similar", headers=h["read"]).values():
            assert r.status_code == 200 and r.json()["items"][0]["item_id"].startswith("A")

        run(home, "train", "--model", "itemknn", "--evaluate")
        swapped = httpx.post(f"{url}/v1/admin/reload", json={"force": True}, headers=h["admin"])
        assert swapped.json()["swapped"], swapped.text
        version = swapped.json()["model_version"]
        for r in each_worker("GET", "/v1/health").values():
            assert r.json()["model_version"] == version

        assert httpx.delete(f"{url}/v1/users/newbie", headers=h["admin"]).status_code == 200
        for r in each_worker("GET", "/v1/users/newbie/interests", headers=h["read"]).values():
            assert r.status_code == 404

        metrics = httpx.get(f"{url}/metrics").text
        assert "tansuo_events_ingested_total 3.0" in metrics  # summed over the workers


def test_a_retention_purge_leaves_running_profiles_and_keeps_the_model(tmp_path):
    from tansuo.data.store import open_store
    from tansuo.privacy.retention import apply_retention

    _data(tmp_path)
    home = tmp_path / "home"
    run(home, "import", "items", str(tmp_path / "items.csv"))
    run(home, "import", "events", str(tmp_path / "events.csv"))
    run(home, "train", "--model", "pop")
    engine = Engine(Settings(home=home))
    version = engine.model_version
    assert {"u0", "u9", "u10"} <= set(engine.history) and engine.tracker is not None
    assert engine.interests("u0")["interests"]
    # another process (the CLI, a cron job) purges everything before u10's first event
    settings = Settings(home=home)
    other = open_store(settings.resolved_database_url)
    try:
        report = apply_retention(other, home, 30, now_ms=(T0 + 10 * 3600) * 1000 + 30 * 86_400_000)
    finally:
        other.close()
    assert report.events == 10 * 12
    engine.sync()  # what every request does first
    assert not {f"u{u}" for u in range(10)} & set(engine.history)
    assert not {f"u{u}" for u in range(10)} & set(engine.tracker.users)
    with pytest.raises(ServiceError, match="unknown user 'u0'"):
        engine.interests("u0")
    assert len(engine.history["u10"]) == 12 and engine.model_version == version
    assert len(engine.recommend("u10", k=3).items) == 3
    engine.close()


def test_plain_requests_take_the_fast_path_and_get_the_fastapi_routes_answers(service,
                                                                                monkeypatch):
    """The fast path (tansuo.service.fast_path) passes the engine what the FastAPI route
    would, and everything else still gets the FastAPI route's answers: a repeated unknown
    parameter (``zz``, ignored by FastAPI) sends the same request down the FastAPI route."""
    from fastapi.testclient import TestClient

    from tansuo.service.engine import Recommendation

    calls: list[tuple] = []

    def recommend(*args):
        calls.append(args)
        return Recommendation("r", None, "greedy", 0.0, [])

    monkeypatch.setattr(service["engine"], "recommend", recommend)
    app = create_app(service["engine"])
    route = app.router.routes[0]
    client = TestClient(app)
    h = _h(service, "read")
    path = "/v1/users/u%201/recommendations"
    for query in ["", "k=7", "k=200&explore=0.25&exclude_seen=false&strategy=greedy",
                  "context=search%3Ared+shoes&category=Home+%3E+Baking&exclude=B0,B1",
                  "explore=1.0&utm=x"]:
        scope = {"type": "http", "method": "GET", "path": "/v1/users/u 1/recommendations",
                 "root_path": "", "query_string": query.encode(), "headers": []}
        assert route.matches(scope)[0].name == "FULL", query  # the fast path takes it
        calls.clear()
        fast = client.get(f"{path}?{query}", headers=h)
        slow = client.get(f"{path}?{query}&zz=1&zz=1", headers=h)
        assert fast.status_code == slow.status_code == 200, (query, fast.text, slow.text)
        assert len(calls) == 2 and calls[0] == calls[1], (query, calls)
        assert calls[0][0] == "u 1"
    # the answers to requests the fast path leaves alone are the FastAPI route's
    for query in ["k=0", "k=201", "explore=1.5", "strategy=bogus", "exclude_seen=maybe"]:
        r = client.get(f"{path}?{query}", headers=h)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][0] == "query", query
    assert client.get(f"{path}?k=010", headers=h).status_code == 200  # read by FastAPI
    assert client.head(path, headers=h).status_code == 405
    # auth errors come from the same check either way, with the same bodies
    for headers in [{}, {"Authorization": "Bearer tsk_dead_beef"},
                    _h(service, "ingest")]:
        fast, slow = (client.get(f"{path}{q}", headers=headers) for q in ("", "?zz=1&zz=1"))
        assert fast.status_code == slow.status_code and fast.status_code in (401, 403)
        assert fast.json() == slow.json() and fast.headers.get("www-authenticate") == \
            slow.headers.get("www-authenticate")
    # an engine error (here: a context item not in the catalogue) keeps its body
    monkeypatch.undo()
    fast = client.get(f"{path}?context=item:nope", headers=h)
    slow = client.get(f"{path}?context=item:nope&zz=1&zz=1", headers=h)
    assert fast.status_code == slow.status_code == 404 and fast.json() == slow.json()
    # fast-path requests are measured under the route's template like the others
    metrics = client.get("/metrics").text
    assert 'handler="/v1/users/{user_id}/recommendations"' in metrics


def test_a_batchs_quarantine_source_is_its_digest_keyed_under_pseudonymisation():
    from tansuo.privacy.pseudonym import Pseudonymizer
    from tansuo.service.engine import _batch_source

    batch = [{"user_id": "alice", "item_id": "R1", "type": "view", "timestamp": T0}]
    other = [{**batch[0], "user_id": "bob"}]
    assert _batch_source(batch) == _batch_source([dict(reversed(batch[0].items()))])
    assert _batch_source(batch) != _batch_source(other)
    assert _batch_source(batch).startswith("http:") and len(_batch_source(batch)) == 21
    keyed = Pseudonymizer(["k" * 32])
    assert _batch_source(batch, keyed) == _batch_source(batch, keyed)
    assert _batch_source(batch, keyed) not in (_batch_source(batch),
                                               _batch_source(batch, Pseudonymizer(["j" * 32])))
    # values orjson cannot write still get a source
    assert _batch_source([{"user_id": 10**30, "x": object()}]).startswith("http:")
