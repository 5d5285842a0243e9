"""``recsys batch ...``: offline scoring jobs (the logic lives in the service packages).

recsys batch basket --as-of 2024-12-31 --out var/batch/basket.parquet [--model-version champion]

Also here, for ``recsys features record-purchases`` (wired by services/cli/__init__.py):
:func:`record_purchases_cmd` merges newly arrived purchases into a purchase_history version online.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import typer
from rich.console import Console

from feature_store.config import FeatureStoreSettings

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.callback()
def batch() -> None:
    """Offline scoring jobs (a group even with one command, so `recsys batch basket` keeps its name)."""


def _parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


@app.command()
def basket(
    as_of: str | None = typer.Option(
        None, "--as-of", help="day the baskets are predicted for (YYYY-MM-DD); default: the snapshot's next day"
    ),
    out: Path = typer.Option(Path("var/batch/basket.parquet"), "--out", help="parquet file to write"),
    model_version: str = typer.Option("champion", "--model-version", help="a version number or an alias"),
    model: str = typer.Option("case", "--model", help="registered basket model name"),
    k: int = typer.Option(20, min=1, max=1024, help="items per user"),
    batch_size: int = typer.Option(256, min=1, help="users per feature read"),
    threads: int = typer.Option(1, min=1, help="ONNX Runtime intra-op threads"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Score every user of the model's pinned purchase_history version and write the top k (parquet)."""
    from services.basket.batch import score_all_users

    day = _parse_date(as_of)
    try:
        summary = score_all_users(
            FeatureStoreSettings(),
            out,
            as_of=day,
            model_name=model,
            model_ref=model_version,
            k=k,
            batch_size=batch_size,
            threads=threads,
            show_progress=progress,
        )
    except (LookupError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=2) from None
    console.print_json(json.dumps(summary.to_dict()))


def record_purchases_cmd(
    ref: str = typer.Argument(..., help="the purchase_history version to update online, e.g. purchase_history@v1"),
    events: Path | None = typer.Option(
        None, "--events", help="file of purchases (.jsonl, .csv or .parquet) with user_id, item_id, timestamp"
    ),
    event: list[str] = typer.Option(
        [], "--event", help="one purchase as user_id,item_id,timestamp (ISO 8601); repeatable"
    ),
) -> None:
    """Merge newly arrived purchases into a purchase_history version online (and the log the next build reads)."""
    import pandas as pd

    from feature_store.pipelines.purchases import record_purchases
    from feature_store.versions import FeatureStoreError

    frames = []
    if events is not None:
        suffix = events.suffix.lower()
        if suffix == ".parquet":
            frames.append(pd.read_parquet(events))
        elif suffix == ".csv":
            frames.append(pd.read_csv(events, dtype={"user_id": str, "item_id": str}))
        elif suffix in (".jsonl", ".json"):
            frames.append(pd.read_json(events, lines=suffix == ".jsonl", dtype={"user_id": str, "item_id": str}))
        else:
            raise typer.BadParameter(f"--events must be .jsonl, .csv or .parquet, got {events.name}")
    for raw in event:
        parts = [p.strip() for p in raw.split(",")]
        if len(parts) != 3:
            raise typer.BadParameter(f"--event must be user_id,item_id,timestamp, got {raw!r}")
        frames.append(pd.DataFrame([dict(zip(("user_id", "item_id", "timestamp"), parts, strict=True))]))
    if not frames:
        raise typer.BadParameter("give --events FILE or at least one --event")
    try:
        result = record_purchases(FeatureStoreSettings(), ref, pd.concat(frames, ignore_index=True))
    except FeatureStoreError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=2) from None
    console.print_json(json.dumps(result.to_dict()))
