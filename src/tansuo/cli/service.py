"""`tansuo serve` and `tansuo keys create | revoke | list` (registered on the main app)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from tansuo.cli.main import _emit_json, _fail, _JsonOpt, _privacy_policy, _state, app, err, out
from tansuo.errors import TansuoError

keys_app = typer.Typer(help="API keys of the service (scopes: ingest, read, admin).",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@app.command("serve")
def serve_cmd(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    explore: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="Default exploration (0 = pure exploitation).")] = None,
    strategy: Annotated[str | None, typer.Option(
        help="Default policy: greedy, epsilon, interest-ts, interest-ucb or item-ts.")] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Worker processes (default TANSUO_WORKERS, 1). Each holds the state and "
                    "follows the store: every worker sees every acknowledged event.")] = None,
) -> None:
    """Start the HTTP service (FastAPI on uvicorn) on the store and the latest model."""
    import json
    import os
    import shutil

    import uvicorn

    from tansuo.exploration.policy import PolicyConfig
    from tansuo.service.app import create_app, quiet_collector
    from tansuo.service.engine import Engine

    state = _state(ctx)
    try:
        policy = PolicyConfig(**{k: v for k, v in (("explore", explore),
                                                   ("strategy", strategy)) if v is not None})
    except ValueError as exc:
        _fail(f"invalid option: {exc}", 2)
    privacy = _privacy_policy(state.settings)
    if state.settings.mode == "production" and privacy.pseudonymizer is None:
        _fail("production mode needs a pseudonymisation key: set TANSUO_PSEUDONYM_KEY or "
              "TANSUO_PSEUDONYM_KEY_FILE (user ids are never stored raw in production)", 2)
    n = workers or state.settings.workers
    if n > 1:
        # uvicorn starts n processes that each import the app factory: hand them the
        # settings through the environment, and let Prometheus add up their metrics
        os.environ["TANSUO_HOME"] = str(state.settings.home)
        os.environ["TANSUO_WORKERS"] = str(n)
        if state.settings.database_url:
            os.environ["TANSUO_DATABASE_URL"] = state.settings.database_url
        os.environ["TANSUO_SERVE_POLICY"] = json.dumps(
            {k: v for k, v in (("explore", explore), ("strategy", strategy)) if v is not None})
        prom = state.settings.home / "run" / "prometheus"
        shutil.rmtree(prom, ignore_errors=True)
        prom.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(prom)
        err.print(f"starting {n} workers on http://{host}:{port} (each loads the store and the "
                  "latest model; OpenAPI at /docs)")
        uvicorn.run("tansuo.service.app:app_from_env", factory=True, workers=n, host=host,
                    port=port, log_level="info", access_log=False)
        return
    err.print(f"loading the store and the latest model from {state.settings.home} ...")
    try:
        engine = Engine(state.settings, policy, progress=True)
    except TansuoError as exc:
        _fail(str(exc), 2)
    quiet_collector()
    health = engine.health()
    err.print(f"serving {health['items']:,} items, {health['users']:,} users, model "
              f"{health['model_version'] or '(none: interest-space scores)'} on "
              f"http://{host}:{port} (OpenAPI at /docs)")
    uvicorn.run(create_app(engine), host=host, port=port, log_level="info",
                access_log=False)  # no access log: URLs carry user ids


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    scope: Annotated[str, typer.Option(
        "--scope", help="Comma-separated scopes: ingest, read, admin.")] = "read",
    name: Annotated[str, typer.Option("--name", help="A label for the key.")] = "",
    as_json: _JsonOpt = False,
) -> None:
    """Create a key; it is printed once and only its hash is stored."""
    from tansuo.service.auth import KeyStore

    try:
        key, record = KeyStore(_state(ctx).settings.home).create(
            [s.strip() for s in scope.split(",") if s.strip()], name)
    except ValueError as exc:
        _fail(f"--scope: {exc}", 2)
    _audit(_state(ctx).settings.home, "key.create", record.key_id,
           {"scopes": list(record.scopes), "name": name})
    if as_json:
        _emit_json({"key": key, **record.public()})
        return
    out.print(f"key {record.key_id} ({', '.join(record.scopes)}) — shown once, store it now:")
    out.print(key, highlight=False, soft_wrap=True)


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument(
        help="The key id (the part after tsk_).")]) -> None:
    """Revoke a key: requests with it are refused from now on."""
    from tansuo.service.auth import KeyStore

    try:
        record = KeyStore(_state(ctx).settings.home).revoke(key_id)
    except KeyError:
        _fail(f"no key {key_id!r}; see `tansuo keys list`", 1)
    _audit(_state(ctx).settings.home, "key.revoke", record.key_id, {})
    out.print(f"revoked key {record.key_id} at {record.revoked_at}")


@keys_app.command("list")
def keys_list(ctx: typer.Context, as_json: _JsonOpt = False) -> None:
    """Keys with their scopes and state (never the secrets)."""
    from tansuo.service.auth import KeyStore

    records = [r.public() for r in KeyStore(_state(ctx).settings.home).list()]
    if as_json:
        _emit_json(records)
        return
    table = Table(title="API keys")
    for c in ("key_id", "name", "scopes", "created_at", "revoked_at"):
        table.add_column(c)
    for r in records:
        table.add_row(str(r["key_id"]), str(r["name"]), ", ".join(r["scopes"]),  # type: ignore
                      str(r["created_at"]), str(r["revoked_at"] or ""))
    out.print(table)


@keys_app.command("rotate-pseudonym")
def keys_rotate_pseudonym(
    ctx: typer.Context,
    new_key: Annotated[str | None, typer.Option(
        "--new-key", help="The key to add (default: a fresh random 256-bit key).")] = None,
    as_json: _JsonOpt = False,
) -> None:
    """Rotate the pseudonymisation key: every stored user id is re-keyed in place (no
    re-import); prints the new key ring once — put it in TANSUO_PSEUDONYM_KEY (or the key
    file) and restart the service. On a store of raw ids, pseudonymises them."""
    from tansuo.privacy.pseudonym import new_key as fresh_key
    from tansuo.privacy.rotation import rotate_pseudonyms

    state = _state(ctx)
    policy = _privacy_policy(state.settings)
    try:
        with state.store() as store:
            ring, report = rotate_pseudonyms(store, state.settings.home, policy.pseudonymizer,
                                             new_key or fresh_key())
    except TansuoError as exc:
        _fail(str(exc), 1)
    _audit(state.settings.home, "pseudonym.rotate", ring.key_id, report.to_dict())
    if as_json:
        _emit_json({**report.to_dict(), "ring": ring.ring_text()})
        return
    out.print(f"re-keyed {report.users:,} users ({report.events:,} events, "
              f"{report.quarantine_rows:,} quarantined rows, {report.served_slates:,} served "
              f"slates, {report.models} models, {report.files} files): key id "
              f"{report.previous_key_id or '(raw ids)'} → {report.key_id}")
    # plain print: the ring must not be wrapped; it is shown once and stored nowhere
    print(f"TANSUO_PSEUDONYM_KEY={ring.ring_text()}")


def _audit(home: Any, action: str, target: str | None, details: dict[str, Any]) -> None:
    """Record an admin action in the audit log."""
    from tansuo.privacy.audit import AuditLog

    AuditLog(home).record(action, actor="cli", target=target, details=details)
