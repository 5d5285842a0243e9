"""``recsys features ...``: apply, build, materialize, inspect and retire feature versions."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.table import Table

from feature_store.config import FeatureStoreSettings
from feature_store.versions import FeatureStoreError, VersionCatalog

app = typer.Typer(no_args_is_help=True)
console = Console()


def _fail(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(code=2)


@app.command()
def apply() -> None:
    """Register every active feature version with Feast (one Feast view per version)."""
    from feature_store import feast_ops

    settings = FeatureStoreSettings()
    with console.status("feast apply ..."):
        result = feast_ops.apply(settings)
    console.print(f"applied {len(result['applied'])} views; removed {result['removed'] or 'none'}")


@app.command("build-lte")
def build_lte(
    dataset: str = typer.Option("synthetic", help="a prepared dataset (see `recsys data list`)"),
    variant: str = typer.Option("avg", help="avg (uniform average) or ae (asymmetric autoencoder)"),
    basis: str = typer.Option("auto", help="text | attributes | auto (text when items have text)"),
    as_of: str = typer.Option("", help="as-of time (ISO); default: the dataset's last timestamp"),
    lag_days: float = typer.Option(7.0, help="only interactions older than as_of - lag"),
    window_days: float = typer.Option(365.0, help="... and within this window before that"),
    every_days: float = typer.Option(7.0, help="snapshot spacing for point-in-time training data"),
    snapshots: int = typer.Option(0, help="max snapshots (0: cover the whole history)"),
) -> None:
    """Compute an LTE version (both variants live in the dataset's fixed semantic basis)."""
    from feature_store import build as pipelines_run

    try:
        spec = pipelines_run.build_lte(
            FeatureStoreSettings(),
            dataset=dataset,
            variant=variant,
            basis_kind=basis,
            as_of=as_of or None,
            lag_days=lag_days,
            window_days=window_days,
            every_days=every_days,
            max_snapshots=snapshots or None,
        )
    except (FeatureStoreError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    console.print(f"registered [bold]{spec.ref}[/bold]: {spec.rows} rows, basis {spec.basis_fingerprint[:12]}")


@app.command("build-recent")
def build_recent(
    dataset: str = typer.Option("synthetic"),
    as_of: str = typer.Option(""),
    every_days: float = typer.Option(7.0),
    max_len: int = typer.Option(50),
) -> None:
    """Compute a version of each user's recent items."""
    from feature_store import build as pipelines_run

    try:
        spec = pipelines_run.build_recent(
            FeatureStoreSettings(), dataset=dataset, as_of=as_of or None, every_days=every_days, max_len=max_len
        )
    except (FeatureStoreError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    console.print(f"registered [bold]{spec.ref}[/bold]: {spec.rows} rows")


@app.command("build-purchases")
def build_purchases(
    dataset: str = typer.Option("synthetic"),
    as_of: str = typer.Option(""),
    every_days: float = typer.Option(7.0),
) -> None:
    """Compute a version of each user's purchase-day history (next-basket models)."""
    from feature_store import build as pipelines_run

    try:
        spec = pipelines_run.build_purchase_history(
            FeatureStoreSettings(), dataset=dataset, as_of=as_of or None, every_days=every_days
        )
    except (FeatureStoreError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    console.print(f"registered [bold]{spec.ref}[/bold]: {spec.rows} rows")


@app.command("build-profile")
def build_profile(dataset: str = typer.Option("synthetic"), as_of: str = typer.Option("")) -> None:
    """Compute a version of user profiles (top topic, activity band) for rankers."""
    from feature_store.pipelines.profile import build_user_profile

    try:
        spec = build_user_profile(FeatureStoreSettings(), dataset=dataset, as_of=as_of or None)
    except (FeatureStoreError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    console.print(f"registered [bold]{spec.ref}[/bold]: {spec.rows} rows")


@app.command("build-items")
def build_items(dataset: str = typer.Option("synthetic"), as_of: str = typer.Option("")) -> None:
    """Compute a version of item features (creator, popularity, content vector)."""
    from feature_store import build as pipelines_run

    try:
        spec = pipelines_run.build_items(FeatureStoreSettings(), dataset=dataset, as_of=as_of or None)
    except (FeatureStoreError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    console.print(f"registered [bold]{spec.ref}[/bold]: {spec.rows} rows")


@app.command()
def materialize(
    refs: list[str] = typer.Argument(None, help="versions like lte_avg@v2; default: all offline ones"),
) -> None:
    """Load versions into the online store, newest snapshot per entity; other versions keep serving."""
    from rich.progress import Progress

    from feature_store import feast_ops

    settings = FeatureStoreSettings()
    catalog = VersionCatalog(settings.catalog_dir)
    if not refs:
        refs = [v.ref for v in catalog.active_versions() if catalog.status(v.view, v.version).state != "online"]
    if not refs:
        console.print("nothing to materialize: every active version is online")
        return
    store = feast_ops.get_store(settings)
    feast_ops.apply(settings, store)
    with Progress(console=console) as progress:
        task = progress.add_task("materializing", total=len(refs))
        for ref in refs:
            progress.update(task, description=f"materializing {ref}")
            try:
                status = feast_ops.materialize(settings, ref, store)
            except FeatureStoreError as exc:
                _fail(exc)
            progress.console.print(f"{ref}: {status.note}")
            progress.advance(task)


@app.command()
def versions(as_json: bool = typer.Option(False, "--json")) -> None:
    """List every version with its schema hash, basis, window and online state."""
    settings = FeatureStoreSettings()
    catalog = VersionCatalog(settings.catalog_dir)
    rows = [(v, catalog.status(v.view, v.version)) for v in catalog.all_versions()]
    if as_json:
        typer.echo(json.dumps([{**v.model_dump(mode="json"), "status": s.model_dump(mode="json")} for v, s in rows]))
        return
    table = Table("ref", "entity", "rows", "schema", "basis", "as of", "lag/window (d)", "state")
    for v, s in rows:
        w = v.window
        lw = f"{w.lag_seconds / 86400:g}/{(w.window_seconds or 0) / 86400:g}" if w.window_seconds else "-"
        table.add_row(
            v.ref,
            v.entity,
            str(v.rows),
            v.schema_hash[7:15],
            (v.basis_fingerprint or "-")[:12],
            w.as_of.strftime("%Y-%m-%d"),
            lw,
            s.state,
        )
    console.print(table)


@app.command()
def status() -> None:
    """Store configuration and online freshness per version."""
    settings = FeatureStoreSettings()
    catalog = VersionCatalog(settings.catalog_dir)
    console.print(f"data dir: {settings.data_dir}")
    console.print(f"online store: {settings.online_store} ({settings.redis_url or settings.sqlite_path})")
    now = datetime.now(UTC)
    for v in catalog.all_versions():
        s = catalog.status(v.view, v.version)
        age = f"{(now - s.materialized_at).total_seconds() / 3600:.1f} h ago" if s.materialized_at else "never"
        console.print(f"  {v.ref:24s} {s.state:13s} online rows {s.online_rows or 0:>7}  materialized {age}")


@app.command()
def retire(ref: str) -> None:
    """Delete a version's online and offline data; refused while a model version pins it."""
    from feature_store import feast_ops
    from feature_store.retention import NoPins

    pins = NoPins()
    try:
        from models.registry.pins import registry_pins  # filled in by the model registry

        pins = registry_pins()  # type: ignore[assignment]
    except ImportError:
        pass
    try:
        feast_ops.retire(FeatureStoreSettings(), ref, pins)
    except FeatureStoreError as exc:
        _fail(exc)
    console.print(f"retired {ref}")
