"""The feature client as a service dependency: built once per process, timed per read."""

from __future__ import annotations

import time
from collections.abc import Sequence

from feature_store.config import FeatureStoreSettings
from feature_store.online import FeatureClient, FeatureRows, make_client
from services.kit.metrics import FEATURE_READ_LATENCY, MISSING_ENTITIES


class ServiceFeatureClient:
    """Wraps FeatureClient with metrics; one per service process."""

    def __init__(self, service: str, client: FeatureClient) -> None:
        self.service = service
        self.client = client
        self.store = client.reader.store_name

    @classmethod
    def from_settings(cls, service: str, settings: FeatureStoreSettings | None = None) -> ServiceFeatureClient:
        return cls(service, make_client(settings))

    def read(self, ref: str, entity_ids: Sequence[str], features: Sequence[str] | None = None) -> FeatureRows:
        start = time.perf_counter()
        rows = self.client.read(ref, entity_ids, features)
        view = ref.split(":", 1)[0]
        FEATURE_READ_LATENCY.labels(self.service, view, self.store).observe(time.perf_counter() - start)
        n_missing = int((~rows.present).sum())
        if n_missing:
            MISSING_ENTITIES.labels(view).inc(n_missing)
        return rows

    def close(self) -> None:
        self.client.close()
