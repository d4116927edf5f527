"""The ``tansuo`` command line: a thin shell over the public Python functions.

Every command that reports takes ``--json`` and then prints exactly one JSON document on stdout;
progress bars and logs go to stderr.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from tansuo.config import CleaningConfig, Settings
from tansuo.data.bundled import DATASETS, dataset_info, load_dataset
from tansuo.data.importer import ImportOptions, ImportReport, import_events, import_items
from tansuo.data.stats import store_stats
from tansuo.data.store import EventStore, open_store
from tansuo.errors import TansuoError, UnreadableSourceError

app = typer.Typer(
    name="tansuo",
    help="Tansuo (探索): learn, follow and explore shoppers' interests.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
import_app = typer.Typer(help="Import behaviour events or catalogue items from a file.",
                         no_args_is_help=True)
datasets_app = typer.Typer(help="Bundled datasets: list, describe, load into the store.",
                           no_args_is_help=True)
text_app = typer.Typer(help="Item and query text in one vector space (packaged MiniLM).",
                       no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(datasets_app, name="datasets")
app.add_typer(text_app, name="text")

err = Console(stderr=True)
out = Console()


@dataclass
class _State:
    settings: Settings

    def store(self) -> EventStore:
        self.settings.home.mkdir(parents=True, exist_ok=True)
        return open_store(self.settings.resolved_database_url)


def _state(ctx: typer.Context) -> _State:
    state = ctx.find_root().obj
    if not isinstance(state, _State):  # main() sets it; typer always runs the callback first
        raise RuntimeError("tansuo CLI state missing: commands must run under the tansuo app")
    return state


@app.callback()
def main(
    ctx: typer.Context,
    home: Annotated[Path | None, typer.Option(
        "--home", help="Data directory (default: $TANSUO_HOME or ./tansuo-data).")] = None,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="Event store URL (default: $TANSUO_DATABASE_URL or SQLite "
                               "in the data directory).")] = None,
) -> None:
    overrides: dict[str, Any] = {}
    if home is not None:
        overrides["home"] = home
    if database_url is not None:
        overrides["database_url"] = database_url
    try:
        ctx.obj = _State(Settings(**overrides))
    except ValueError as exc:
        _fail(f"invalid settings: {exc}", 2)


def _privacy_policy(settings: Settings) -> Any:
    """The settings' pseudonymisation and minimisation for an import (errors exit 2)."""
    from tansuo.privacy.policy import PrivacyPolicy

    try:
        return PrivacyPolicy.from_settings(settings)
    except TansuoError as exc:
        _fail(str(exc), 2)


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for v in values or []:
        key, sep, val = v.partition("=")
        if not sep or not key.strip() or not val.strip():
            _fail(f"{option} {v!r}: expected FIELD=VALUE, e.g. {option} user_id=customer", 2)
        pairs[key.strip()] = val.strip()
    return pairs


def _print_report(report: ImportReport) -> None:
    table = Table(title=f"import {report.kind} from {report.source} ({report.format})",
                  show_header=True)
    table.add_column("outcome")
    table.add_column("rows", justify="right")
    table.add_row("read", f"{report.rows_read:,}")
    table.add_row("[green]accepted (new)[/]", f"{report.accepted:,}")
    table.add_row("duplicates (already stored)", f"{report.duplicates:,}")
    for reason, n in sorted(report.rejected_by_reason.items()):
        table.add_row(f"[red]rejected: {reason}[/]", f"{n:,}")
    if report.flagged_unknown_items:
        table.add_row("flagged: unknown item", f"{report.flagged_unknown_items:,}")
    table.caption = f"{report.seconds:.2f} s, {report.rows_per_second:,.0f} rows/s"
    out.print(table)
    if report.bot_users:
        shown = ", ".join(report.bot_users[:5]) + (" …" if len(report.bot_users) > 5 else "")
        out.print(f"bot-like users quarantined: {len(report.bot_users)} ({shown})")
    if report.first_rejected:
        rej = Table(title="first rejected rows (all are kept in the quarantine table)")
        rej.add_column("line", justify="right")
        rej.add_column("reason")
        rej.add_column("detail", overflow="fold")
        for r in report.first_rejected[:10]:
            rej.add_row(str(r["line"]), r["reason"], r["detail"])
        out.print(rej)


