"""Artifact files: copy-and-hash, ONNX inspection, contract checks, tamper checks.

Registration validates the *copy* it is about to store, not the caller's directory: the bytes
that were hashed are the bytes that were loaded in ONNX Runtime and checked against the
contract, so a trainer still writing into its output directory cannot slip in a different file.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from models.contracts import FamilyContract
from models.registry.errors import ArtifactTampered, RegistrationError
from models.registry.manifest import MANIFEST_FILE, ArtifactFile, ModelManifest, TensorSpec

DEFAULT_ONNX_FILE = "model.onnx"
_CHUNK = 1 << 20

# ONNX Runtime type strings -> the numpy names the contracts use.
_ORT_DTYPES = {
    "float": "float32",
    "double": "float64",
    "float16": "float16",
    "bfloat16": "bfloat16",
    "int8": "int8",
    "int16": "int16",
    "int32": "int32",
    "int64": "int64",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "uint64": "uint64",
    "bool": "bool",
    "string": "str",
}
_TENSOR_TYPE = re.compile(r"^tensor\((\w+)\)$")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _is_hidden(rel: PurePosixPath) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def artifact_files(root: Path) -> list[PurePosixPath]:
    """The files an artifact directory contributes: every regular file, recursively, except hidden ones.

    Hidden files (editor swap files, ``.DS_Store``, ``.ipynb_checkpoints``) are never model content,
    and the registry's own manifest copy is rewritten, so re-registering a copied version works.
    """
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            rel = PurePosixPath(Path(dirpath, fn).relative_to(root).as_posix())
            if _is_hidden(rel) or str(rel) == MANIFEST_FILE:
                continue
            if Path(dirpath, fn).is_file():
                out.append(rel)
    return out


def copy_and_hash(src: Path, dst: Path) -> dict[str, ArtifactFile]:
    """Copy the artifact into ``dst`` (a fresh staging dir), hashing the bytes as they are written.

    Copied files are made read-only at once; directories become read-only when the version is committed.
    """
    files: dict[str, ArtifactFile] = {}
    for rel in artifact_files(src):
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        h, size = hashlib.sha256(), 0
        with open(src / rel, "rb") as fin, open(target, "wb") as fout:
            while chunk := fin.read(_CHUNK):
                h.update(chunk)
                fout.write(chunk)
                size += len(chunk)
        os.chmod(target, 0o444)
        files[str(rel)] = ArtifactFile(sha256=h.hexdigest(), size=size)
    return files


def find_onnx(files: dict[str, ArtifactFile], source: Path) -> str:
    """``model.onnx`` if present, else the only top-level ``*.onnx``; anything else is ambiguous."""
    if DEFAULT_ONNX_FILE in files:
        return DEFAULT_ONNX_FILE
    candidates = sorted(f for f in files if "/" not in f and f.endswith(".onnx"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        have = ", ".join(sorted(files)) or "no files"
        raise RegistrationError(
            f"required file missing: no ONNX graph ({DEFAULT_ONNX_FILE}) in {source}; it has {have}"
        )
    raise RegistrationError(
        f"{source} has several ONNX graphs {candidates}; name the one to register {DEFAULT_ONNX_FILE}"
    )


def _graph_tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto a graph stores, including those in node attributes and subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g)
            for g in attr.graphs:
                yield from _graph_tensors(g)


def external_data_locations(onnx_path: Path) -> list[str] | None:
    """The external-weights files the graph references (``model.onnx.data``), or None if it does not parse."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception:
        return None  # ONNX Runtime will say what is wrong, in its own words
    locations: set[str] = set()
    for tensor in _graph_tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    return sorted(locations)


def check_external_data(
    onnx_file: str, locations: list[str], files: dict[str, ArtifactFile], source: Path
) -> list[str]:
    """External data paths relative to the artifact root; refuses missing ones and ones outside the artifact."""
    base = PurePosixPath(onnx_file).parent
    out = []
    for loc in locations:
        rel = PurePosixPath(loc.replace("\\", "/"))
        if rel.is_absolute() or ".." in rel.parts:
            raise RegistrationError(f"{onnx_file} references external data {loc!r} outside the artifact directory")
        full = str(base / rel) if str(base) != "." else str(rel)
        if full not in files:
            raise RegistrationError(
                f"required file missing: {full} (external weights referenced by {onnx_file}) is not in {source}; "
                "ship the .onnx.data file the exporter wrote next to the graph"
            )
        out.append(full)
    return out


