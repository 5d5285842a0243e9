"""Feast definitions: entities, one feature view per immutable version, feature services.

Generated from the version catalog (RECSYS_DATA_DIR/catalog), so `feast apply` here and
`recsys features apply` define the same objects.
"""

from feature_store.config import FeatureStoreSettings
from feature_store.feast_defs import build_objects
from feature_store.versions import VersionCatalog

_settings = FeatureStoreSettings()
for _obj in build_objects(VersionCatalog(_settings.catalog_dir), _settings.data_dir):
    globals()[_obj.name] = _obj  # type: ignore[attr-defined]
