"""The manifest: everything needed to know what a model version is, where it came from and what it needs.

A manifest is written once, at registration, and never changes (the models are frozen). It is
stored as JSON in the registry database and, for humans and disaster recovery, as
``registry_manifest.json`` next to the artifact files.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

if TYPE_CHECKING:
    import onnxruntime as ort

MANIFEST_FILE = "registry_manifest.json"
MANIFEST_FORMAT = 1


class TensorSpec(BaseModel):
    """One graph input or output as ONNX Runtime reports it; symbolic dims stay strings (``"batch"``)."""

    model_config = ConfigDict(frozen=True)
    name: str
    dtype: str  # numpy name: "int64", "float32", "bool" (the contract's vocabulary)
    shape: tuple[int | str, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __str__(self) -> str:
        return f"{self.name} {self.dtype} [{', '.join(str(d) for d in self.shape)}]"


class FeaturePin(BaseModel):
    """A feature version the model was trained on and must be served with.

    The schema hash and basis fingerprint are copied from the catalog at registration, so a
    later reader can check that what it serves is structurally what the model saw, even if the
    catalog directory were rebuilt.
    """

    model_config = ConfigDict(frozen=True)
    ref: str  # "lte_avg@v1"
    schema_hash: str
    basis_fingerprint: str | None = None


class TrainingInfo(BaseModel):
    """Which data the model was trained on: dataset, an id of the exact extract, and its time window.

    Extra keys (a trainer's own bookkeeping) are kept, not rejected, so trainers can add detail
    without a registry change.
    """

    model_config = ConfigDict(frozen=True, extra="allow")
    dataset: str
    data_id: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, ts: datetime | None) -> datetime | None:
        # Naive times are taken as UTC (what the data pipelines write), so windows always compare.
        return ts.replace(tzinfo=UTC) if ts is not None and ts.tzinfo is None else ts

    @model_validator(mode="after")
    def _window_order(self) -> TrainingInfo:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError(f"training window starts after it ends ({self.start} > {self.end})")
        return self


class ArtifactFile(BaseModel):
    model_config = ConfigDict(frozen=True)
    sha256: str  # hex digest
    size: int


class ModelManifest(BaseModel):
    """The immutable description of one registered model version."""

    model_config = ConfigDict(frozen=True)
    format: int = MANIFEST_FORMAT
    family: str
    name: str
    version: int
    created_at: datetime
    # The graph file and its external-weights files (``model.onnx.data`` from the dynamo exporter).
    onnx_file: str
    onnx_sha256: str
    onnx_data_files: tuple[str, ...] = ()
    # Every file of the artifact (graph, weights, item_index.json ...), relative path -> hash and size.
    files: dict[str, ArtifactFile]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    feature_refs: tuple[FeaturePin, ...] = ()
    training: TrainingInfo
    metrics: dict[str, float] = Field(default_factory=dict)
    params: dict[str, JsonValue] = Field(default_factory=dict)
    git_sha: str = "unknown"
    description: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    @property
    def pinned_refs(self) -> list[str]:
        return [p.ref for p in self.feature_refs]


class AliasEvent(BaseModel):
    """One change of an alias. ``to_version`` is None when the alias was deleted, ``from_version`` when it was new."""

    model_config = ConfigDict(frozen=True)
    id: int | None = None
    name: str
    alias: str
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str = ""
    at: datetime


@dataclass(frozen=True)
class ModelVersion:
    """A resolved model version: its manifest and the directory holding its files."""

    manifest: ModelManifest
    path: Path

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def ref(self) -> str:
        return self.manifest.ref

    @property
    def onnx_path(self) -> Path:
        return self.path / self.manifest.onnx_file

    def file(self, relpath: str) -> Path:
        """Path of one of the artifact's files; refuses names the manifest does not list."""
        if relpath not in self.manifest.files:
            raise KeyError(f"{self.ref} has no file {relpath!r}; it has {sorted(self.manifest.files)}")
        return self.path / relpath

    def verify(self) -> None:
        """Re-hash every file against the manifest; raises ArtifactTampered."""
        from models.registry.artifacts import verify_artifact

        verify_artifact(self.manifest, self.path)

    def load_session(self, verify: bool = True, **session_kwargs: Any) -> ort.InferenceSession:
        """An ONNX Runtime session on the graph, after checking the files are what was registered."""
        import onnxruntime as ort

        if verify:
            self.verify()
        session_kwargs.setdefault("providers", ["CPUExecutionProvider"])
        return ort.InferenceSession(str(self.onnx_path), **session_kwargs)
