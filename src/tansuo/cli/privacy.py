"""`tansuo erase`, `tansuo retention apply` and `tansuo audit` (registered on the main app)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from tansuo.cli.main import _emit_json, _fail, _JsonOpt, _privacy_policy, _state, app, err, out
from tansuo.errors import TansuoError

retention_app = typer.Typer(help="Purge events, served slates and quarantined rows older than "
                                 "the retention period.", no_args_is_help=True)
app.add_typer(retention_app, name="retention")

_PLACES = {"events": "events", "quarantine_rows": "quarantined rows",
           "import_report_rows": "rows quoted in import reports",
           "served_slates": "served slates (log lines)",
           "dataset_rows": "rows in bundled dataset files"}


@app.command("erase")
def erase_cmd(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="The user id (as sent to Tansuo; pseudonymised "
                                             "here when pseudonymisation is on).")],
    retrain: Annotated[bool, typer.Option(
        "--retrain", help="Then retrain the latest model without the user and make it the "
                          "latest (same model, settings and seed).")] = False,
    as_json: _JsonOpt = False,
) -> None:
    """Erase one user everywhere (events, quarantine, served-slate log, …) and write a receipt."""
    from tansuo.privacy.erasure import attach_retrain, erase_user, retrain_latest

    state = _state(ctx)
    home = state.settings.home
    stored = _privacy_policy(state.settings).lookup(user)
    try:
        with state.store() as store:
            receipt = erase_user(store, home, stored, actor="cli")
    except TansuoError as exc:
        _fail(str(exc), 1)
    note = failure = None
    if retrain:
        from tansuo.models.registry import ModelRegistry

        if ModelRegistry(home).latest() is None:
            note = "no trained model to retrain: no model trained on the user is kept"
        else:
            try:
                version = retrain_latest(home, state.settings, actor="cli",
                                         reason=f"erasure {receipt.receipt_id}")
            except TansuoError as exc:
                failure = f"the user is erased, but retraining failed: {exc}"
            else:
                receipt = attach_retrain(receipt, version)
    doc = receipt.to_dict()
    if as_json:
        _emit_json(doc)
    else:
        _print_receipt(doc)
    if note is not None:
        err.print(f"note: {note}", highlight=False)
    if failure is not None:
        _fail(failure, 1)


def _print_receipt(doc: dict[str, Any]) -> None:
    again = " (already erased before)" if doc["already_erased"] else ""
    table = Table(title=f"erased user {doc['user_id']}{again}")
    table.add_column("place")
    table.add_column("removed", justify="right")
    table.add_column("left", justify="right")
    for key, label in _PLACES.items():
        table.add_row(label, f"{doc['removed'].get(key, 0):,}", f"{doc['remaining'].get(key, 0):,}")
    table.caption = "verified: nothing left" if doc["verified"] else "[red]NOT verified[/]"
    out.print(table)
    out.print(f"receipt: {doc['path']}", highlight=False)
    predating = doc["models_predating"]
    if predating:
        out.print(f"{len(predating)} model version(s) were trained before the erasure and still "
                  f"carry the user's influence: {', '.join(predating)}", highlight=False)
    if doc["retrained"]:
        out.print(f"retrained without the user: {doc['retrained']} (latest; reload the service "
                  "to serve it)", highlight=False)
    elif predating:
        out.print("retrain (tansuo erase USER --retrain, or tansuo train) and delete the old "
                  "versions to remove that influence", highlight=False)


@retention_app.command("apply")
def retention_apply_cmd(
    ctx: typer.Context,
    days: Annotated[float | None, typer.Option(
        "--days", help="Keep this many days (default: TANSUO_RETENTION_DAYS).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Count what would be purged; change nothing.")] = False,
    as_json: _JsonOpt = False,
) -> None:
    """Purge events, served slates and quarantined rows older than the retention period."""
    from tansuo.privacy.retention import apply_retention

    state = _state(ctx)
    if days is None:
        days = state.settings.retention_days
    if days is None:
        _fail("no retention period: pass --days N or set TANSUO_RETENTION_DAYS", 2)
    if not days > 0:
        _fail(f"--days must be a positive number of days, got {days:g}", 2)
    try:
        with state.store() as store:
            report = apply_retention(store, state.settings.home, float(days), dry_run=dry_run)
    except TansuoError as exc:
        _fail(str(exc), 1)
    if as_json:
        _emit_json(report.to_dict())
        return
    verb = "would purge" if dry_run else "purged"
    table = Table(title=f"retention {days:g} days: {verb} everything before {report.cutoff}")
    table.add_column("place")
    table.add_column(verb, justify="right")
    table.add_row("events", f"{report.events:,}")
    table.add_row("served slates (log lines)", f"{report.served_slates:,}")
    table.add_row("quarantined rows", f"{report.quarantine_rows:,}")
    table.add_row("rows quoted in import reports", f"{report.import_report_rows:,}")
    out.print(table)
    out.print(f"note: {report.note}", highlight=False)


@app.command("audit")
def audit_cmd(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=0,
                                       help="The most recent N entries (0: all).")] = 50,
    action: Annotated[str | None, typer.Option(
        "--action", help="Only this action, e.g. erase, retention, key (every key.*).")] = None,
    as_json: _JsonOpt = False,
) -> None:
    """The audit log of administrative actions (erasures, retention, keys, reloads …)."""
    from tansuo.privacy.audit import AuditLog

    entries = AuditLog(_state(ctx).settings.home).entries(limit=limit or None, action=action)
    if as_json:
        _emit_json(entries)
        return
    if not entries:
        err.print("no audit entries" + (f" for action {action!r}" if action else ""))
        return
    table = Table(title="audit log")
    for c in ("at", "action", "actor", "target"):
        table.add_column(c, no_wrap=c == "at")
    table.add_column("details", overflow="fold")
    for e in entries:
        table.add_row(str(e.get("at")), str(e.get("action")), str(e.get("actor")),
                      str(e.get("target") or ""), json.dumps(e.get("details") or {},
                                                             separators=(",", ":")))
    out.print(table)
