"""Semantic basis: deterministic builders, fingerprints, immutable artifacts, the offline encoder.

Everything here is fast except ``test_minilm_encoder_offline``, which really loads the packaged
MiniLM model (~10-15 s on two cores) because that is the one thing a fake cannot prove: that the
encoder works with no network and puts related texts close together.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_store.pipelines import basis as B
from feature_store.pipelines.basis import (
    BasisExistsError,
    BasisNotFoundError,
    BuiltBasis,
    SemanticBasis,
    basis_fingerprint,
    build_attribute_basis,
    build_random_basis,
    build_text_basis,
    fit_pca,
    hash_gaussian,
    item_text_with_attributes,
    list_bases,
    load_basis,
    save_basis,
)
from feature_store.pipelines.basis_eval import EvalSplit, make_split, rank_metrics
from feature_store.pipelines.text_encoder import EmbeddingCache, TextEncoder, text_key

REPO = Path(__file__).resolve().parents[2]


def _items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["m1", "m2", "m3", "m4", "m5"],
            "text": ["Toy Story (1995)", "Heat (1995)", "", "Jazz on a Summer's Day", "Alien (1979)"],
            "attributes": [
                ["genre:Animation", "genre:Comedy"],
                ["genre:Action", "genre:Crime"],
                [],
                ["genre:Documentary", "genre:Musical", "lang:en"],
                ["genre:Horror", "genre:Sci-Fi"],
            ],
        }
    )


# --------------------------------------------------------------------------- attribute basis

_ATTR_SCRIPT = """
import sys, numpy as np, pandas as pd
np.random.seed(int(sys.argv[1]))  # global RNG state must not matter
from feature_store.pipelines.basis import build_attribute_basis
items = pd.DataFrame({"item_id": ["a", "b", "c"],
                      "attributes": [["genre:Comedy", "genre:Drama"], ["genre:Drama"], ["brand:17", "genre:Comedy"]]})
