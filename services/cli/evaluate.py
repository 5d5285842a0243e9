"""``recsys evaluate ...``: evaluation runs of recommender families; writes docs/results/<family>.md.

A thin wrapper: the runs live in ``models.sequential.experiment``, the page in ``models.sequential.report``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.callback()
def _group() -> None:
    """Evaluation runs per recommender family."""


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@app.command()
def sequential(
    dataset: list[str] = typer.Option(
        ["ml-latest-small"],
        "--dataset",
        help="synthetic | ml-latest-small | ml-1m | amazon-beauty | amazon-sports (repeat the option for several)",
    ),
    seeds: str = typer.Option("0,1,2", help="comma-separated seeds"),
    variants: str = typer.Option("none,avg,ae", help="none (SASRec), avg, ae (LTE prefix variants)"),
    root: Path = typer.Option(None, help="experiment dir (default var/experiments/sequential)"),
    force: bool = typer.Option(False, help="re-run runs that are already recorded"),
    quantize: bool = typer.Option(True, help="export seed-min models to ONNX and measure INT8 quantization"),
    progress: bool = typer.Option(True, help="progress bars per epoch and batch"),
    render_only: bool = typer.Option(False, help="only re-render docs/results/sequential.md from recorded runs"),
) -> None:
    """SASRec vs SASRec+LTE (avg, ae) and popularity: leave-one-out, full ranking, mean ± std over seeds."""
    from models.sequential import experiment, report

    root = root or experiment.DEFAULT_ROOT
    seed_list = [int(s) for s in _csv(seeds)]
    variant_list = _csv(variants)
    bad = [v for v in variant_list if v not in ("none", "avg", "ae")]
    unknown = [d for d in dataset if d not in experiment.DATASETS]
    if bad or unknown:
        console.print(f"[red]unknown variants {bad} / datasets {unknown}[/red]")
        raise typer.Exit(code=2)
    if not render_only:
        logging.getLogger("feast").setLevel(logging.WARNING)
        for name in dataset:
            console.print(f"[bold]{name}[/bold]: variants {variant_list}, seeds {seed_list}")
            for rec in experiment.run_dataset(
                name, variant_list, seed_list, root, force=force, show_progress=progress, quantize=quantize
            ):
                if rec.get("kind") == "onnx":
                    console.print(
                        f"  {rec['model']} ONNX: NDCG@10 fp32 {rec['fp32']['NDCG@10']:.4f} "
                        f"int8 {rec['int8']['NDCG@10']:.4f}"
                    )
                else:
                    console.print(
                        f"  {rec['model']} seed {rec.get('seed')}: NDCG@10 {rec['NDCG@10']:.4f} "
                        f"HR@10 {rec['HR@10']:.4f} ({rec.get('train_seconds', 0):.0f} s)"
                    )
            report.render(root)
    report.render(root)
    console.print(f"wrote {report.DOC_MD.relative_to(report.REPO_ROOT)} and {report.DOC_JSON.name}")


@app.command("sequential-tune")
def sequential_tune(
    dataset: str = typer.Option(..., help="dataset name"),
    variant: str = typer.Option("none", help="none | avg | ae"),
    set_: list[str] = typer.Option([], "--set", help="plan override KEY=VALUE (JSON value), e.g. --set lag_days=30"),
) -> None:
    """One seed-0 run with changed settings, judged on validation NDCG@10 (var/experiments/sequential-tune)."""
    import json

    from models.sequential import experiment

    overrides = {}
    for item in set_:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    row = experiment.tune_run(dataset, variant, overrides)
    console.print(f"{dataset} {variant} {overrides}: valid NDCG@10 {row['valid_NDCG@10']:.4f}")


def main() -> None:
    """``python -m services.cli.evaluate``: the same command without the ``recsys`` entry point."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    logging.getLogger("feast").setLevel(logging.WARNING)
    typer.main.get_command(app).main(args=None, prog_name="evaluate", standalone_mode=True)


if __name__ == "__main__":
    main()
