"""Mean ± std over seeds, and the JSON + markdown result files that docs/results/*.md are made of.

The JSON keeps every raw run next to the aggregates, so a table can always be re-rendered (or
re-aggregated differently) without re-training; the markdown is generated, never hand-edited.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Run = dict[str, float]
Results = Mapping[str, Mapping[str, Sequence[Run]]]  # dataset -> model -> one run dict per seed

TABLE_METRICS: tuple[str, ...] = ("HR@10", "NDCG@10", "NDCG@100")
# Run keys that describe a run rather than measure it.
_NOT_METRICS = frozenset({"seed"})


def aggregate(runs: Sequence[Run]) -> dict[str, tuple[float, float]]:
    """``{metric: (mean, std)}`` over runs; std is the sample std (ddof=1), 0.0 for a single run.

    Only numeric keys present in every run are aggregated (``seed`` is skipped); a NaN in any run
    makes that metric's mean NaN rather than silently dropping the run.
    """
    if not runs:
        return {}
    keys = [k for k in runs[0] if k not in _NOT_METRICS and all(k in r for r in runs)]
    out: dict[str, tuple[float, float]] = {}
    for key in keys:
        values = [r[key] for r in runs]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            continue
        n = len(values)
        mean = math.fsum(values) / n
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        out[key] = (mean, std)
    return out


def format_mean_std(mean: float, std: float, digits: int = 4) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def render_table(results: Results, metrics: Sequence[str] = TABLE_METRICS, digits: int = 4) -> str:
    """Markdown table ``dataset | model | metrics...`` as mean ± std; the best mean per dataset is bold.

    "Best" is per metric column among the dataset's models (higher is better for every metric
    here); ties are all bold; nothing is bold when a dataset has a single model.
    """
    header = "| dataset | model | " + " | ".join(metrics) + " |"
    lines = [header, "|" + "---|" * (2 + len(metrics))]
    for dataset, models in results.items():
        aggs = {model: aggregate(runs) for model, runs in models.items()}
        best: dict[str, float] = {}
        for m in metrics:
            means = [a[m][0] for a in aggs.values() if m in a and not math.isnan(a[m][0])]
            if len(aggs) > 1 and means:
                best[m] = max(round(v, digits) for v in means)
        for model, agg in aggs.items():
            cells = []
            for m in metrics:
                if m not in agg:
                    cells.append("–")
                    continue
                text = format_mean_std(*agg[m], digits=digits)
                cells.append(f"**{text}**" if m in best and round(agg[m][0], digits) == best[m] else text)
            lines.append(f"| {dataset} | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _runs_note(results: Results) -> str:
    counts = sorted({len(runs) for models in results.values() for runs in models.values()})
    n = "/".join(str(c) for c in counts) if counts else "0"
    return f"Mean ± sample std (ddof=1) over {n} run(s) (seeds); **bold** = best mean of the dataset for that metric."


def render_markdown_section(
    results: Results,
    title: str | None = None,
    protocol: str | None = None,
    heading_level: int = 2,
    metrics: Sequence[str] = TABLE_METRICS,
) -> str:
    """A self-contained markdown section (heading, protocol, table, note) for embedding in a results doc."""
    parts = []
    if title:
        parts.append(f"{'#' * heading_level} {title}\n")
    if protocol:
        parts.append(f"{protocol}\n")
    parts.append(render_table(results, metrics))
    parts.append("\n" + _runs_note(results))
    users = {
        dataset: sorted({int(r["users"]) for runs in models.values() for r in runs if "users" in r})
        for dataset, models in results.items()
    }
    listed = [f"{d}: {'/'.join(map(str, u))}" for d, u in users.items() if u]
    if listed:
        parts.append("Evaluated users — " + "; ".join(listed) + ".")
    return "\n".join(parts) + "\n"


def _jsonable(value: Any) -> Any:
    """NaN/inf are not JSON; write them as null so every JSON reader accepts the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return value


def results_payload(results: Results) -> dict[str, Any]:
    """dataset -> model -> {"runs": the raw runs, "aggregate": {metric: {"mean", "std"}}}: the
    "results" of every result JSON (this module's and the families' own reports)."""
    return {
        dataset: {
            model: {
                "runs": [dict(r) for r in runs],
                "aggregate": {k: {"mean": m, "std": s} for k, (m, s) in aggregate(runs).items()},
            }
            for model, runs in models.items()
        }
        for dataset, models in results.items()
    }


def _json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for run records: numpy scalars as numbers, paths as strings."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """Append one record to a run store (one JSON object a line), creating it if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(record, default=_json_default) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every record of a run store; none if it does not exist yet."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_report(
    path_json: Path,
    path_md: Path | None,
    results: Results,
    protocol: str,
    title: str,
) -> None:
    """Write the raw runs + aggregates as JSON and, if ``path_md`` is given, the markdown page."""
    payload = {"title": title, "protocol": protocol, "results": results_payload(results)}
    path_json = Path(path_json)
    path_json.parent.mkdir(parents=True, exist_ok=True)
    path_json.write_text(json.dumps(_jsonable(payload), indent=2) + "\n")
    if path_md is not None:
        path_md = Path(path_md)
        path_md.parent.mkdir(parents=True, exist_ok=True)
        body = render_markdown_section(results, title="Results", heading_level=2)
        note = f"Generated from `{path_json.name}`; do not edit by hand."
        path_md.write_text(f"# {title}\n\n{note}\n\n## Protocol\n\n{protocol}\n\n{body}")


def read_report(path_json: Path) -> tuple[str, str, dict[str, dict[str, list[Run]]]]:
    """``(title, protocol, results)`` from a JSON written by :func:`write_report` (for re-rendering)."""
    payload = json.loads(Path(path_json).read_text())
    results = {
        dataset: {
            model: [{k: (float("nan") if v is None else v) for k, v in r.items()} for r in entry["runs"]]
            for model, entry in models.items()
        }
        for dataset, models in payload["results"].items()
    }
    return payload["title"], payload["protocol"], results