def _import(ctx: typer.Context, kind: str, path: Path, fmt: str, maps: list[str] | None,
            type_maps: list[str] | None, timestamp_unit: str | None, timezone: str,
            delimiter: str | None, no_header: bool, columns: str | None, unknown_items: str,
            bot_limit: int, max_future: float, as_json: bool, report_path: Path | None) -> None:
    state = _state(ctx)
    try:
        cleaning = CleaningConfig(unknown_items=unknown_items,  # type: ignore[arg-type]
                                  bot_max_events_per_minute=bot_limit,
                                  max_future_seconds=max_future)
    except ValueError as exc:
        _fail(f"invalid cleaning option: {exc}", 2)
    opts = ImportOptions(
        format=fmt, column_map=_pairs(maps, "--map"), type_map=_pairs(type_maps, "--type-map"),
        timestamp_unit=timestamp_unit, timezone=timezone, delimiter=delimiter,
        header=False if no_header else None,
        columns=tuple(c.strip() for c in columns.split(",")) if columns else None,
        chunk_size=state.settings.chunk_size, cleaning=cleaning,
        privacy=_privacy_policy(state.settings),
    )
    try:
        with state.store() as store:
            fn = import_events if kind == "events" else import_items
            report = fn(store, path, opts)
    except UnreadableSourceError as exc:
        _fail(f"cannot import {path}: {exc}", 2)
    except TansuoError as exc:
        _fail(str(exc), 2)
    doc = report.to_dict()
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(doc, indent=2, default=str))
    if as_json:
        _emit_json(doc)
    else:
        _print_report(report)
    if report.nothing_imported:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(report.rejected_by_reason.items()))
        _fail(f"nothing could be imported from {path}: {report.rows_read} rows read, "
              f"none accepted ({reasons or 'the file has no data rows'})", 1)


_FormatOpt = Annotated[str, typer.Option(
    "--format", "-f",
    help="auto, csv, parquet, jsonl, retailrocket, taobao, amazon or movielens.")]
_MapOpt = Annotated[list[str] | None, typer.Option(
    "--map", help="FIELD=COLUMN: read Tansuo field FIELD from source column COLUMN (repeatable).")]
_TypeMapOpt = Annotated[list[str] | None, typer.Option(
    "--type-map", help="SOURCE=TYPE: map a source event type to a Tansuo type (repeatable).")]
_UnitOpt = Annotated[str | None, typer.Option(
    "--timestamp-unit", help="Unit of numeric timestamps: s, ms or auto.")]
_TzOpt = Annotated[str, typer.Option("--timezone", help="Zone of timestamps without offset.")]
_DelimOpt = Annotated[str | None, typer.Option("--delimiter", help="CSV delimiter (sniffed).")]
_NoHeaderOpt = Annotated[bool, typer.Option("--no-header", help="The CSV has no header line.")]
_ColumnsOpt = Annotated[str | None, typer.Option(
    "--columns", help="Column names for a file without header: a,b,c.")]
_JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
_ReportOpt = Annotated[Path | None, typer.Option("--report", help="Also write the report as JSON.")]


@import_app.command("events")
def import_events_cmd(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="CSV, Parquet or JSONL file (.gz/.bz2/.xz ok).")],
    fmt: _FormatOpt = "auto",
    maps: _MapOpt = None,
    type_maps: _TypeMapOpt = None,
    timestamp_unit: _UnitOpt = None,
    timezone: _TzOpt = "UTC",
    delimiter: _DelimOpt = None,
    no_header: _NoHeaderOpt = False,
    columns: _ColumnsOpt = None,
    unknown_items: Annotated[str, typer.Option(
        "--unknown-items", help="Events on items not in the catalogue: keep, flag or drop.")
    ] = "keep",
    bot_limit: Annotated[int, typer.Option(
        "--bot-max-per-minute", help="Quarantine users with more events in one minute (0: off).")
    ] = 120,
    max_future: Annotated[float, typer.Option(
        "--max-future-seconds", help="Reject events further than this in the future.")
    ] = 86_400.0,
    as_json: _JsonOpt = False,
    report_path: _ReportOpt = None,
) -> None:
    """Import behaviour events; rejected rows go to the quarantine table with their reason."""
    _import(ctx, "events", path, fmt, maps, type_maps, timestamp_unit, timezone, delimiter,
            no_header, columns, unknown_items, bot_limit, max_future, as_json, report_path)


