"""``recsys models ...``: register, list, show, alias, history and verify model versions."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from models.registry import ModelRegistry, RegistryError

app = typer.Typer(no_args_is_help=True)
console = Console()


def _fail(exc: Exception | str) -> NoReturn:
    # soft_wrap: one line per error, whatever the terminal width, so logs and grep see the whole message.
    console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _registry() -> ModelRegistry:
    return ModelRegistry.from_settings()


def _json_arg(value: str, what: str) -> dict[str, Any]:
    """Inline JSON (``'{"ndcg@10": 0.3}'``) or a path to a JSON file."""
    if not value:
        return {}
    try:
        text = value if value.lstrip().startswith("{") else Path(value).read_text()
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        _fail(f"{what}: {exc}")
    if not isinstance(data, dict):
        _fail(f"{what} must be a JSON object")
    return data


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


@app.command()
def register(
    family: str = typer.Option(..., help="model family; its ONNX contract is checked (see models/contracts.py)"),
    name: str = typer.Option(..., help="model name, e.g. seq-lte; the registry assigns the version"),
    artifact: Path = typer.Option(..., help="directory with model.onnx (+ model.onnx.data) and extra files"),
    feature: list[str] = typer.Option([], help="pinned feature version, e.g. lte_avg@v1 (repeatable)"),
    dataset: str = typer.Option(..., help="training dataset"),
    data_id: str = typer.Option("", help="id of the exact training extract"),
    train_start: str = typer.Option("", help="start of the training window (ISO)"),
    train_end: str = typer.Option("", help="end of the training window (ISO)"),
    metrics_json: str = typer.Option("", help="evaluation metrics: JSON object or a file holding one"),
    params_json: str = typer.Option("", help="free-form params (variant, top_k ...): JSON object or file"),
    description: str = typer.Option("", help="what this version is"),
) -> None:
    """Register a new immutable model version; refused with the reason if it is not servable."""
    training = {"dataset": dataset, "data_id": data_id or None, "start": train_start or None, "end": train_end or None}
    metrics = _json_arg(metrics_json, "--metrics-json")
    params = _json_arg(params_json, "--params-json")
    try:
        with _registry() as reg:
            m = reg.register(
                family=family,
                name=name,
                artifact_dir=artifact,
                feature_refs=feature,
                training=training,
                metrics=metrics,
                params=params,
                description=description,
            )
    except RegistryError as exc:
        _fail(exc)
    pins = ", ".join(m.pinned_refs) or "no features"
    console.print(f"registered [bold]{m.ref}[/bold] ({m.family}; {pins}; onnx {m.onnx_sha256[:12]})")


@app.command("list")
def list_(name: str = typer.Argument(None, help="only this model")) -> None:
    """Every model version with its aliases, pinned features and metrics."""
    with _registry() as reg:
        names = [name] if name else reg.names()
        table = Table("model", "version", "family", "created", "aliases", "features", "metrics")
        for n in names:
            by_version: dict[int, list[str]] = {}
            for alias, v in reg.aliases(n).items():
                by_version.setdefault(v, []).append(alias)
            for m in reg.versions(n):
                table.add_row(
                    n,
                    f"v{m.version}",
                    m.family,
                    m.created_at.strftime("%Y-%m-%d %H:%M"),
                    ", ".join(by_version.get(m.version, [])),
                    ", ".join(m.pinned_refs),
                    ", ".join(f"{k}={v:.4g}" for k, v in m.metrics.items()),
                )
    if not table.rows:
        console.print("no models registered" + (f" under {name!r}" if name else ""))
        return
    console.print(table)


@app.command()
def show(
    name: str,
    ref: str = typer.Argument("latest", help="version (3, v3), alias, or latest"),
    as_json: bool = typer.Option(False, "--json", help="the manifest as JSON"),
) -> None:
    """One version's manifest."""
    try:
        with _registry() as reg:
            mv = reg.resolve(name, ref)
    except RegistryError as exc:
        _fail(exc)
    m = mv.manifest
    if as_json:
        typer.echo(m.model_dump_json(indent=2))
        return
    console.print(f"[bold]{m.ref}[/bold]  family {m.family}  created {m.created_at:%Y-%m-%d %H:%M:%S} UTC")
    console.print(f"path:     {mv.path}", highlight=False)
    console.print(f"git sha:  {m.git_sha}")
    t = m.training
    console.print(f"training: {t.dataset} {t.data_id or ''} {t.start or '?'} .. {t.end or '?'}")
    if m.description:
        console.print(f"about:    {m.description}")
    sig = Table("", "tensor", "dtype", "shape", title="signature")
    for kind, tensors in (("in", m.inputs), ("out", m.outputs)):
        for s in tensors:
            sig.add_row(kind, s.name, s.dtype, str(list(s.shape)))
    console.print(sig)
    pins = Table("feature", "schema hash", "basis", title="pinned features")
    for p in m.feature_refs:
        pins.add_row(p.ref, p.schema_hash, p.basis_fingerprint or "-")
    console.print(pins)
    files = Table("file", "bytes", "sha256", title="files")
    for rel, f in sorted(m.files.items()):
        files.add_row(rel, str(f.size), f.sha256[:16])
    console.print(files)
    if m.metrics:
        console.print("metrics:  " + json.dumps(m.metrics))
    if m.params:
        console.print("params:   " + json.dumps(m.params))


