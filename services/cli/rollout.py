"""``recsys deploy`` and ``recsys rollback``: the same code the gateway's /v1/models API runs."""

from __future__ import annotations

import asyncio
import json

import typer
from rich.console import Console

console = Console()


def _run(action: str, **kwargs: object) -> None:
    from models.registry import ModelRegistry
    from services.gateway.app import GatewaySettings, rollout_context
    from services.gateway.rollout import RolloutRefused, deploy, rollback
    from services.kit.transport import HttpTransport

    settings = GatewaySettings()
    transport = HttpTransport(settings.services)
    ctx = rollout_context(settings, transport, ModelRegistry.from_settings())
    fn = deploy if action == "deploy" else rollback

    async def go() -> dict:
        try:
            return await fn(ctx, **kwargs)  # type: ignore[arg-type]
        finally:
            await transport.aclose()

    try:
        result = asyncio.run(go())
    except (RolloutRefused, LookupError) as exc:
        console.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(code=2) from None
    typer.echo(json.dumps(result, indent=2, default=str))


def deploy_cmd(
    model: str = typer.Argument(..., help="registered model name"),
    version: int = typer.Argument(..., help="version to deploy"),
    alias: str = typer.Option("champion"),
    reason: str = typer.Option(""),
    actor: str = typer.Option("cli"),
) -> None:
    """Pre-flight (load, features online, smoke prediction), then move the alias."""
    _run("deploy", model=model, version=version, alias=alias, actor=actor, reason=reason)


def rollback_cmd(
    model: str = typer.Argument(...),
    alias: str = typer.Option("champion"),
    to: int = typer.Option(0, help="a named version; default: the alias's previous version"),
    reason: str = typer.Option(""),
    actor: str = typer.Option("cli"),
) -> None:
    """Move the alias back; refused when that version's pinned feature versions are not online."""
    _run("rollback", model=model, alias=alias, to_version=to or None, actor=actor, reason=reason)
