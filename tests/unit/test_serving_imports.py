"""The serving path must not import Feast (7-11 s) or sentence-transformers (~10 s)."""

from __future__ import annotations

import subprocess
import sys

from feature_store.config import REPO_ROOT


def test_serving_path_does_not_import_feast() -> None:
    code = (
        "import sys; import services.features.app as a; a.build_app(); "
        "import feature_store.online, feature_store.online.redis, feature_store.online.sqlite; "
        "heavy = [m for m in ('feast', 'sentence_transformers', 'torch', 'transformers') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"serving path imported {out.stdout.strip()}"
