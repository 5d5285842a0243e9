"""The registry as the feature store's PinSource (``recsys features retire`` asks it)."""

from __future__ import annotations

from feature_store.config import FeatureStoreSettings
from feature_store.retention import PinSource


def registry_pins(settings: FeatureStoreSettings | None = None) -> PinSource:
    """The registry configured by the environment (``RECSYS_DATA_DIR``, ``RECSYS_REGISTRY_URL``).

    Every registered model version pins the feature versions in its manifest, so retiring one of
    them is refused while any such model version exists.
    """
    from models.registry.registry import ModelRegistry

    return ModelRegistry.from_settings(settings)
