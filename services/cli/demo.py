"""``recsys demo ...``: build the embedded demo from synthetic data and serve it on loopback."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from feature_store.config import FeatureStoreSettings

if TYPE_CHECKING:
    from feature_store.sources.schema import Dataset
    from models.registry import ModelManifest

app = typer.Typer(no_args_is_help=True)
DEMO_MODEL = "seq-lte"
DEMO_CTR_MODEL = "ctr-ssr"
console = Console()


@app.command()
def build(
    users: int = typer.Option(10_000, help="synthetic users"),
    seed: int = typer.Option(0),
    epochs: int = typer.Option(3, help="training epochs of the demo model"),
) -> None:
    """Synthetic data -> semantic basis -> feature versions -> online store -> the demo's models.

    Features: LTE (avg, ae), recent items, item features, user profile, purchase history. Models:
    the sequential recommender (surface "home"), the CTR ranker (its second stage on "home-ranked"),
    the next-basket model (surface "basket").
    """
    from feature_store import build as builds
    from feature_store import feast_ops
    from feature_store.pipelines.profile import build_user_profile
    from feature_store.sources.prepared import load_source, prepare

    settings = FeatureStoreSettings()
    t0 = time.perf_counter()
    with console.status(f"generating {users} synthetic users ..."):
        world = load_source("synthetic", settings, users=users, seed=seed)
        m = prepare(settings, world)
    console.print(f"[1/7] data: {m['users']} users, {m['items']} items, {m['interactions']} interactions")
    console.print("[2/7] semantic basis (sentence encoder, cached after the first run) ...")
    basis = builds.dataset_basis(settings, "synthetic", "auto")
    console.print(f"      basis {basis.encoder} {basis.fingerprint[:12]}")
    console.print("[3/7] feature versions ...")
    specs = [
        builds.build_lte(settings, dataset="synthetic", variant="avg", every_days=14),
        builds.build_lte(settings, dataset="synthetic", variant="ae", every_days=14),
        builds.build_recent(settings, dataset="synthetic", every_days=14),
        builds.build_items(settings, dataset="synthetic"),
        build_user_profile(settings, dataset="synthetic"),
        builds.build_purchase_history(settings, dataset="synthetic", every_days=14),
    ]
    for s in specs:
        console.print(f"      {s.ref}: {s.rows} rows")
    console.print("[4/7] feast apply + materialize ...")
    store = feast_ops.get_store(settings)
    feast_ops.apply(settings, store)
    for s in specs:
        status = feast_ops.materialize(settings, s.ref, store)
        console.print(f"      {s.ref}: {status.note}")
    console.print("[5/7] sequential model: train (LTE avg prefix), export ONNX, register, alias champion ...")
    manifest = train_register_demo_model(settings, lte_ref=specs[0].ref, recent_ref=specs[2].ref, epochs=epochs)
    console.print(f"      {manifest.name}@v{manifest.version} metrics {manifest.metrics}")
    console.print("[6/7] CTR ranker: impressions over the demo's users, train SSR-S, calibrate, register ...")
    # Impressions grow with the demo (40 per user, 20k-200k): enough to learn from, quick for small demos.
    impressions = min(200_000, max(20_000, 40 * users))
    ctr = train_register_ctr_model(settings, world, specs[4].ref, specs[3].ref, impressions=impressions, seed=seed)
    console.print(f"      {ctr.name}@v{ctr.version} metrics {ctr.metrics}")
    console.print("[7/7] next-basket model (CASE) on the grocery shoppers: train, export ONNX, register ...")
    from models.basket.pipeline import train_register

    case = train_register(settings, specs[5].ref, seed=seed)
    console.print(f"      {case.name}@v{case.version} metrics {case.metrics}")
    console.print(f"[green]demo built in {time.perf_counter() - t0:.0f}s[/green] under {settings.data_dir}")


def train_register_ctr_model(
    settings: FeatureStoreSettings, world: Dataset, profile_ref: str, items_ref: str, impressions: int, seed: int = 0
) -> ModelManifest:
    """Train the demo's CTR ranker on impressions over the demo's world and make it the champion."""
    import tempfile
    from pathlib import Path

    from models.ctr.pipeline import train_and_export
    from models.registry import ModelRegistry

    with tempfile.TemporaryDirectory() as tmp:
        out = train_and_export(
            settings, world, profile_ref, items_ref, Path(tmp) / "artifact", n_impressions=impressions, seed=seed
        )
        manifest = ModelRegistry.from_settings(settings).register_trained(
            out,
            family="ctr",
            name=DEMO_CTR_MODEL,
            description="demo: SSR-S click ranker over synthetic impressions, calibrated (Platt)",
            actor="demo",
            reason="demo build",
        )
    return manifest


def train_register_demo_model(settings: FeatureStoreSettings, lte_ref: str, recent_ref: str, epochs: int):
    """Train the demo's sequential model on the synthetic data and make it the champion."""
    import tempfile
    from pathlib import Path

    from models.popularity import write_popularity
    from models.registry import ModelRegistry
    from models.sequential.pipeline import train_and_export

    with tempfile.TemporaryDirectory() as tmp:
        out = train_and_export(
            settings,
            dataset="synthetic",
            variant="avg",
            epochs=epochs,
            seed=0,
            out_dir=Path(tmp) / "artifact",
            lte_ref=lte_ref,
            recent_ref=recent_ref,
        )
        write_popularity(settings, "synthetic", Path(out["artifact_dir"]))
        manifest = ModelRegistry.from_settings(settings).register_trained(
            out,
            family="sequential",
            name=DEMO_MODEL,
            description="demo: SASRec + LTE(avg) prefix, synthetic data",
            actor="demo",
            reason="demo build",
        )
    return manifest


