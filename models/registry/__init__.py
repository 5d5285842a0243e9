"""Model registry: immutable, hashed model versions with pinned feature versions, aliases and their history.

``ModelRegistry.from_settings().register(...)`` stores a version; ``set_alias`` moves ``champion``;
``resolve(name, "champion").onnx_path`` is what a service loads. See registry.py for the design.
"""

from models.registry.errors import AliasError, ArtifactTampered, ModelNotFound, RegistrationError, RegistryError
from models.registry.manifest import (
    AliasEvent,
    ArtifactFile,
    FeaturePin,
    ModelManifest,
    ModelVersion,
    TensorSpec,
    TrainingInfo,
)
from models.registry.registry import ModelRegistry

__all__ = [
    "AliasError",
    "AliasEvent",
    "ArtifactFile",
    "ArtifactTampered",
    "FeaturePin",
    "ModelManifest",
    "ModelNotFound",
    "ModelRegistry",
    "ModelVersion",
    "RegistrationError",
    "RegistryError",
    "TensorSpec",
    "TrainingInfo",
]