@import_app.command("items")
def import_items_cmd(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="CSV, Parquet or JSONL catalogue file.")],
    fmt: _FormatOpt = "auto",
    maps: _MapOpt = None,
    timezone: _TzOpt = "UTC",
    delimiter: _DelimOpt = None,
    no_header: _NoHeaderOpt = False,
    columns: _ColumnsOpt = None,
    as_json: _JsonOpt = False,
    report_path: _ReportOpt = None,
) -> None:
    """Import (insert or update) catalogue items."""
    _import(ctx, "items", path, fmt, maps, None, None, timezone, delimiter, no_header, columns,
            "keep", 0, 86_400.0, as_json, report_path)


@app.command("stats")
def stats_cmd(ctx: typer.Context, as_json: _JsonOpt = False) -> None:
    """Users, items, events by type and day, sparsity, sequence lengths."""
    with _state(ctx).store() as store:
        s = store_stats(store)
    if as_json:
        _emit_json(s.to_dict())
        return
    table = Table(title=f"Tansuo store{f' — {s.dataset}' if s.dataset else ''}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("users", f"{s.users:,}")
    table.add_row("items (catalogue / with events)", f"{s.catalogue_items:,} / "
                                                     f"{s.items_with_events:,}")
    table.add_row("events", f"{s.events:,}")
    for t, n in s.events_by_type.items():
        table.add_row(f"  {t}", f"{n:,}")
    table.add_row("first / last event", f"{s.first_event} / {s.last_event}")
    table.add_row("days with events", f"{len(s.events_by_day):,}")
    table.add_row("sparsity", f"{s.sparsity:.4%}")
    if s.sequence_length:
        sl = s.sequence_length
        table.add_row("events per user (min/median/p90/max)",
                      f"{sl['min']} / {sl['median']:g} / {sl['p90']:g} / {sl['max']}")
    for r, n in s.quarantined_by_reason.items():
        table.add_row(f"quarantined: {r}", f"{n:,}")
    out.print(table)


@app.command("quarantine")
def quarantine_cmd(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", help="Rows to show.")] = 20,
    as_json: _JsonOpt = False,
) -> None:
    """Rejected rows kept from imports, with reason and source line."""
    with _state(ctx).store() as store:
        rows = store.quarantined(limit=limit)
    if as_json:
        _emit_json(rows.to_dict(orient="records"))
        return
    table = Table(title="quarantined rows")
    for c in ("source", "line", "reason", "detail"):
        table.add_column(c, overflow="fold")
    for r in rows.itertuples():
        table.add_row(Path(str(r.source)).name, str(r.line), str(r.reason), str(r.detail))
    out.print(table)


@datasets_app.command("list")
def datasets_list(as_json: _JsonOpt = False) -> None:
    """The bundled datasets."""
    if as_json:
        _emit_json([{"name": d.name, "description": d.description} for d in DATASETS.values()])
        return
    table = Table(title="bundled datasets (no downloads)")
    table.add_column("name")
    table.add_column("description", overflow="fold")
    for d in DATASETS.values():
        table.add_row(d.name, d.description)
    out.print(table)


@datasets_app.command("info")
def datasets_info(name: str, as_json: _JsonOpt = False) -> None:
    """Where a dataset comes from, its licence and shape."""
    try:
        info = dataset_info(name)
    except TansuoError as exc:
        _fail(str(exc), 2)
    doc = {"name": info.name, "description": info.description, "source": info.source,
           "license": info.license, "shape": info.shape}
    if as_json:
        _emit_json(doc)
        return
    for k, v in doc.items():
        out.print(f"[bold]{k}[/]: {v}", highlight=False)


@datasets_app.command("load")
def datasets_load(
    ctx: typer.Context,
    name: str,
    users: Annotated[int | None, typer.Option(help="synthetic-shop: number of users.")] = None,
    items: Annotated[int | None, typer.Option(help="synthetic-shop: number of items.")] = None,
    seed: Annotated[int | None, typer.Option(help="synthetic-shop: random seed.")] = None,
    as_json: _JsonOpt = False,
) -> None:
    """Load a bundled dataset into the store of the data directory."""
    state = _state(ctx)
    synthetic = None
    if name == "synthetic-shop":
        from tansuo.data.synthetic import ShopConfig

        kwargs: dict[str, Any] = {}
        for key, value in (("users", users), ("items", items), ("seed", seed)):
            if value is not None:
                kwargs[key] = value
        synthetic = ShopConfig(**kwargs)
    try:
        with state.store() as store:
            result = load_dataset(name, store, state.settings.home, synthetic=synthetic,
                                  privacy=_privacy_policy(state.settings))
    except TansuoError as exc:
        _fail(str(exc), 2)
    if as_json:
        _emit_json(result.to_dict())
        return
    for report in result.reports:
        _print_report(report)
    for key, value in result.summary.items():
        out.print(f"{key}: {value}")
    for f in result.files:
        out.print(f"wrote {f}")


@app.command("demo")
def demo_cmd(
    ctx: typer.Context,
    serve: Annotated[bool, typer.Option(
        "--serve/--no-serve", help="Start the service at the end (Ctrl-C stops it).")] = True,
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
) -> None:
    """Load the synthetic shop, train the sequence model (one network), show one shopper's
    interests, create an API key and start the service on 127.0.0.1."""
    from tansuo.models.registry import ModelRegistry
    from tansuo.service.auth import KeyStore

    state = _state(ctx)
    home = state.settings.home
    err.print(f"[bold]Tansuo demo[/] — data directory {home.resolve()}")
    with state.store() as store:
        result = load_dataset("synthetic-shop", store, home,
                              privacy=_privacy_policy(state.settings))
    for report in result.reports:
        _print_report(report)
    stats_cmd(ctx, as_json=False)
    if ModelRegistry(home).latest() is None:
        from tansuo.models import DEMO_MODEL

        err.print(f"[bold]training the sequence model[/] (tansuo train --model {DEMO_MODEL}: "
                  "one network of the default five-network ensemble, to keep the demo short)")
        ctx.invoke(train_cmd, ctx=ctx, model=DEMO_MODEL, dataset=None, config=None,
                   no_promote=False, as_json=False)
    err.print("[bold]one shopper's interests[/] (tansuo interests U000002)")
    from tansuo.cli.interests import interests_cmd

    ctx.invoke(interests_cmd, ctx=ctx, user="U000002", dataset=None, timeline=False,
               plot=None, window="week", half_life_days=30.0, tags=None, use_model=True,
               as_json=False)
    from tansuo.service.insights import latest_evaluation_path

    if not latest_evaluation_path(home).exists():
        err.print("[bold]the baselines on the yardstick[/] (tansuo evaluate --models "
                  "pop,itemknn; the dashboard's evaluation view)")
        ctx.invoke(evaluate_cmd, ctx=ctx, models="pop,itemknn", dataset=None, protocol="loo",
                   k="10,20", tune_models=False, include_seen=False, seed=0, seeds=None,
                   json_path=None, html_path=None)
    key, record = KeyStore(home).create(["read", "ingest"], "demo")
    # plain prints: a terminal-width wrap must not break the key
    print(f"\nAPI key (read, ingest; shown once):\n{key}")
    print(f"Dashboard (opens with the key): http://127.0.0.1:{port}/#key={key}")
    print(f"try:\ncurl -H 'Authorization: Bearer {key}' "
          f"http://127.0.0.1:{port}/v1/users/U000002/recommendations")
    print(f"OpenAPI: http://127.0.0.1:{port}/docs", flush=True)
    if serve:
        from tansuo.cli.service import serve_cmd

        ctx.invoke(serve_cmd, ctx=ctx, host="127.0.0.1", port=port, explore=None,
                   strategy=None)


def run() -> None:  # pragma: no cover - console entry point alias
    app()


def _interactions(state: _State, dataset: str | None, purpose: str):  # noqa: ANN202
    """(interactions, items frame, label) of a bundled dataset or of the store."""
    from tansuo.evaluation.report import build_interactions, load_events

    try:
        if dataset is None:
            with state.store() as store:
                events, items, label = load_events(None, store, state.settings.home)
        else:
            events, items, label = load_events(dataset, None, state.settings.home)
    except (ValueError, TansuoError) as exc:
        _fail(str(exc), 2)
    if events.empty:
        _fail(f"no events to {purpose}: import some (tansuo import events) or pass --dataset", 1)
    return build_interactions(events, items), items, label


@app.command("evaluate")
def evaluate_cmd(
    ctx: typer.Context,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="movielens-small or synthetic-shop; default: the store's data.")
    ] = None,
    models: Annotated[str, typer.Option(
        "--models", help="Comma-separated: pop, recent-pop, itemknn, als, bpr, sasrec; a "
                         "model may carry settings, e.g. sasrec:item_repr=id+text:max_len=100.")
    ] = "pop,recent-pop,itemknn,als,bpr",
    protocol: Annotated[str, typer.Option(
        "--protocol", help="loo (leave-one-out by time), temporal (global time split) or "
                           "cold-items (10% of items never in training).")
    ] = "loo",
    k: Annotated[str, typer.Option("--k", help="Cut-offs, e.g. 10,20.")] = "10,20",
    tune_models: Annotated[bool, typer.Option(
        "--tune", help="Grid-search each model's hyperparameters on the validation target.")
    ] = False,
    include_seen: Annotated[bool, typer.Option(
        "--include-seen", help="Keep history items in the ranking (excluded by default).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed for models and bootstrap.")] = 0,
    seeds: Annotated[str | None, typer.Option(
        "--seeds", help="Train each model once per seed, e.g. 0,1,2, and report the mean "
                        "(CIs over users' seed-averaged metrics); overrides --seed for models.")
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON.")
                         ] = None,
    html_path: Annotated[Path | None, typer.Option("--html", help="Write an HTML report.")
                         ] = None,
    peers: Annotated[Path | None, typer.Option(
        "--peers", help="A directory of peer result files (benchmarks/peers/results: RecBole, "
                        "implicit on the same split) to show next to our models.")] = None,
) -> None:
    """Leak-free full-ranking evaluation of models, with CIs and beyond-accuracy measures."""
    from tansuo.models.allocator import keep_freed_memory

    keep_freed_memory()  # a batch job: reuse freed training buffers (see the module)
    from tansuo.evaluation.protocols import make_split
    from tansuo.evaluation.report import (
        item_features,
        item_text_matrix,
        load_peers,
        write_html,
        write_json,
    )
    from tansuo.evaluation.runner import EvalConfig, evaluate
    from tansuo.models import MODELS
    from tansuo.models.spec import model_factories
    from tansuo.service.insights import latest_evaluation_path

    state = _state(ctx)
    try:
        ks = tuple(sorted({int(x) for x in k.split(",") if x.strip()}))
        cfg = EvalConfig(ks=ks, exclude_seen=not include_seen, seed=seed)
    except ValueError as exc:
        _fail(f"--k {k!r}: expected comma-separated positive integers ({exc})", 2)
    try:
        seed_list = ([int(x) for x in seeds.split(",") if x.strip()] if seeds is not None
                     else [seed])
    except ValueError:
        _fail(f"--seeds {seeds!r}: expected comma-separated integers, e.g. 0,1,2", 2)
    if not seed_list or len(set(seed_list)) != len(seed_list):
        _fail(f"--seeds {seeds!r}: expected distinct integers, e.g. 0,1,2", 2)
    try:
        seeded = model_factories(models, MODELS)
    except ValueError as exc:
        _fail(f"--models: {exc}", 2)
    if protocol not in ("loo", "temporal", "cold-items"):
        _fail(f"--protocol {protocol!r}: expected loo, temporal or cold-items", 2)
    inter, items, label = _interactions(state, dataset, "evaluate")
    split = make_split(inter, protocol)  # type: ignore[arg-type]
    if split.test.n_users == 0:
        _fail("no user has enough history for this protocol (leave-one-out needs 3 items "
              "per user)", 1)
    category, vectors = item_features(inter, items, split.test.train)
    text = None
    if any(f(seed).wants_text() for f in seeded.values()):
        text = item_text_matrix(inter.items, items, state.settings.home,
                                state.settings.text_model)
    report = evaluate(split, seeded, cfg, label, category, vectors, do_tune=tune_models,
                      item_text=text, seeds=seed_list)
    if peers is not None:
        try:
            report.peers = load_peers(peers, label)
        except ValueError as exc:
            _fail(f"--peers {peers}: {exc}", 2)
    # the dashboard's evaluation view shows the latest report of this data directory
    write_json(report, latest_evaluation_path(state.settings.home))
    if json_path:
        write_json(report, json_path)
    if html_path:
        write_html(report, html_path)
    over = f"mean of {len(seed_list)} seeds" if len(seed_list) > 1 else "mean"
    table = Table(title=f"{label} — {protocol}, full ranking over {len(inter.items):,} items, "
                        f"{split.test.n_users:,} users ({over} ± half 95% CI)")
    table.add_column("model", overflow="fold")
    shown = [f"{m}@{x}" for x in ks for m in ("ndcg", "hr", "mrr")]
    for m in shown:
        table.add_column(m, justify="right")
    table.add_column("train s", justify="right")
    for name, r in report.models.items():
        table.add_row(name, *[f"{r.metrics[m]:.4f}\n±{(r.ci[m][1] - r.ci[m][0]) / 2:.4f}"
                              for m in shown], f"{r.train_seconds:.2f}")
    out.print(table)
    for pair, v in report.paired.items():
        out.print(f"{pair}: Δ{v['metric']} {v['mean_difference']:+.4f} "
                  f"[{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}], p={v['p_value']:.3g}")


