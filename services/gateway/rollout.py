"""Deploy and rollback: moving an alias, only after pre-flight checks pass.

deploy(model, version, alias)   pre-flight, then registry.set_alias (atomic; history appended)
rollback(model, alias, to=None) the alias's previous version (from its history) or a named one;
                                refused when that version's pinned feature versions are not online

Pre-flight, in order (the first failure stops it, with a message saying what failed):
  1. the target service loads the version's ONNX (``POST /v1/admin/load``; it is then warm, so the
     first request after the switch pays no load);
  2. a smoke prediction for sample users answers 200 with items from that version;
  3. every pinned feature version is online (catalog status) and present for the sample users in
     the online store (so a flushed Redis or a failed materialization is caught before traffic).

The HTTP API (``/v1/models/...`` on the gateway) and the CLI (``recsys deploy | rollback``) both
call these functions. Why the switch is safe under load: the service resolves aliases at most
every 0.5 s and keeps every loaded version, so in-flight requests finish on the version they
started with and new ones pick up the new version, with nothing to load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from feature_store.online import FeatureClient
from feature_store.versions import VersionCatalog
from services.kit.transport import ServiceUnavailable, Transport


class RolloutRefused(Exception):
    """A deploy or rollback that must not happen; the message says why."""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class PreflightReport:
    model: str
    version: int
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failure(self) -> str:
        bad = [c for c in self.checks if not c.ok]
        return "; ".join(f"{c.name}: {c.detail}" for c in bad)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "ok": self.ok, "checks": [asdict(c) for c in self.checks]}


@dataclass
class RolloutContext:
    registry: Any
    catalog: VersionCatalog
    features: FeatureClient
    transport: Transport
    admin_token: str | None
    # Model name -> the service that serves it.
    services: dict[str, str]
    sample_users: int = 20
    min_present: float = 0.5
    max_feature_age: timedelta = timedelta(days=30)


def _sample_entities(ctx: RolloutContext, refs: list[str], entity: str = "user") -> list[str]:
    """Entities the pinned features of that kind have rows for: the newest snapshot's entities."""
    import pyarrow.parquet as pq

    for ref in refs:
        spec = ctx.catalog.resolve(ref)
        if spec.entity != entity:
            continue
        table = pq.read_table(ctx.catalog.root.parent / spec.source_path, columns=[spec.join_key, "event_timestamp"])
        ts = table.column("event_timestamp").to_pylist()
        newest = max(ts)
        ids = [u for u, t in zip(table.column(spec.join_key).to_pylist(), ts, strict=True) if t == newest]
        step = max(1, len(ids) // ctx.sample_users)
        return ids[::step][: ctx.sample_users]
    return []


def _sample_users(ctx: RolloutContext, refs: list[str]) -> list[str]:
    return _sample_entities(ctx, refs, "user")


def smoke_request(ctx: RolloutContext, family: str, refs: list[str], user: str, version: int) -> tuple[str, dict]:
    """The smoke prediction for a family: the route its service answers and a request for one user.

    Rankers of given candidates (ctr) are asked to score items the pinned item features know;
    recommenders (sequential, basket) to recommend."""
    if family == "ctr":
        items = _sample_entities(ctx, refs, "item")[:5] or ["preflight-item"]
        return "/v1/score", {"user_id": user, "candidates": items, "model_version": str(version)}
    return "/v1/recommend", {"user_id": user, "k": 5, "model_version": str(version)}


def features_online(ctx: RolloutContext, refs: list[str], users: list[str]) -> list[Check]:
    checks = []
    now = datetime.now(UTC)
    for ref in refs:
        spec = ctx.catalog.resolve(ref)
        status = ctx.catalog.status(spec.view, spec.version)
        if status.state != "online":
            checks.append(Check(f"feature {ref}", False, f"{ref} is {status.state}, not online"))
            continue
        if status.materialized_at and now - status.materialized_at > ctx.max_feature_age:
            age = (now - status.materialized_at).days
            checks.append(Check(f"feature {ref}", False, f"{ref} was materialized {age} days ago (stale)"))
            continue
        if spec.entity == "user" and users:
            try:
                rows = ctx.features.read(ref, users)
            except Exception as exc:  # the online store itself failing is a failed check, not a crash
                checks.append(Check(f"feature {ref}", False, f"online read failed: {type(exc).__name__}: {exc}"))
                continue
            share = float(rows.present.mean())
            if share < ctx.min_present:
                checks.append(
                    Check(f"feature {ref}", False, f"only {share:.0%} of {len(users)} sample users present online")
                )
                continue
            checks.append(Check(f"feature {ref}", True, f"online, {share:.0%} of sample users present"))
        else:
            checks.append(Check(f"feature {ref}", True, "online"))
    return checks


async def preflight(ctx: RolloutContext, model: str, version: int) -> PreflightReport:
    report = PreflightReport(model, version)
    mv = ctx.registry.get(model, version)
    refs = [p.ref for p in mv.manifest.feature_refs]
    service = ctx.services.get(model)
    if service is None:
        report.checks.append(Check("route", False, f"no service configured for model {model!r}"))
        return report
    auth = {"Authorization": f"Bearer {ctx.admin_token}"} if ctx.admin_token else None
    try:
        status, body = await ctx.transport.post(
            service, "/v1/admin/load", {"model_version": str(version)}, timeout=30.0, headers=auth
        )
    except ServiceUnavailable as exc:
        report.checks.append(Check("load", False, str(exc)))
        return report
    if status != 200:
        report.checks.append(Check("load", False, f"{service} answered {status}: {body}"))
        return report
    report.checks.append(Check("load", True, f"{service} loaded {body.get('loaded')}"))
    # Features before the smoke test: a smoke prediction on missing features would only show a fallback.
    users = _sample_users(ctx, refs)
    report.checks += features_online(ctx, refs, users)
    if not report.ok:
        return report
    smoke_user = users[0] if users else "preflight-user"
    path, request = smoke_request(ctx, mv.manifest.family, refs, smoke_user, version)
    try:
        status, body = await ctx.transport.post(service, path, request, timeout=5.0)
    except ServiceUnavailable as exc:
        report.checks.append(Check("smoke", False, str(exc)))
        return report
    ok = status == 200 and body.get("model_version") == version and len(body.get("items", [])) > 0
    detail = f"{len(body.get('items', []))} items from v{body.get('model_version')}" if status == 200 else str(body)
    report.checks.append(Check("smoke", ok, detail))
    return report


async def deploy(
    ctx: RolloutContext, model: str, version: int, alias: str = "champion", actor: str = "admin", reason: str = ""
) -> dict[str, Any]:
    report = await preflight(ctx, model, version)
    if not report.ok:
        raise RolloutRefused(f"deploy of {model}@v{version} refused by pre-flight: {report.failure()}")
    event = ctx.registry.set_alias(model, alias, version, actor=actor, reason=reason or "deploy")
    return {"alias": alias, "from_version": event.from_version, "to_version": event.to_version, **report.to_dict()}


def previous_version(registry: Any, model: str, alias: str) -> int:
    """The version the alias pointed at before its current one (newest-first history)."""
    current = registry.aliases(model).get(alias)
    for ev in registry.alias_history(model, alias):
        if ev.to_version == current and ev.from_version is not None and ev.from_version != current:
            return int(ev.from_version)
    raise RolloutRefused(f"{model}/{alias} has no previous version to roll back to")


async def rollback(
    ctx: RolloutContext,
    model: str,
    alias: str = "champion",
    to_version: int | None = None,
    actor: str = "admin",
    reason: str = "",
) -> dict[str, Any]:
    target = to_version if to_version is not None else previous_version(ctx.registry, model, alias)
    mv = ctx.registry.get(model, target)
    refs = [p.ref for p in mv.manifest.feature_refs]
    missing = [
        f"{r} ({ctx.catalog.status(*_view_version(r)).state})"
        for r in refs
        if ctx.catalog.status(*_view_version(r)).state != "online"
    ]
    if missing:
        raise RolloutRefused(
            f"rollback of {model}/{alias} to v{target} refused: its pinned feature versions are not online: "
            + ", ".join(missing)
        )
    report = await preflight(ctx, model, target)
    if not report.ok:
        raise RolloutRefused(f"rollback of {model}/{alias} to v{target} refused by pre-flight: {report.failure()}")
    event = ctx.registry.set_alias(model, alias, target, actor=actor, reason=reason or "rollback")
    return {"alias": alias, "from_version": event.from_version, "to_version": event.to_version, **report.to_dict()}


def _view_version(ref: str) -> tuple[str, int]:
    from feature_store.versions import parse_ref

    view, num, _ = parse_ref(ref)
    return view, num
