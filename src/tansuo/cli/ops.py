"""`tansuo backup PATH` and `tansuo restore PATH` (registered on the main app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tansuo.cli.main import _emit_json, _fail, _JsonOpt, _state, app, err
from tansuo.errors import TansuoError


@app.command("backup")
def backup_cmd(ctx: typer.Context, path: Annotated[Path, typer.Argument(
        help="Backup file to write (SQLite database file, or pg_dump custom format).")],
        as_json: _JsonOpt = False) -> None:
    """An online, consistent copy of the store (SQLite backup API; pg_dump for PostgreSQL)."""
    state = _state(ctx)
    try:
        with state.store() as store:
            events = store.count_events()
            written = store.backup(path)
    except TansuoError as exc:
        _fail(str(exc), 1)
    doc = {"backup": str(written), "events": events, "bytes": written.stat().st_size}
    if as_json:
        _emit_json(doc)
    else:
        err.print(f"backed up {events:,} events to {written} ({doc['bytes']:,} bytes)")


@app.command("restore")
def restore_cmd(ctx: typer.Context, path: Annotated[Path, typer.Argument(
        help="A file written by `tansuo backup`.")],
        yes: Annotated[bool, typer.Option("--yes", help="Replace the store's content "
                                                        "without asking.")] = False,
        as_json: _JsonOpt = False) -> None:
    """Replace the store's content with a backup (stop the service first)."""
    state = _state(ctx)
    if not path.exists():
        _fail(f"no backup at {path}", 2)
    if not yes and not typer.confirm(f"replace the store at {state.settings.home} with {path}?"):
        _fail("nothing restored", 1)
    try:
        with state.store() as store:
            store.restore(path)
            events = store.count_events()
    except TansuoError as exc:
        _fail(str(exc), 1)
    if as_json:
        _emit_json({"restored": str(path), "events": events})
    else:
        err.print(f"restored {events:,} events from {path}")