b = build_attribute_basis(items, 16)
print(b.fingerprint)
"""


def test_attribute_basis_is_identical_across_processes() -> None:
    """Different hash seeds and numpy RNG states in fresh interpreters give the same basis bytes."""
    fps = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", _ATTR_SCRIPT, seed], cwd=REPO, env=env, capture_output=True, text=True, check=True
        )
        fps.add(out.stdout.strip())
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "attributes": [["genre:Comedy", "genre:Drama"], ["genre:Drama"], ["brand:17", "genre:Comedy"]],
        }
    )
    fps.add(build_attribute_basis(items, 16).fingerprint)
    assert len(fps) == 1


def test_hash_gaussian_is_pinned() -> None:
    """The token-vector spec (sha256 counter mode + Box-Muller) must never drift: bases depend on it."""
    v = hash_gaussian("genre:Comedy", 4).astype(np.float32)
    np.testing.assert_array_equal(v, np.array([0.21177685, 0.07772308, 0.35287061, -0.55948675], dtype=np.float32))
    assert hash_gaussian("genre:Comedy", 64)[:4].tolist() != v.tolist()  # scaled by 1/sqrt(dim)
    big = np.stack([hash_gaussian(f"t{i}", 64) for i in range(500)]) * 8.0
    assert abs(big.mean()) < 0.02 and abs(big.std() - 1.0) < 0.02


@pytest.mark.parametrize("weighting", ["idf", "count"])
def test_attribute_basis_independent_of_item_and_token_order(weighting: str) -> None:
    items = _items()
    base = build_attribute_basis(items, 32, weighting)
    shuffled = items.iloc[[4, 2, 0, 3, 1]].copy()
    shuffled["attributes"] = [list(reversed(a)) for a in shuffled["attributes"]]
    other = build_attribute_basis(shuffled, 32, weighting)
    np.testing.assert_array_equal(
        base.lookup(["m1", "m2", "m3", "m4", "m5"]), other.lookup(["m1", "m2", "m3", "m4", "m5"])
    )
    assert base.encoder == f"attr-hash-v1|32|{weighting}"


def test_attribute_basis_rows() -> None:
    b = build_attribute_basis(_items(), 32)
    norms = np.linalg.norm(b.vectors, axis=1)
    assert norms[2] == 0.0  # no attributes -> zero row
    np.testing.assert_allclose(np.delete(norms, 2), 1.0, rtol=1e-6)
    # idf: the tokens are stored with their weights so the artifact documents its own encoding.
    assert list(b.params["tokens"]) == sorted(b.params["tokens"])
    assert b.reduction["weighting"] == "idf" and b.reduction["n_empty"] == 1
    # kinds filter: only genre tokens; m4's lang token no longer contributes.
    g = build_attribute_basis(_items(), 32, kinds=["genre"])
    assert "lang:en" not in set(g.params["tokens"]) and g.encoder.endswith("|genre")
    # shared tokens -> positive similarity, disjoint -> near zero.
    items = pd.DataFrame({"item_id": ["x", "y", "z"], "attributes": [["a:1", "a:2"], ["a:1", "a:3"], ["b:9"]]})
    v = build_attribute_basis(items, 256, "count").vectors
    assert v[0] @ v[1] > 0.3 and abs(v[0] @ v[2]) < 0.25


def test_random_basis_is_content_free_and_stable() -> None:
    a, b = build_random_basis(_items(), 16), build_random_basis(_items().iloc[::-1], 16)
    np.testing.assert_array_equal(a.lookup(["m1", "m5"]), b.lookup(["m1", "m5"]))
    np.testing.assert_allclose(np.linalg.norm(a.vectors, axis=1), 1.0, rtol=1e-6)


def test_item_text_with_attributes() -> None:
    texts = item_text_with_attributes(_items())
    assert texts[0] == "Toy Story (1995). genre: Animation, Comedy."
    assert texts[2] == ""
    assert texts[3] == "Jazz on a Summer's Day. genre: Documentary, Musical. lang: en."
    assert (
        item_text_with_attributes(_items(), kinds=["genre"])[3]
        == "Jazz on a Summer's Day. genre: Documentary, Musical."
    )


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_changes_with_any_input() -> None:
    ids = np.array(["a", "b"])
    vec = np.eye(2, 3, dtype=np.float32)
    fp = basis_fingerprint("enc", ids, vec)
    assert fp == basis_fingerprint("enc", ids.copy(), vec.copy())
    assert fp != basis_fingerprint("enc2", ids, vec)
    assert fp != basis_fingerprint("enc", np.array(["a", "c"]), vec)
    assert fp != basis_fingerprint("enc", ids[::-1], vec)
    bumped = vec.copy()
    bumped[1, 2] = np.nextafter(np.float32(0), np.float32(1))  # one ulp
    assert fp != basis_fingerprint("enc", ids, bumped)
    with pytest.raises(ValueError, match="fingerprint mismatch"):
        SemanticBasis("enc", ids, bumped, fingerprint=fp)


# --------------------------------------------------------------------------- artifacts


def test_save_load_roundtrip(tmp_path: Path) -> None:
    b = build_attribute_basis(_items(), 16)
    path = save_basis(b, tmp_path)
    assert path == tmp_path / b.fingerprint
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["fingerprint"] == b.fingerprint and manifest["dim"] == 16 and manifest["n_items"] == 5
    assert manifest["encoder"] == b.encoder and manifest["reduction"]["weighting"] == "idf" and manifest["created_at"]
    loaded = load_basis(tmp_path, b.fingerprint)
    assert isinstance(loaded, BuiltBasis) and isinstance(loaded, SemanticBasis)
    assert loaded.fingerprint == b.fingerprint and loaded.encoder == b.encoder
    np.testing.assert_array_equal(loaded.vectors, b.vectors)
    np.testing.assert_array_equal(loaded.item_ids, b.item_ids)
    np.testing.assert_array_equal(loaded.params["token_weights"], b.params["token_weights"])
    assert load_basis(tmp_path, b.fingerprint[:10]).fingerprint == b.fingerprint  # unique prefix
    # A plain SemanticBasis (no reduction params) saves too.
    plain = SemanticBasis("plain", np.array(["x"]), np.ones((1, 2), dtype=np.float32))
    assert load_basis(tmp_path, save_basis(plain, tmp_path).name).params == {}
    assert {m["fingerprint"] for m in list_bases(tmp_path)} == {b.fingerprint, plain.fingerprint}


def test_save_is_idempotent_and_immutable(tmp_path: Path) -> None:
    b = build_attribute_basis(_items(), 16)
    path = save_basis(b, tmp_path)
    mtime = (path / "vectors.npy").stat().st_mtime_ns
    assert save_basis(build_attribute_basis(_items(), 16), tmp_path) == path  # same basis: no-op
    assert (path / "vectors.npy").stat().st_mtime_ns == mtime
    assert not (path / "vectors.npy").stat().st_mode & 0o222  # files are read-only

    # Same vectors, different reduction parameters under the same fingerprint: refused.
    forged = BuiltBasis(b.encoder, b.item_ids, b.vectors, params={"token_weights": np.zeros(3)})
    with pytest.raises(BasisExistsError, match="refusing to overwrite"):
        save_basis(forged, tmp_path)

    # A directory squatting on the fingerprint with other content: refused, left untouched.
    other = build_attribute_basis(_items(), 8)
    squat = tmp_path / other.fingerprint
    squat.mkdir()
    (squat / "manifest.json").write_text("{}")
    with pytest.raises(BasisExistsError):
        save_basis(other, tmp_path)
    assert (squat / "manifest.json").read_text() == "{}"


def test_load_detects_tampering(tmp_path: Path) -> None:
    b = build_attribute_basis(_items(), 16)
    path = save_basis(b, tmp_path)
    vec = path / "vectors.npy"
    vec.chmod(0o644)
    np.save(vec, b.vectors * 2)
    with pytest.raises(ValueError, match="fingerprint mismatch"):
        load_basis(tmp_path, b.fingerprint)


def test_unknown_fingerprint_lists_available(tmp_path: Path) -> None:
    with pytest.raises(BasisNotFoundError, match="available: none"):
        load_basis(tmp_path, "0" * 64)
    a = save_basis(build_attribute_basis(_items(), 16), tmp_path).name
    r = save_basis(build_random_basis(_items(), 16), tmp_path).name
    with pytest.raises(BasisNotFoundError) as err:
        load_basis(tmp_path, "f" * 64)
    assert a in str(err.value) and r in str(err.value) and "attr-hash-v1|16|idf" in str(err.value)


# --------------------------------------------------------------------------- PCA / text basis


def test_fit_pca_deterministic_with_sign_convention() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 24)) @ rng.normal(size=(24, 24))
    mean, comps, evr = fit_pca(x, 6)
    mean2, comps2, _ = fit_pca(x.copy(), 6)
    np.testing.assert_array_equal(comps, comps2)
    np.testing.assert_array_equal(mean, mean2)
    # Row order does not change the axes beyond rounding, and never their signs.
    _, comps_perm, _ = fit_pca(x[rng.permutation(200)], 6)
    np.testing.assert_allclose(comps_perm, comps, atol=1e-8)
    pivots = comps[np.arange(6), np.argmax(np.abs(comps), axis=1)]
    assert (pivots > 0).all()
    np.testing.assert_allclose(comps @ comps.T, np.eye(6), atol=1e-10)
    assert np.all(np.diff(evr) <= 0) and 0 < evr.sum() <= 1
    with pytest.raises(ValueError):
        fit_pca(x[:5], 6)


def _prefilled_cache(cache_dir: Path, texts: list[str], dim: int = 384) -> None:
    """Put deterministic fake embeddings in the encoder cache so no model is needed."""
    enc = TextEncoder(cache_dir=cache_dir)
    rng = np.random.default_rng(3)
    vec = rng.normal(size=(len(texts), dim)).astype(np.float32)
    EmbeddingCache(enc.cache.directory, enc.namespace, dim).put([text_key(t) for t in texts], vec)


def test_text_basis_from_cache_is_deterministic(tmp_path: Path) -> None:
    items = _items()
    _prefilled_cache(tmp_path, [t for t in items["text"] if t])
    a = build_text_basis(items, dim=3, cache_dir=tmp_path, show_progress=False)
    b = build_text_basis(items, dim=3, cache_dir=tmp_path, show_progress=False)
    assert a.fingerprint == b.fingerprint and a.encoder == "text:all-MiniLM-L6-v2|pca3"
    norms = np.linalg.norm(a.vectors, axis=1)
    assert norms[2] == 0.0  # empty text -> zero row
    np.testing.assert_allclose(np.delete(norms, 2), 1.0, rtol=1e-6)
    assert a.params["pca_components"].shape == (3, 384) and a.params["pca_mean"].shape == (384,)
    assert a.reduction["fit_rows"] == 4 and a.reduction["n_empty"] == 1
    loaded = load_basis(tmp_path / "bases", save_basis(a, tmp_path / "bases").name)
    np.testing.assert_array_equal(loaded.params["pca_components"], a.params["pca_components"])
    # The stored PCA reproduces the vectors from the raw embeddings.
    raw = TextEncoder(cache_dir=tmp_path).encode(list(items["text"]))
    np.testing.assert_allclose(
        B.project_pca(raw, loaded.params["pca_mean"], loaded.params["pca_components"]), a.vectors, atol=1e-6
    )


def test_basis_import_does_not_load_torch() -> None:
    code = (
        "import sys, feature_store.pipelines.basis, feature_store.pipelines.text_encoder;"
        "print('torch' in sys.modules, 'sentence_transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------- evaluation protocol


def test_split_and_metrics_protocol() -> None:
    catalogue = np.array([str(i) for i in range(20)])
    # user u: 10 events on items 0..9 at increasing times; c = 8, lag 2 -> window 0..5, targets 8, 9.
    inter = pd.DataFrame({"user_id": "u", "item_id": [str(i) for i in range(10)], "ts": np.arange(10)})
    split = make_split(inter, catalogue, frac=0.8, lag=2)
    assert isinstance(split, EvalSplit) and list(split.users) == ["u"]
    assert split.window[0].tolist() == list(range(6))
    assert split.seen[0].tolist() == list(range(8)) and split.targets[0].tolist() == [8, 9]

    onehot = np.zeros(20)
    onehot[[8, 9]] = 1.0  # a 20-item catalogue: items 10..19 are unseen non-targets
    perfect = rank_metrics(lambda idx: np.tile(onehot, (len(idx), 1)), split, 20)
    assert perfect["ndcg@10"][0] == pytest.approx(1.0) and perfect["recall@50"][0] == 1.0
    worst = rank_metrics(lambda idx: np.tile(-onehot, (len(idx), 1)), split, 20)
    # the targets rank 11th and 12th of the 12 unseen items: outside the top 10, inside the top 50
    assert worst["ndcg@10"][0] == 0.0 and worst["recall@50"][0] == 1.0
    assert worst["ndcg@100"][0] == pytest.approx((1 / np.log2(12) + 1 / np.log2(13)) / (1 + 1 / np.log2(3)))


# --------------------------------------------------------------------------- the real encoder


@pytest.mark.slow
def test_minilm_encoder_offline(tmp_path: Path) -> None:
    """Loads the packaged all-MiniLM-L6-v2 from site-packages with HF offline mode; ~10-15 s."""
    enc = TextEncoder(cache_dir=tmp_path, show_progress=False)
    texts = ["jazz saxophone album", "bebop trumpet record", "hiking tent", "camping stove", ""]
    v = enc.encode(texts)
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert v.shape == (5, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v[:4], axis=1), 1.0, rtol=1e-5)
    assert not v[4].any()  # empty text: zero row, never sent to the model
    assert v[0] @ v[1] > v[0] @ v[2] + 0.1
    assert v[2] @ v[3] > v[2] @ v[1]
    assert enc.stats["encoded"] == 4
    # A fresh encoder with the same cache never runs the model.
    again = TextEncoder(cache_dir=tmp_path, show_progress=False)
    np.testing.assert_array_equal(again.encode(texts), v)
    assert again.stats["encoded"] == 0 and again._model is None