def _catalogue_vectors(state: _State, progress: bool | None = None):  # noqa: ANN202
    from tansuo.text.encoder import EmbeddingCache, cache_path, encode_items, open_encoder

    with state.store() as store:
        items = store.items()
    if items.empty:
        _fail("the catalogue is empty: import items first (tansuo import items PATH)", 1)
    encoder = open_encoder(state.settings.text_model)
    with EmbeddingCache(cache_path(state.settings.home)) as cache:
        ids, vectors, fresh = encode_items(items, encoder, cache, progress)
    return items, ids, vectors, fresh, encoder


@text_app.command("encode")
def text_encode(ctx: typer.Context, as_json: _JsonOpt = False) -> None:
    """Encode the catalogue's text (only new or changed items; the rest comes from the cache)."""
    state = _state(ctx)
    try:
        _, ids, vectors, fresh, encoder = _catalogue_vectors(state)
    except TansuoError as exc:
        _fail(str(exc), 2)
    doc = {"model": encoder.name, "dim": int(vectors.shape[1]), "items": len(ids),
           "newly_encoded": fresh, "from_cache": len(ids) - fresh,
           "without_text": int((~vectors.any(axis=1)).sum())}
    if as_json:
        _emit_json(doc)
    else:
        out.print(f"{doc['items']:,} items encoded with {doc['model']} ({doc['dim']} dims): "
                  f"{fresh:,} new, {doc['from_cache']:,} from cache, "
                  f"{doc['without_text']:,} without text")