@app.command()
def alias(
    name: str,
    alias: str,
    version: str = typer.Argument(..., help="version (3, v3), latest, or another alias"),
    reason: str = typer.Option("", help="why; kept in the alias history"),
    actor: str = typer.Option("", help="who (default: the current user)"),
) -> None:
    """Point an alias (champion, challenger ...) at a version; the move is recorded."""
    try:
        with _registry() as reg:
            ev = reg.set_alias(name, alias, version, actor=actor or _actor(), reason=reason)
    except RegistryError as exc:
        _fail(exc)
    before = f"v{ev.from_version}" if ev.from_version is not None else "(unset)"
    console.print(f"{name}/{alias}: {before} -> [bold]v{ev.to_version}[/bold]")


@app.command()
def unalias(
    name: str,
    alias: str,
    reason: str = typer.Option("", help="why; kept in the alias history"),
    actor: str = typer.Option("", help="who (default: the current user)"),
) -> None:
    """Remove an alias; the removal is recorded."""
    try:
        with _registry() as reg:
            ev = reg.delete_alias(name, alias, actor=actor or _actor(), reason=reason)
    except RegistryError as exc:
        _fail(exc)
    console.print(f"{name}/{alias}: v{ev.from_version} -> (unset)")


@app.command()
def history(name: str, alias: str = typer.Option(None, help="only this alias")) -> None:
    """Alias changes of a model, newest first."""
    with _registry() as reg:
        events = reg.alias_history(name, alias)
    if not events:
        console.print(f"no alias changes for {name!r}")
        return
    table = Table("at (UTC)", "alias", "from", "to", "actor", "reason")
    for e in events:
        table.add_row(
            e.at.strftime("%Y-%m-%d %H:%M:%S"),
            e.alias,
            f"v{e.from_version}" if e.from_version is not None else "-",
            f"v{e.to_version}" if e.to_version is not None else "(deleted)",
            e.actor,
            e.reason,
        )
    console.print(table)


@app.command()
def verify(name: str, ref: str = typer.Argument("latest", help="version, alias, or latest")) -> None:
    """Re-hash a version's files against its manifest."""
    try:
        with _registry() as reg:
            mv = reg.resolve(name, ref)
            reg.verify(name, mv.version)
    except RegistryError as exc:
        _fail(exc)
    console.print(f"{mv.ref}: {len(mv.manifest.files)} files match the manifest")
