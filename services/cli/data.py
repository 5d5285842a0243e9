"""``recsys data ...``: list and prepare datasets in the canonical format."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from feature_store.config import FeatureStoreSettings

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.command("list")
def list_() -> None:
    """Datasets that can be prepared, and the ones already prepared."""
    from feature_store.sources.adapters import list_datasets
    from feature_store.sources.prepared import manifest, prepared_names

    settings = FeatureStoreSettings()
    console.print(f"datasets root: {settings.datasets_root} (RECSYS_DATASETS_ROOT)")
    console.print("available: synthetic, " + ", ".join(list_datasets()))
    table = Table("prepared", "users", "items", "interactions", "time", "data id")
    for name in prepared_names(settings):
        m = manifest(settings, name)
        table.add_row(
            name, str(m["users"]), str(m["items"]), str(m["interactions"]), str(m["time_kind"]), str(m["data_id"])
        )
    console.print(table)


@app.command()
def prepare(
    name: str = typer.Argument(..., help="synthetic, or a dataset from `recsys data list`"),
    users: int = typer.Option(0, help="synthetic only: number of users (0: generator default)"),
    seed: int = typer.Option(0, help="synthetic only: seed"),
    skip_bad_rows: bool = typer.Option(False, help="drop malformed rows (counted) instead of stopping"),
    datasets_root: str = typer.Option("", help="where the shared datasets live (default: RECSYS_DATASETS_ROOT)"),
) -> None:
    """Load a dataset into canonical parquet under the data dir."""
    from pathlib import Path

    from feature_store.sources.prepared import load_source, prepare

    settings = FeatureStoreSettings()
    if datasets_root:
        settings = settings.model_copy(update={"datasets_root": Path(datasets_root)})
    try:
        with console.status(f"loading {name} ..."):
            ds = load_source(
                name, settings, users=users or None, seed=seed, on_bad_rows="skip" if skip_bad_rows else "error"
            )
    except (FileNotFoundError, ValueError, KeyError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from None
    m = prepare(settings, ds)
    console.print(
        f"prepared {name}: {m['users']} users, {m['items']} items, {m['interactions']} interactions ({m['data_id']})"
    )
    for report in m["skipped_rows"]:  # type: ignore[union-attr]
        console.print(f"[yellow]{report}[/yellow]")
