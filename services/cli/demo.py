"""``recsys demo ...``: build the embedded demo from synthetic data and serve it on loopback."""

from __future__ import annotations

import time

import typer
from rich.console import Console

from feature_store.config import FeatureStoreSettings

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.command()
def build(users: int = typer.Option(10_000, help="synthetic users"), seed: int = typer.Option(0)) -> None:
    """Synthetic data -> semantic basis -> LTE (avg, ae), recent items, item features -> online store."""
    from feature_store import build as builds
    from feature_store import feast_ops
    from feature_store.sources.prepared import load_source, prepare

    settings = FeatureStoreSettings()
    t0 = time.perf_counter()
    with console.status(f"generating {users} synthetic users ..."):
        m = prepare(settings, load_source("synthetic", settings, users=users, seed=seed))
    console.print(f"[1/4] data: {m['users']} users, {m['items']} items, {m['interactions']} interactions")
    console.print("[2/4] semantic basis (sentence encoder, cached after the first run) ...")
    basis = builds.dataset_basis(settings, "synthetic", "auto")
    console.print(f"      basis {basis.encoder} {basis.fingerprint[:12]}")
    console.print("[3/4] feature versions ...")
    specs = [
        builds.build_lte(settings, dataset="synthetic", variant="avg", every_days=14),
        builds.build_lte(settings, dataset="synthetic", variant="ae", every_days=14),
        builds.build_recent(settings, dataset="synthetic", every_days=14),
        builds.build_items(settings, dataset="synthetic"),
    ]
    for s in specs:
        console.print(f"      {s.ref}: {s.rows} rows")
    console.print("[4/4] feast apply + materialize ...")
    store = feast_ops.get_store(settings)
    feast_ops.apply(settings, store)
    for s in specs:
        status = feast_ops.materialize(settings, s.ref, store)
        console.print(f"      {s.ref}: {status.note}")
    console.print(f"[green]demo built in {time.perf_counter() - t0:.0f}s[/green] under {settings.data_dir}")


@app.command()
def serve(host: str = typer.Option("127.0.0.1"), port: int = typer.Option(8000)) -> None:
    """Serve the demo on loopback (the feature read API until the recommenders exist)."""
    import uvicorn

    from feature_store.versions import VersionCatalog

    settings = FeatureStoreSettings()
    catalog = VersionCatalog(settings.catalog_dir)
    online = [v.ref for v in catalog.all_versions() if catalog.status(v.view, v.version).state == "online"]
    if not online:
        console.print("[red]nothing is online; run `recsys demo build` first[/red]")
        raise typer.Exit(code=2)
    lte = next((r for r in reversed(online) if r.startswith("lte_avg@")), online[-1])
    spec = catalog.resolve(lte)
    import pyarrow.parquet as pq

    user = pq.read_table(settings.data_dir / spec.source_path, columns=[spec.join_key]).column(0)[0].as_py()
    console.print(f"serving {', '.join(online)} on http://{host}:{port}")
    console.print("try:")
    console.print(
        f"  curl -s http://{host}:{port}/v1/features/read -H 'content-type: application/json' "
        f'-d \'{{"ref": "{lte}", "entity_ids": ["{user}", "nobody"]}}\'',
        soft_wrap=True,
    )
    console.print(f"  curl -s http://{host}:{port}/v1/features/versions", soft_wrap=True)
    uvicorn.run("services.features.app:app_factory", factory=True, host=host, port=port, log_level="warning")
