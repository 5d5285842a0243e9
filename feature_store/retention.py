"""Retention guard: a feature version that a registered model pins cannot be deleted.

The feature store does not know about models. It asks a ``PinSource`` (the model registry fills
this in; see models/registry) which model versions pin a feature version, and refuses deletion
while any do, naming them.
"""

from __future__ import annotations

from typing import Protocol

from feature_store.versions import FeatureStoreError


class PinSource(Protocol):
    """Who pins what. ``pinned_by("lte_avg@v3")`` returns e.g. ``["seq-lte@4", "seq-lte@5"]``."""

    def pinned_by(self, feature_ref: str) -> list[str]: ...


class NoPins:
    """The default before any model registry is configured: nothing is pinned."""

    def pinned_by(self, feature_ref: str) -> list[str]:
        return []


class StaticPins:
    """A fixed mapping, for tests and for ad-hoc protection (``recsys features protect``)."""

    def __init__(self, pins: dict[str, list[str]]) -> None:
        self._pins = pins

    def pinned_by(self, feature_ref: str) -> list[str]:
        return list(self._pins.get(feature_ref, []))


class CombinedPins:
    """Union of several sources (registry pins and alias-history pins)."""

    def __init__(self, *sources: PinSource) -> None:
        self._sources = sources

    def pinned_by(self, feature_ref: str) -> list[str]:
        seen: list[str] = []
        for src in self._sources:
            for model in src.pinned_by(feature_ref):
                if model not in seen:
                    seen.append(model)
        return seen


class FeatureVersionPinned(FeatureStoreError):
    def __init__(self, feature_ref: str, models: list[str]) -> None:
        self.feature_ref, self.models = feature_ref, models
        super().__init__(
            f"cannot delete {feature_ref}: it is pinned by {len(models)} model version(s): {', '.join(models)}. "
            "Retire those model versions (and let their alias history age out) first."
        )


def check_deletable(feature_ref: str, pins: PinSource) -> None:
    models = pins.pinned_by(feature_ref)
    if models:
        raise FeatureVersionPinned(feature_ref, models)
