"""Where each field of a served CTR model comes from, shared by the training join and the service.

A model's ``params.json`` carries ``field_sources``: model field -> source, one of

* ``request:user_id`` / ``request:item_id``: the request's user and each candidate;
* ``context:<name>``: the request's ``context[<name>]``;
* ``<view>@v<n>:<feature>`` (optionally ``|<transform>``): a pinned feature version, read for the
  user (user views) or for every candidate (item views).

The same :func:`transform` turns a feature value into the model's raw field value at training and at
serving time, so the two cannot drift. Values become vocabulary keys through
``models.ctr.data.encode_rows``; anything absent or unseen maps to the field's out-of-vocabulary id.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from feature_store.versions import FeatureStoreError, parse_ref

TRANSFORMS = ("log2_band",)


def transform(name: str | None, value: object) -> object:
    """``log2_band``: a count -> ``"b<floor(log2(1 + count))>"`` (popularity bands, 0, 1, 2-3, 4-7 ...)."""
    if name is None or value is None:
        return value
    if name == "log2_band":
        return f"b{int(math.log2(1 + max(int(value), 0)))}"  # type: ignore[call-overload]
    raise ValueError(f"unknown field transform {name!r}; known: {', '.join(TRANSFORMS)}")


@dataclass(frozen=True)
class FieldSource:
    field: str
    kind: str  # "request", "context" or "feature"
    name: str  # request key, context key or feature name
    ref: str | None = None  # "<view>@v<n>" for features
    transform: str | None = None

    @classmethod
    def parse(cls, field: str, source: str) -> FieldSource:
        spec, _, fn = source.partition("|")
        fn = fn or None
        if fn is not None and fn not in TRANSFORMS:
            raise ValueError(f"field {field}: unknown transform {fn!r}; known: {', '.join(TRANSFORMS)}")
        if spec in ("request:user_id", "request:item_id"):
            return cls(field, "request", spec.split(":", 1)[1], transform=fn)
        if spec.startswith("context:") and len(spec) > len("context:"):
            return cls(field, "context", spec.split(":", 1)[1], transform=fn)
        try:
            view, version, feature = parse_ref(spec)
        except FeatureStoreError as exc:
            raise ValueError(
                f"field {field}: source {source!r} is none of request:user_id, request:item_id, context:<name>, "
                f"<view>@v<n>:<feature>"
            ) from exc
        if feature is None:
            raise ValueError(f"field {field}: feature source {spec!r} must name a feature (<view>@v<n>:<feature>)")
        return cls(field, "feature", feature, ref=f"{view}@v{version}", transform=fn)


def parse_sources(field_sources: Mapping[str, str]) -> list[FieldSource]:
    return [FieldSource.parse(f, s) for f, s in field_sources.items()]


def context_fields(sources: list[FieldSource]) -> set[str]:
    return {s.name for s in sources if s.kind == "context"}


def pinned_refs(sources: list[FieldSource]) -> list[str]:
    """The feature versions a model reads, each once, in order of first use."""
    return list(dict.fromkeys(s.ref for s in sources if s.ref))
