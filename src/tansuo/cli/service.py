"""`tansuo serve` and `tansuo keys create | revoke | list` (registered on the main app)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tansuo.cli.main import _emit_json, _fail, _JsonOpt, _state, app, err, out

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
) -> None:
    """Start the HTTP service (FastAPI on uvicorn) on the store and the latest model."""
    import gc

    import uvicorn

    from tansuo.exploration.policy import PolicyConfig
    from tansuo.service.app import create_app
    from tansuo.service.engine import Engine

    state = _state(ctx)
    try:
        policy = PolicyConfig(**{k: v for k, v in (("explore", explore),
                                                   ("strategy", strategy)) if v is not None})
    except ValueError as exc:
        _fail(f"invalid option: {exc}", 2)
    err.print(f"loading the store and the latest model from {state.settings.home} ...")
    engine = Engine(state.settings, policy, progress=True)
    # The loaded state is hundreds of thousands of long-lived objects; a full garbage
    # collection over them takes ~150 ms, a latency spike for whichever request triggers it.
    # Freezing them leaves the collector only what requests and new events allocate.
    gc.collect()
    gc.freeze()
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