def ort_dtype(type_str: str) -> str:
    m = _TENSOR_TYPE.match(type_str)
    return _ORT_DTYPES.get(m[1], m[1]) if m else type_str


def load_signature(onnx_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Load the graph in ONNX Runtime (with its external data next to it) and read its signature."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise RegistrationError(f"{onnx_path.name} does not load in onnxruntime: {exc}") from None

    def spec(arg: Any) -> TensorSpec:
        shape = tuple(d if isinstance(d, int | str) else "?" for d in (arg.shape or ()))
        return TensorSpec(name=arg.name, dtype=ort_dtype(arg.type), shape=shape)

    return [spec(a) for a in session.get_inputs()], [spec(a) for a in session.get_outputs()]


def contract_problems(contract: FamilyContract, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> list[str]:
    """What keeps a graph from matching its family's contract; empty when it matches."""
    problems: list[str] = []
    for kind, wanted, have in (("input", contract.inputs, inputs), ("output", contract.outputs, outputs)):
        by_name = {t.name: t for t in have}
        for c in wanted:
            t = by_name.get(c.name)
            if t is None:
                if c.required:
                    problems.append(f"{kind} {c.name!r} ({c.dtype}, rank {c.rank}) is missing")
                continue
            if t.dtype != c.dtype:
                problems.append(f"{kind} {c.name!r} has dtype {t.dtype}, expected {c.dtype}")
            if t.rank != c.rank:
                problems.append(f"{kind} {c.name!r} has rank {t.rank} {list(t.shape)}, expected rank {c.rank}")
    # A service feeds only contract inputs; a graph needing anything else would fail at request time.
    known = {c.name for c in contract.inputs}
    problems += [f"input {t.name!r} is not part of the contract" for t in inputs if t.name not in known]
    return problems


def check_contract(contract: FamilyContract, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
    problems = contract_problems(contract, inputs, outputs)
    if problems:
        have = "; ".join(
            [f"inputs: {', '.join(map(str, inputs)) or 'none'}", f"outputs: {', '.join(map(str, outputs)) or 'none'}"]
        )
        raise RegistrationError(
            f"ONNX signature does not match the {contract.family!r} contract: {'; '.join(problems)}. "
            f"The graph has {have}"
        )


def verify_artifact(manifest: ModelManifest, path: Path) -> None:
    """Re-hash every file; report missing, changed and unexpected files (all of them, not just the first)."""
    problems: list[str] = []
    if not path.is_dir():
        raise ArtifactTampered(manifest.ref, [f"artifact directory {path} is missing"])
    for rel, entry in sorted(manifest.files.items()):
        p = path / rel
        if not p.is_file():
            problems.append(f"{rel} is missing")
            continue
        size = p.stat().st_size
        if size != entry.size:
            problems.append(f"{rel} has {size} bytes, manifest says {entry.size}")
        elif sha256_file(p) != entry.sha256:
            problems.append(f"{rel} sha256 differs from the manifest")
    extra = [str(r) for r in artifact_files(path) if str(r) not in manifest.files]
    problems += [f"unexpected file {r}" for r in extra]
    stored = path / MANIFEST_FILE
    if stored.is_file():
        try:
            same = ModelManifest.model_validate_json(stored.read_text()) == manifest
        except ValueError:
            same = False
        if not same:
            problems.append(f"{MANIFEST_FILE} differs from the registry's manifest")
    else:
        problems.append(f"{MANIFEST_FILE} is missing")
    if problems:
        raise ArtifactTampered(manifest.ref, problems)


def make_read_only(root: Path) -> None:
    """Files 0444 and directories 0555, bottom-up: nobody appends a file to a registered version by accident."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for fn in filenames:
            os.chmod(Path(dirpath, fn), 0o444)
        os.chmod(dirpath, 0o555)


def _force_writable(func: Any, path: str, _exc: Any) -> None:
    os.chmod(os.path.dirname(path) or ".", stat.S_IRWXU)
    if os.path.isdir(path):
        os.chmod(path, stat.S_IRWXU)
    func(path)


def remove_tree(path: Path) -> None:
    """rmtree that also removes read-only trees (an orphaned version dir from a crashed registration)."""
    if path.exists():
        shutil.rmtree(path, onerror=_force_writable)
