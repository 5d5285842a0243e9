"""How every service process starts: ``python -m services.kit.serve <uvicorn arguments>``.

It is uvicorn's own command line (services/commands.py builds the arguments), run after one step
that must happen in the master process, once, before any worker exists: emptying the Prometheus
multiprocess directory (PROMETHEUS_MULTIPROC_DIR). ``/metrics`` sums every file in it, so files
left by an earlier run (a restart, a crashed deploy) would be added to this run's counters, and no
worker can remove them safely once another worker may have written its own. Only prometheus_client's
``*.db`` files are removed, so a directory set by mistake to a shared path loses nothing else.

This module must not import services.kit.metrics (or anything that does): that would create this
process's metric files before the directory is emptied.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path


def prepare_multiprocess_dir(env: Mapping[str, str] = os.environ) -> Path | None:
    """Create PROMETHEUS_MULTIPROC_DIR if needed and remove metric files of earlier runs."""
    raw = env.get("PROMETHEUS_MULTIPROC_DIR")
    if not raw:
        return None
    path = Path(raw)
    path.mkdir(parents=True, exist_ok=True)
    for f in path.glob("*.db"):
        f.unlink(missing_ok=True)
    return path


def main(argv: list[str] | None = None) -> None:
    prepare_multiprocess_dir()
    from uvicorn.main import main as uvicorn_main

    uvicorn_main.main(args=sys.argv[1:] if argv is None else argv, prog_name="python -m services.kit.serve")


if __name__ == "__main__":
    main()