@app.command()
def serve(host: str = typer.Option("127.0.0.1"), port: int = typer.Option(8000)) -> None:
    """Serve the demo on loopback in embedded mode: the gateway and every service in one process."""
    import os

    import pandas as pd
    import uvicorn

    from feature_store.sources.prepared import load_prepared

    settings = FeatureStoreSettings()
    try:
        users = load_prepared(settings, "synthetic").interactions["user_id"]
    except FileNotFoundError:
        console.print("[red]nothing to serve; run `recsys demo build` first[/red]")
        raise typer.Exit(code=2) from None
    user = str(users.iloc[len(users) // 2])
    # A shopper for the basket surface: a user with a purchase history.
    shoppers = sorted((settings.data_dir / "offline" / "purchase_history").glob("v*.parquet"))
    shopper = str(pd.read_parquet(shoppers[-1], columns=["user_id"])["user_id"].iloc[0]) if shoppers else user
    # The synthetic data ends in the past: basket answers default to the feature snapshot's date, not
    # today (which would be past every purchase history and answer with a flagged fallback).
    os.environ.setdefault("RECSYS_BASKET_DEFAULT_AS_OF", "snapshot")
    console.print(
        f"serving the gateway on http://{host}:{port} (embedded): surfaces 'home' -> {DEMO_MODEL}@champion, "
        f"'home-ranked' -> {DEMO_MODEL} then {DEMO_CTR_MODEL}@champion, 'basket' -> case@champion"
    )
    console.print("try:")
    url = f"http://{host}:{port}/v1/recommendations -H 'content-type: application/json'"
    for body, note in (
        (f'{{"user_id": "{user}", "surface": "home", "k": 5}}', ""),
        (
            f'{{"user_id": "{user}", "surface": "home-ranked", "k": 5, '
            '"context": {"device": "mobile", "hour_bucket": "evening", "weekday": "fri", "surface": "home"}}',
            "   # candidates re-ranked by the CTR model",
        ),
        (f'{{"user_id": "{shopper}", "surface": "basket", "k": 5}}', "   # next basket (repurchases)"),
        ('{"user_id": "someone-new", "surface": "home", "k": 5}', "   # unknown user: flagged fallback"),
    ):
        console.print(f"  curl -s {url} -d '{body}'{note}", soft_wrap=True)
    console.print(
        "  admin endpoints (/v1/experiments, /v1/models) need RECSYS_ADMIN_TOKEN set and sent as a Bearer token"
    )
    uvicorn.run("services.gateway.app:embedded_app_factory", factory=True, host=host, port=port, log_level="warning")
