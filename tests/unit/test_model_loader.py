"""How the kit resolves a model alias on the hot path: no registry call while fresh, one when stale."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from services.kit.models import ModelLoader


class CountingRegistry:
    """Just ``resolve`` (the one call the alias path makes): alias -> a version, counted."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.calls = 0

    def resolve(self, name: str, ref: str) -> Any:
        self.calls += 1
        return SimpleNamespace(manifest=SimpleNamespace(version=self.version))


def test_a_stale_alias_is_re_resolved_by_one_request_while_the_others_keep_its_last_version() -> None:
    registry = CountingRegistry(version=1)
    loader = ModelLoader(registry, alias_ttl_s=0.05)
    v1, v2 = object(), object()
    loader._models[("m", 1)] = v1  # type: ignore[assignment]  # loaded versions (loading needs real artifacts)
    loader._models[("m", 2)] = v2  # type: ignore[assignment]

    assert loader.peek("m", "champion") is None  # never resolved: the caller must resolve
    assert loader.resolve_version("m", "champion") == 1 and registry.calls == 1
    assert loader.peek("m", "champion") is v1
    assert loader.peek("m", 2) is v2 and loader.peek("m", "v2") is v2  # versions never need the registry

    registry.version = 2  # the alias moves (a deploy)
    time.sleep(0.06)
    assert loader.peek("m", "champion") is None  # the first caller after the TTL re-resolves ...
    assert loader.peek("m", "champion") is v1  # ... the others keep the last version meanwhile
    assert loader.peek("m", "champion") is v1
    assert registry.calls == 1  # peeking never calls the registry
    assert loader.resolve_version("m", "champion") == 2 and registry.calls == 2  # the refresher's lookup
    assert loader.peek("m", "champion") is v2


def test_a_failed_re_resolution_lets_the_next_request_try_again() -> None:
    class Down(CountingRegistry):
        def resolve(self, name: str, ref: str) -> Any:
            super().resolve(name, ref)
            if self.calls > 1:
                raise ConnectionError("registry down")
            return SimpleNamespace(manifest=SimpleNamespace(version=1))

    registry = Down(version=1)
    loader = ModelLoader(registry, alias_ttl_s=0.05)
    loader._models[("m", 1)] = object()  # type: ignore[assignment]
    loader.resolve_version("m", "champion")
    time.sleep(0.06)
    assert loader.peek("m", "champion") is None
    with pytest.raises(ConnectionError):
        loader.resolve_version("m", "champion")
    assert loader.peek("m", "champion") is None  # not stuck behind a refresh that failed
