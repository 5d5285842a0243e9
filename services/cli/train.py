"""``recsys train ...``: train a recommender and export a servable artifact directory.

A thin wrapper over ``models.sequential`` (experiment data with leak-free LTE versions, or an existing
feature store with pinned refs via ``pipeline.train_and_export``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.callback()
def _group() -> None:
    """Train a model family and export it."""


@app.command()
def sequential(
    dataset: str = typer.Option("ml-latest-small", help="dataset name (experiment) or a prepared dataset (--store)"),
    variant: str = typer.Option("avg", help="none (SASRec) | avg | ae (LTE prefix token)"),
    epochs: int = typer.Option(20, help="maximum epochs (early stopping on validation in experiment mode)"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(..., help="artifact directory to write (model.onnx, item_index.json, params.json)"),
    store: bool = typer.Option(
        False,
        help="train on the configured feature store (RECSYS_DATA_DIR, e.g. the demo) with pinned refs "
        "instead of the private experiment data dir",
    ),
    lte_ref: str = typer.Option("", help="--store: LTE version to pin (default: newest lte_<variant>)"),
    recent_ref: str = typer.Option("", help="--store: recent_items version to pin (default: newest)"),
    quantize: bool = typer.Option(False, help="also write model.int8.onnx (dynamic INT8)"),
) -> None:
    """SASRec with an optional LTE prefix token: train (progress per epoch and batch), export ONNX with top-k."""
    from models.sequential.export import quantize_int8

    logging.getLogger("feast").setLevel(logging.WARNING)
    if variant not in ("none", "avg", "ae"):
        console.print(f"[red]unknown variant {variant!r}[/red]")
        raise typer.Exit(code=2)
    if store:
        from feature_store.config import FeatureStoreSettings
        from models.sequential.pipeline import train_and_export

        result = train_and_export(
            FeatureStoreSettings(),
            dataset,
            variant,
            epochs,
            seed,
            out,
            lte_ref or None,
            recent_ref or None,
            show_progress=True,
        )
        summary = {k: result[k] for k in ("artifact_dir", "metrics", "feature_refs")}
    else:
        from models.sequential import experiment
        from models.sequential.export import export_model
        from models.sequential.model import load_checkpoint

        if dataset not in experiment.PLANS:
            console.print(f"[red]no experiment plan for {dataset!r}; known: {', '.join(experiment.PLANS)}[/red]")
            raise typer.Exit(code=2)
        data = experiment.prepare_data(dataset, variant)
        rec = experiment.run_one(dataset, variant, seed, data=data, show_progress=True, epochs=epochs)
        model = load_checkpoint(rec["checkpoint"])
        refs = [data.refs["test"]] if data.refs else []
        export_model(
            model,
            out,
            data.split.item_ids.tolist(),
            params={
                "dataset": dataset,
                "lag_seconds": None if variant == "none" else experiment.PLANS[dataset].lag_days * 86400,
                "lte_ref": data.refs.get("test"),
                "feature_refs": refs,
                "seed": seed,
                "experiment_dir": str(experiment.settings_for(dataset).data_dir),
            },
        )
        summary = {
            "artifact_dir": str(out),
            "metrics": {k: rec[k] for k in ("HR@10", "NDCG@10", "NDCG@100", "valid_NDCG@10")},
            "feature_refs": refs,
            "epochs_run": rec["epochs_run"],
            "train_seconds": rec["train_seconds"],
        }
    if quantize:
        quantize_int8(out)
    console.print_json(json.dumps(summary, default=str))


def main() -> None:
    """``python -m services.cli.train``: the same command without the ``recsys`` entry point."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    typer.main.get_command(app).main(args=None, prog_name="train", standalone_mode=True)


if __name__ == "__main__":
    main()
