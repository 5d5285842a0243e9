"""``recsys experiments ...``: the experiments admin API's operations from a shell.

Same code as ``/v1/experiments``: both call the ``ExperimentStore`` methods (validation, optimistic
concurrency, lifecycle rules, the append-only history) with the registry-backed target validator,
against the same database (``RECSYS_GATEWAY_DB_URL``, default SQLite under ``RECSYS_DATA_DIR``).
Every gateway replica picks a change up within its poll interval, whichever door it came through.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True)
console = Console(stderr=True)

ACTOR = typer.Option(None, help="who makes the change (history); default: $USER")
VERSION = typer.Option(None, help="the version you based the change on (refused if it moved)")
REASON = typer.Option("", help="why (kept in the history)")


def _store_and_validator() -> tuple[Any, Any]:
    from models.registry import ModelRegistry
    from services.gateway.app import GatewaySettings
    from services.gateway.experiments import ExperimentStore, registry_target_validator

    settings = GatewaySettings()
    validator = registry_target_validator(ModelRegistry.from_settings(), services=set(settings.services))
    return ExperimentStore(), validator


def _actor(actor: str | None) -> str:
    return actor or os.environ.get("USER") or "cli"


def _run(fn: Any) -> None:
    """Print the result as JSON; a store error is the API's message and exit code 2, never a traceback."""
    from services.gateway.experiments import ExperimentError

    try:
        result = fn()
    except ExperimentError as exc:
        console.print(f"[red]{exc.code}:[/red] {exc.message}")
        if exc.details:
            console.print_json(json.dumps(exc.details, default=str))
        raise typer.Exit(code=2) from None
    if isinstance(result, list):
        payload: Any = [r.model_dump(mode="json") for r in result]
    else:
        payload = result.model_dump(mode="json")
    typer.echo(json.dumps(payload, indent=2))


def _load_spec(spec: str) -> dict[str, Any]:
    """A JSON object inline, or ``@file.json``."""
    text = Path(spec[1:]).read_text() if spec.startswith("@") else spec
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        console.print(f"[red]invalid JSON:[/red] {exc}")
        raise typer.Exit(code=2) from None
    if not isinstance(value, dict):
        console.print("[red]the spec must be a JSON object[/red]")
        raise typer.Exit(code=2)
    return value


@app.command("list")
def list_cmd(
    surface: str = typer.Option(None, help="only this surface"),
    status: str = typer.Option(None, help="draft | running | paused | stopped"),
) -> None:
    """List experiments."""
    store, _ = _store_and_validator()
    _run(lambda: store.list(surface=surface, status=status))


@app.command("get")
def get_cmd(key: str) -> None:
    """One experiment."""
    store, _ = _store_and_validator()
    _run(lambda: store.get(key))


@app.command("create")
def create_cmd(
    spec: str = typer.Argument(..., help="the experiment as JSON, or @file.json (same body as POST /v1/experiments)"),
    actor: str = ACTOR,
) -> None:
    """Create an experiment (validated like the API: weights, targets, keys, namespaces)."""
    from pydantic import ValidationError

    from services.gateway.experiments import ExperimentCreate

    store, validator = _store_and_validator()
    try:
        body = ExperimentCreate.model_validate(_load_spec(spec))
    except ValidationError as exc:
        for err in exc.errors():
            console.print(f"[red]{'.'.join(map(str, err['loc'])) or 'body'}:[/red] {err['msg']}")
        raise typer.Exit(code=2) from None
    _run(lambda: store.create(body, _actor(actor), target_validator=validator))


@app.command("update")
def update_cmd(
    key: str,
    changes: str = typer.Argument(..., help="fields to replace, JSON or @file.json, e.g. '{\"coverage\": 0.5}'"),
    version: int = typer.Option(..., help="the version you based the change on (optimistic concurrency)"),
    reason: str = REASON,
    actor: str = ACTOR,
) -> None:
    """Change an experiment (like PATCH /v1/experiments/{key})."""
    store, validator = _store_and_validator()
    fields = _load_spec(changes)
    _run(lambda: store.update(key, fields, version, _actor(actor), reason, target_validator=validator))


@app.command("pause")
def pause_cmd(key: str, version: int = VERSION, reason: str = REASON, actor: str = ACTOR) -> None:
    """running -> paused."""
    store, _ = _store_and_validator()
    _run(lambda: store.pause(key, _actor(actor), version, reason))


@app.command("resume")
def resume_cmd(key: str, version: int = VERSION, reason: str = REASON, actor: str = ACTOR) -> None:
    """paused or draft -> running (targets re-validated)."""
    store, validator = _store_and_validator()
    _run(lambda: store.resume(key, _actor(actor), version, reason, target_validator=validator))


@app.command("stop")
def stop_cmd(key: str, version: int = VERSION, reason: str = REASON, actor: str = ACTOR) -> None:
    """-> stopped (final)."""
    store, _ = _store_and_validator()
    _run(lambda: store.stop(key, _actor(actor), version, reason))


@app.command("history")
def history_cmd(key: str) -> None:
    """Every change, newest first."""
    store, _ = _store_and_validator()
    _run(lambda: store.history(key))