@text_app.command("search")
def text_search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="Free text, e.g. 'trail running shoes'.")],
    k: Annotated[int, typer.Option("--k", min=1, help="How many items.")] = 10,
    as_json: _JsonOpt = False,
) -> None:
    """Catalogue items nearest to a query in the text space (cosine similarity)."""
    from tansuo.text.encoder import encode_texts

    state = _state(ctx)
    try:
        items, ids, vectors, _, encoder = _catalogue_vectors(state, progress=False)
        q, _ = encode_texts([query], encoder, None)
    except TansuoError as exc:
        _fail(str(exc), 2)
    sims = vectors @ q[0]
    top = np.argsort(-sims, kind="stable")[:k]
    titles = items.set_index("item_id")["title"]
    rows = [{"item_id": str(ids[i]), "title": titles.get(ids[i]), "similarity":
             round(float(sims[i]), 4)} for i in top]
    if as_json:
        _emit_json(rows)
        return
    table = Table(title=f"items nearest to {query!r}")
    for c in ("item_id", "title", "similarity"):
        table.add_column(c)
    for r in rows:
        table.add_row(r["item_id"], str(r["title"]), f"{r['similarity']:.3f}")
    out.print(table)


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(
        "--model", help="Model name, optionally with settings, e.g. sasrec:item_repr=id+text "
                        "(default: the best by the yardstick).")] = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="movielens-small or synthetic-shop; default: the store's data.")
    ] = None,
    config: Annotated[str | None, typer.Option(
        "--config", help='Model settings as JSON, e.g. \'{"neighbors": 100}\'.')] = None,
    no_promote: Annotated[bool, typer.Option(
        "--no-promote", help="Save the version without making it the latest.")] = False,
    evaluate: Annotated[bool, typer.Option(
        "--evaluate", help="First measure this model with the yardstick (leave-one-out "
                           "NDCG@10, full ranking) and record it, so the service's reload can "
                           "compare it with the model in service.")] = False,
    as_json: _JsonOpt = False,
) -> None:
    """Train a model on all interactions and save it, versioned, in the data directory."""
    from tansuo.models.allocator import keep_freed_memory

    keep_freed_memory()  # a batch job: reuse freed training buffers (see the module)
    import time as _time

    from tansuo.evaluation.report import item_text_matrix
    from tansuo.models import DEFAULT_MODEL, MODELS
    from tansuo.models.base import TrainData
    from tansuo.models.registry import ModelRegistry
    from tansuo.models.spec import parse_model_spec

    state = _state(ctx)
    try:
        spec = parse_model_spec(model or DEFAULT_MODEL, MODELS)
    except ValueError as exc:
        _fail(f"--model: {exc}", 2)
    name, cls = spec.name, MODELS[spec.name]
    try:
        cfg = cls.config_class.from_dict({**spec.config(cls).to_dict(),
                                          **(json.loads(config) if config else {})})
    except (ValueError, TypeError) as exc:
        _fail(f"--config for {name}: {exc}", 2)
    inter, items, label = _interactions(state, dataset, "train on")
    started = _time.perf_counter()
    fresh = cls(cfg)
    text = (item_text_matrix(inter.items, items, state.settings.home, state.settings.text_model)
            if fresh.wants_text() else None)
    yardstick = None
    if evaluate:
        from tansuo.evaluation.runner import yardstick as measure

        yardstick = measure(cls(cfg), inter, text)
        if yardstick is None:
            _fail("--evaluate: no user has the 3 interactions leave-one-out needs", 1)
    trained = fresh.fit(TrainData(inter, item_text=text))
    seconds = _time.perf_counter() - started
    registry = ModelRegistry(state.settings.home)
    version = registry.save(trained, inter.users, inter.items,
                            {"dataset": label, "interactions": len(inter),
                             "train_seconds": round(seconds, 3),
                             **({"yardstick": yardstick} if yardstick else {})},
                            make_latest=not no_promote)
    doc = {"version": version, "model": name, "dataset": label, "users": len(inter.users),
           **({"yardstick": yardstick} if yardstick else {}),
           "items": len(inter.items), "interactions": len(inter),
           "train_seconds": round(seconds, 3), "latest": registry.latest() == version,
           "path": str(registry.root / version)}
    if as_json:
        _emit_json(doc)
    else:
        out.print(f"trained {name} on {label}: {len(inter):,} interactions of "
                  f"{len(inter.users):,} users, {len(inter.items):,} items in {seconds:.1f} s")
        out.print(f"saved as {version}{' (latest)' if doc['latest'] else ''}: {doc['path']}")


@app.command("models")
def models_cmd(ctx: typer.Context, as_json: _JsonOpt = False) -> None:
    """Trained model versions in the data directory (the latest is what the service loads)."""
    from tansuo.models.registry import ModelRegistry

    registry = ModelRegistry(_state(ctx).settings.home)
    versions, latest = registry.versions(), registry.latest()
    if as_json:
        _emit_json({"latest": latest, "versions": versions})
        return
    table = Table(title="trained models")
    for c in ("version", "model", "dataset", "interactions", "train s", ""):
        table.add_column(c)
    for v in versions:
        table.add_row(v["version"], v["model"], str(v.get("dataset")),
                      f"{v.get('interactions', 0):,}", str(v.get("train_seconds")),
                      "latest" if v["version"] == latest else "")
    out.print(table)


# Commands defined in their own modules register themselves on ``app`` when imported.
from tansuo.cli import interests as _interests  # noqa: E402,F401
from tansuo.cli import ope as _ope  # noqa: E402,F401
from tansuo.cli import ops as _ops  # noqa: E402,F401
from tansuo.cli import privacy as _privacy  # noqa: E402,F401
from tansuo.cli import service as _service  # noqa: E402,F401
from tansuo.cli import simulate as _simulate  # noqa: E402,F401
