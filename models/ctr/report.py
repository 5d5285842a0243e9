"""docs/results/ctr.md + ctr.json + ctr_scaling.png, generated from ``var/experiments/ctr/runs.jsonl``.

Every number comes from a recorded run; the page is re-rendered after each run (and by
``python -m models.ctr.experiment --render-only``). The hand-written parts are the protocol and
the notes below; keep them true to the runs.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from feature_store.config import REPO_ROOT
from models.ctr.experiment import DEFAULT_ROOT, SCALING_MODELS, TABLE_MODELS, read_runs
from models.eval.report import _jsonable, aggregate, format_mean_std

DOC_MD = REPO_ROOT / "docs" / "results" / "ctr.md"
DOC_JSON = REPO_ROOT / "docs" / "results" / "ctr.json"
DOC_PNG = REPO_ROOT / "docs" / "results" / "ctr_scaling.png"
TITLE = "CTR ranking: LR, FM, DeepFM, DCNv2 and SSR (explicit sparsity) on Frappe"
DENSE_BASELINES = ("DeepFM", "DCNv2", "DNN")

PROTOCOL = """\
* **Data (Frappe)**: `../shared/datasets/frappe`, read by the shared adapter
  (`feature_store.sources.adapters.ctr.load_frappe`). As its README prescribes, the NFM
  *validation* file ({train_file_rows:,} rows) is our training data and the NFM *test* file
  ({test_rows:,} rows) our test set. Early stopping and calibration use a validation set carved
  out of the training file: a fixed random {valid_pct:.0f}% (seed {split_seed}, the same for every model
  and seed), leaving {fit_rows:,} rows to fit on. 10 one-hot fields (user, item, 8 context fields);
  about one third positives (the NFM authors sampled two negatives per positive, so probabilities
  are calibrated to that sampled distribution, not to a real click rate).
* **Ids**: one shared id space, one OOV id per field; vocabularies come from the fitting rows
  only ({n_features:,} ids). Test values unseen in the fitting rows map to their field's OOV id
  (test: {test_oov}).
* **Training (all models)**: embedding dim {embed_dim}, batch {batch}, Adam lr {lr} (the BARS/FuxiCTR
  settings), BCE loss, dropout {dropout} in every MLP/SSR layer, no weight decay or embedding L2 (a
  probe on the deep MLP with embedding L2 1e-4 / 1e-3 / 1e-2 moved validation AUC by less than
  0.001). Up to {epochs} epochs; validation AUC after every epoch, stop after {patience} epochs without
  improvement, best epoch restored. One torch thread per process. Seeds change initialisation,
  dropout and batch order; the split and SSR-S's random subsets (`filter_seed` 0, part of the
  architecture) are fixed.
* **Metrics**: test AUC (ties averaged) and LogLoss of the raw `sigmoid(logit)`, mean ± sample
  std (ddof 1) over seeds. "cal" columns: after Platt scaling fitted on the validation set
  (`models/ctr/calibrate.py`), the form that is exported; ECE uses 15 equal-width bins.
* **Budgets**: DeepFM / DCNv2 use the BARS widths (MLP 400-400-400; DCNv2 adds 3 full-rank cross
  layers, in parallel with the MLP). SSR-S and SSR-D get a fused width chosen so their dense
  (non-embedding) parameter count matches DCNv2's within 1%. All models share the same
  embedding table size; "dense params" below excludes the embedding tables, "total" includes them.
* **SSR as implemented** (`models/ctr/model.py`; the paper has no public code or settings, so this
  is our reading): 2 SSR blocks, each = {views} parallel views that keep {keep_pct:.0f}% of the block's input
  dimensions (SSR-S: a fixed random subset per view; SSR-D: ICS, {ics_iters} rounds of lateral inhibition
  by the view's mean response, then the top-k survivors per example), a small dense layer per view,
  and a dense fusion layer; then a linear head.
"""

NOTES = """\
* **Reading the results (runs of 2026-11-24).** On this Frappe split the goal is **not met**:
  SSR never beats the best dense baseline. In the first table (patience 3) SSR-S trails DeepFM
  and DCNv2 by about 0.001 AUC, more than the seed std. In the tuned and the patience-10 tables
  the "matches" verdict comes only from large seed stds (runs that did or did not take off, next
  note), and SSR-S's mean stays below both DeepFM and DCNv2 in every table. SSR-D (ICS) is the
  weakest deep model everywhere, never leaves the plateau, and is the slowest to train and serve.
  FM, with no dense part, is within the seed std of DCNv2 and SSR-S (or above them) in every table.
* **Early stopping decides the deep models' numbers more than the architecture.** Their
  validation AUC sits on a plateau (~0.931) for 5-10 epochs; a run that outlasts it climbs to
  ~0.94 validation. With patience 3 almost every run stops on the plateau, which is why the first
  two tables are so tight. With patience 10, DeepFM took off on all three seeds, DCNv2 and SSR-S
  on two of three (the "epochs (best)" column), SSR-D on none. The price is over-confidence: raw
  test LogLoss rises to ~0.47-0.54 and even after Platt scaling stays above the patience-3 runs.
  Which protocol to serve with is a product choice (AUC vs calibrated LogLoss); a firmer
  SSR-vs-dense verdict needs more seeds under patience 10 than we had time for.
* **Scaling.** Nothing improves steadily with size on 46k training rows. With 3 seeds per cell for
  DCNv2 and SSR-S, the two cells with a large std (SSR-S at width 128, DCNv2 at 512) each hold one
  seed that took off past the plateau (above); without those, both curves are flat within ~0.002
  and drift down at the largest size, and SSR-S sits at or below DCNv2. DNN and SSR-D (1 seed) are
  flat too. So the "keeps improving where dense flattens" claim is not reproduced at this data
  size; the paper's evidence is on billion-row industrial data, which we do not have.
* **SSR choices.** Views (2/4/8), keep ratio (0.25-1.0) and ICS rounds (0-4) move validation AUC by
  at most ~0.002 around the defaults, close to seed noise; keep = 1.0 (no filter at all) is as
  good as 0.5 for SSR-S, so on Frappe the filter itself neither helps nor hurts. The table keeps
  4 views, keep 0.5, 2 ICS rounds (chosen before the ablation, and no ablation setting beat them
  by more than noise on validation except ICS with 1 round, single seed).
* **Calibration.** Platt scaling on the validation set lowers test LogLoss for every model; test
  ECE (15 bins) improves for LR and for the tuned SSR-D/DCNv2 but gets slightly worse for the
  others (FM included), i.e. the validation-fitted map does not transfer perfectly to the test file
  (a different NFM split). The exported graphs contain the Platt map regardless; params.json records it.
* **Dropout** was the only tuned setting (embedding L2 was probed and did nothing). The choice is
  on one seed's validation AUC, and the DeepFM choice (no dropout) did not hold up on seeds 1-2.
* SSR is our reading of a paper without public code: the view/filter/fuse structure and the two
  filters follow its description; the exact ICS update (soft threshold by the mean response,
  then a hard top-k) is our choice.
* Frappe here is the 57k-row NFM validation file, not the 202k-row NFM train file that BARS uses
  (it is over the size limit of the shared copy), so absolute AUCs are below the published
  Frappe numbers (about 0.98); the comparison between models is in one harness, on one split.
* Criteo: the head sample only proves the 13 numeric + 26 categorical format end to end (load,
  train a few epochs, export, score raw rows with ONNX Runtime); its AUC is on 200 rows and means
  nothing.
* Latency (one thread, shared machine, so only ratios within a row mean much): ONNX Runtime is
  2.5-4x faster than torch eager at batch 1 for every model; at batch 64 it is faster for all but
  SSR-D (even); at batch 512 it is faster for DCNv2, DeepFM and SSR-S, even for LR, and slightly
  slower for FM and SSR-D. SSR-D's per-example competition (a [views x batch x dims] tensor and a
  top-k per block) makes it 3-10x slower than SSR-S at batch 64-512: a serving cost, with no
  accuracy to pay for it here.
"""


def _latest(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last record per (dataset, kind, model, width, seed): a re-run replaces the earlier one."""
    keyed: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in records:
        keyed[(r["dataset"], r.get("kind", "table"), r["model"], r.get("width"), r["seed"])] = r
    return list(keyed.values())


def _numeric(r: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in r.items() if isinstance(v, int | float) and not isinstance(v, bool) and k != "width"}


def grouped(records: list[dict[str, Any]], dataset: str, kind: str) -> dict[tuple[str, int | None], list[dict]]:
    out: dict[tuple[str, int | None], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["dataset"] == dataset and r.get("kind", "table") == kind:
            out[(r["model"], r.get("width"))].append(r)
    for runs in out.values():
        runs.sort(key=lambda r: r["seed"])
    return out


def _ms(agg: dict[str, tuple[float, float]], key: str, digits: int = 4, n_runs: int = 2) -> str:
    """``mean ± std``; a single run has no std, so only its value is shown."""
    if key not in agg or math.isnan(agg[key][0]):
        return "–"
    if n_runs < 2:
        return f"{agg[key][0]:.{digits}f}"
    return format_mean_std(*agg[key], digits=digits)


def model_table(groups: dict[tuple[str, int | None], list[dict]], order: Sequence[str]) -> tuple[str, list[dict]]:
    """Markdown table (mean ± std over seeds) and the aggregates behind it."""
    lines = [
        "| model | dense params | total params | seeds | test AUC | test LogLoss | LogLoss (cal) | ECE | ECE (cal) "
        "| valid AUC | epochs (best) | s / fit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    names = [m for m in order if (m, None) in groups] + sorted(m for m, w in groups if w is None and m not in order)
    best_auc = max((aggregate([_numeric(r) for r in groups[(m, None)]])["AUC"][0] for m in names), default=None)
    for m in names:
        runs = groups[(m, None)]
        agg = aggregate([_numeric(r) for r in runs])
        auc = _ms(agg, "AUC")
        if best_auc is not None and round(agg["AUC"][0], 4) == round(best_auc, 4):
            auc = f"**{auc}**"
        epochs = "/".join(f"{r['epochs']}({r['best_epoch']})" for r in runs)
        lines.append(
            f"| {m} | {runs[0]['params_dense']:,} | {runs[0]['params_total']:,} | {len(runs)} | {auc} "
            f"| {_ms(agg, 'LogLoss')} | {_ms(agg, 'LogLoss_cal')} | {_ms(agg, 'ECE')} | {_ms(agg, 'ECE_cal')} "
            f"| {_ms(agg, 'valid_AUC')} | {epochs} | {agg['seconds'][0]:.0f} |"
        )
        rows.append(
            {
                "model": m,
                "seeds": [r["seed"] for r in runs],
                "params_dense": runs[0]["params_dense"],
                "params_total": runs[0]["params_total"],
                "aggregate": {k: {"mean": a, "std": s} for k, (a, s) in agg.items()},
            }
        )
    return "\n".join(lines), rows


def goal_check(rows: list[dict]) -> tuple[str, dict[str, Any]]:
    """SSR (best variant) against the best dense baseline at the same budget, on test AUC."""
    by = {r["model"]: r["aggregate"] for r in rows}
    dense = [(m, by[m]["AUC"]) for m in DENSE_BASELINES if m in by]
    ssr = [(m, by[m]["AUC"]) for m in ("SSR-S", "SSR-D") if m in by]
    if not dense or not ssr:
        return "_Needs both an SSR variant and a dense baseline._", {}
    bm, b = max(dense, key=lambda t: t[1]["mean"])
    sm, s = max(ssr, key=lambda t: t[1]["mean"])
    diff = s["mean"] - b["mean"]
    thr = max(s["std"], b["std"])
    verdict = (
        "beats it by more than the seed std"
        if diff > thr
        else "matches it (difference within the seed std)"
        if abs(diff) <= thr
        else "is below it by more than the seed std"
    )
    text = (
        f"Best SSR variant **{sm}** ({s['mean']:.4f} ± {s['std']:.4f}) against the best dense baseline "
        f"**{bm}** ({b['mean']:.4f} ± {b['std']:.4f}) at the same dense budget: difference {diff:+.4f}, "
        f"larger seed std {thr:.4f}, so SSR **{verdict}**."
    )
    pairs = []
    for m, a in dense:
        d = s["mean"] - a["mean"]
        pairs.append(f"{sm} − {m}: {d:+.4f} (larger std {max(s['std'], a['std']):.4f})")
    text += " Against each dense baseline: " + "; ".join(pairs) + "."
    return text, {"ssr": sm, "dense": bm, "diff": diff, "threshold": thr, "verdict": verdict}


def scaling_section(groups: dict[tuple[str, int | None], list[dict]], png: Path | None) -> tuple[str, list[dict]]:
    widths = sorted({w for (_, w) in groups if w is not None})
    models = [m for m in SCALING_MODELS if any((m, w) in groups for w in widths)]
    if not widths:
        return "_No scaling runs yet._", []
    header = "| MLP width (size step) | " + " | ".join(f"{m}: dense params / test AUC" for m in models) + " |"
    lines = [header, "|---|" + "---|" * len(models)]
    points = []
    for w in widths:
        cells = []
        for m in models:
            runs = groups.get((m, w))
            if not runs:
                cells.append("–")
                continue
            agg = aggregate([_numeric(r) for r in runs])
            seeds = f" ({len(runs)} seeds)" if len(runs) > 1 else ""
            cells.append(f"{runs[0]['params_dense']:,} / {_ms(agg, 'AUC', n_runs=len(runs))}{seeds}")
            points.append(
                {
                    "model": m,
                    "width": w,
                    "params_dense": runs[0]["params_dense"],
                    "AUC": agg["AUC"][0],
                    "AUC_std": agg["AUC"][1],
                    "seeds": len(runs),
                    "epochs": [r["epochs"] for r in runs],
                }
            )
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    if png is not None and points:
        try:
            _plot(points, png)
        except ImportError:  # matplotlib is not a declared dependency yet; the table still renders
            lines.append("\n_Plot not drawn: matplotlib is not installed._")
    return "\n".join(lines), points


def _plot(points: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for m in SCALING_MODELS:
        pts = sorted((p for p in points if p["model"] == m), key=lambda p: p["params_dense"])
        if not pts:
            continue
        x = [p["params_dense"] for p in pts]
        y = [p["AUC"] for p in pts]
        err = [p["AUC_std"] for p in pts]
        style = "--" if m in DENSE_BASELINES else "-"
        ax.errorbar(x, y, yerr=err, fmt="o" + style, capsize=3, label=m)
    ax.set_xscale("log")
    ax.set_xlabel("dense (non-embedding) parameters")
    ax.set_ylabel("test AUC")
    ax.set_title("Frappe: AUC against model size (dense dashed, SSR solid)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)


def ablation_section(groups: dict[tuple[str, int | None], list[dict]]) -> tuple[str, list[dict]]:
    if not groups:
        return "_No ablation runs yet._", []
    lines = [
        "| variant | fused width | dense params | valid AUC | test AUC | epochs | s |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = []
    for (m, _), runs in sorted(groups.items()):
        agg = aggregate([_numeric(r) for r in runs])
        cfg = runs[0]["config"]
        lines.append(
            f"| {m} | {cfg['ssr_hidden']} | {runs[0]['params_dense']:,} | {_ms(agg, 'valid_AUC', n_runs=len(runs))} "
            f"| {_ms(agg, 'AUC', n_runs=len(runs))} | {runs[0]['epochs']} | {agg['seconds'][0]:.0f} |"
        )
        rows.append(
            {
                "variant": m,
                "valid_AUC": agg["valid_AUC"][0],
                "AUC": agg["AUC"][0],
                "params_dense": runs[0]["params_dense"],
                "seeds": len(runs),
            }
        )
    return "\n".join(lines), rows


def tuning_section(
    groups: dict[tuple[str, int | None], list[dict]], table: dict[tuple[str, int | None], list[dict]]
) -> str:
    """Validation AUC per (model, dropout), the table's own setting included (its seed-0 run)."""
    if not groups:
        return "_No tuning runs yet._"
    cells: dict[str, dict[float, float]] = defaultdict(dict)
    for (m, _), runs in list(groups.items()) + [
        ((m, w), [r for r in rs if r["seed"] == 0]) for (m, w), rs in table.items()
    ]:
        for r in runs:
            cells[m.split(" ")[0]][float(r["config"]["dropout"])] = r["valid_AUC"]
    drops = sorted({p for v in cells.values() for p in v})
    lines = ["| model | " + " | ".join(f"dropout {p}" for p in drops) + " |", "|---|" + "---|" * len(drops)]
    for m in ("DeepFM", "DCNv2", "SSR-S", "SSR-D"):
        if m not in cells:
            continue
        best = max(cells[m].values())
        row = []
        for p in drops:
            v = cells[m].get(p)
            row.append("–" if v is None else (f"**{v:.4f}**" if v == best else f"{v:.4f}"))
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def onnx_section(records: list[dict[str, Any]]) -> str:
    rows = [r for r in records if r.get("onnx_dir")]
    if not rows:
        return "_No exported runs yet._"
    lines = [
        "| dataset | run | model | ORT fed from | max abs diff ORT vs torch | ORT ms b=1 | torch ms b=1 "
        "| ORT ms b=64 | torch ms b=64 | ORT ms b=512 | torch ms b=512 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["dataset"], r.get("kind", "table"), r["model"])):
        lat = {int(x["batch"]): x for x in r.get("latency", [])}
        cells = []
        for b in (1, 64, 512):
            x = lat.get(b)
            cells += [f"{x['onnxruntime_ms']:.3f}", f"{x['torch_ms']:.3f}"] if x else ["–", "–"]
        fed = r.get("onnx_input", "encoded ids")  # runs before the raw-row check recorded no source
        lines.append(
            f"| {r['dataset']} | {r.get('kind', 'table')} | {r['model']} | {fed} | {r['onnx_max_abs_diff']:.1e} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def _protocol(records: list[dict[str, Any]]) -> str:
    frappe = next((r for r in records if r["dataset"] == "frappe" and r.get("kind", "table") == "table"), None)
    if frappe is None:
        return "_Protocol is filled in from the first Frappe run._\n"
    data, train, cfg = frappe["data"], frappe["train"], frappe["config"]
    rows = data["rows"]
    test_oov = ", ".join(f"{k} {v}" for k, v in data["oov"].get("test", {}).items()) or "none"
    return PROTOCOL.format(
        train_file_rows=rows["train"] + rows["valid"],
        test_rows=rows["test"],
        fit_rows=rows["train"],
        valid_pct=100 * data.get("valid_fraction", 0.2),
        split_seed=data.get("split_seed", "?"),
        n_features=data["n_features"],
        test_oov=test_oov,
        embed_dim=cfg["embed_dim"],
        batch=train["batch_size"],
        lr=train["lr"],
        dropout=cfg["dropout"],
        epochs=train["epochs"],
        patience=train["patience"],
        views=cfg["ssr_views"],
        keep_pct=100 * cfg["ssr_keep"],
        ics_iters=cfg["ics_iters"],
    )


def criteo_section(groups: dict[tuple[str, int | None], list[dict]]) -> str:
    if not groups:
        return "_Not run yet: `python -m models.ctr.experiment --dataset criteo --seeds 0`._"
    first = next(iter(groups.values()))[0]
    d = first["data"]
    lines = [
        f"Rows fit/valid/test {d['rows']['train']}/{d['rows']['valid']}/{d['rows']['test']}; 26 categorical fields "
        f"(vocabulary: values seen >= {d['min_count']} times in the fitting rows, {d['n_features']:,} ids) and 13 "
        "numeric fields as a float input (`sign(x)·log1p(|x|)` in the graph, missing = 0). Every model below "
        "was trained, exported to ONNX and scored with ONNX Runtime from the test rows' raw values "
        "(`encode_rows`); "
        "AUC on ~200 rows is not a result.",
        "",
        "| model | epochs | test AUC (not a claim) | ONNX max abs diff vs torch |",
        "|---|---|---|---|",
    ]
    for (m, _), runs in sorted(groups.items()):
        r = runs[0]
        diff = f"{r['onnx_max_abs_diff']:.1e}" if "onnx_max_abs_diff" in r else "–"
        lines.append(f"| {m} | {r['epochs']} | {r['AUC']:.3f} | {diff} |")
    return "\n".join(lines)


def render(
    root: Path = DEFAULT_ROOT, md_path: Path = DOC_MD, json_path: Path = DOC_JSON, png_path: Path = DOC_PNG
) -> str:
    records = _latest(read_runs(root))
    table_md, table_rows = model_table(grouped(records, "frappe", "table"), TABLE_MODELS)
    goal_md, goal = goal_check(table_rows)
    tuned_groups = grouped(records, "frappe", "tuned")
    tuned_md, tuned_rows = model_table(tuned_groups, TABLE_MODELS)
    tuned_goal_md, tuned_goal = goal_check(tuned_rows)
    long_md, long_rows = model_table(grouped(records, "frappe", "long"), TABLE_MODELS)
    long_goal_md, long_goal = goal_check(long_rows)
    dropouts = {m: runs[0]["config"]["dropout"] for (m, _), runs in tuned_groups.items() if m not in ("LR", "FM")}
    scaling_md, scaling_points = scaling_section(grouped(records, "frappe", "scaling"), png_path)
    ablation_md, ablation_rows = ablation_section(grouped(records, "frappe", "ablation"))
    parts = [
        f"# {TITLE}\n",
        "Generated by `models/ctr/report.py` from `var/experiments/ctr/runs.jsonl`; do not edit by hand. "
        "Commands: `python -m models.ctr.experiment --dataset frappe --seeds 0 1 2` (table), "
        "`... --scaling --seeds 0` (scaling), `... --ablation --seeds 0` (SSR choices), "
        "`... --dataset criteo --seeds 0` (format proof), `... --render-only`.\n",
        "## Protocol\n",
        _protocol(records),
        "## Frappe: models at equal dense budget (test)\n",
        table_md if table_rows else "_No runs yet._",
        "\nMean ± sample std over seeds. **Bold** = best mean test AUC. Epochs: run (best) per seed.\n",
        "### Goal: SSR matches or beats the best dense baseline at equal budget\n",
        "Dense baselines here: DeepFM, DCNv2 (and the deep MLP where it runs). FM has no dense part and is "
        "listed for reference.\n",
        goal_md + "\n",
        "## Frappe after tuning: each deep model with its validation-chosen dropout (test)\n",
        (
            "Same protocol and budgets as above; the only change is each deep model's dropout, chosen on "
            "validation AUC (seed 0) in the tuning table below: "
            + ", ".join(f"{m} {p}" for m, p in sorted(dropouts.items()))
            + ".\n"
            if tuned_rows
            else ""
        ),
        tuned_md if tuned_rows else "_Not run yet: `python -m models.ctr.experiment --dataset frappe --tuned`._",
        ("\n" + tuned_goal_md + "\n") if tuned_rows else "",
        "## Frappe with longer patience (10 epochs without improvement, test)\n",
        (
            "The first table again (dropout 0.1 everywhere), but early stopping waits 10 epochs instead of 3. "
            "Reason: in the recorded validation histories the deep models sit on a plateau (about 0.931 "
            "validation AUC) for 5-10 epochs, and the runs that happened to outlast it climbed to about 0.940; "
            "with patience 3 most runs stop on the plateau.\n"
        ),
        long_md if long_rows else "_Not run yet: `python -m models.ctr.experiment --dataset frappe --long`._",
        ("\n" + long_goal_md + "\n") if long_rows else "",
        "## Scaling: AUC against dense parameters\n",
        "Each step widens the dense models' MLP (3 layers of the given width; DCNv2 keeps its 3 cross layers). "
        "SSR-S and SSR-D are matched to DCNv2's dense parameter count at each step (fused width by bisection). "
        "The deep MLP (DNN) has no cross layers, so it is slightly smaller at every step. Same training "
        "protocol and dropout (0.1) as the first table. One seed (0) per cell unless the cell says more; "
        "the table above puts the seed std of these models at 0.0002-0.0004.\n",
        scaling_md,
        "\n![scaling](ctr_scaling.png)\n" if scaling_points else "",
        _scaling_reading(scaling_points),
        "## SSR choices (views, keep ratio, ICS iterations)\n",
        "Each variant changes one setting from the table's SSR (4 views, keep 0.5, 2 ICS rounds) and is "
        "re-matched to DCNv2's dense budget. Selection is on validation AUC; test is shown for completeness.\n",
        ablation_md + "\n",
        "## Tuning: dropout (validation AUC, seed 0)\n",
        "The deep models over-fit Frappe within a few epochs, so their dropout was the one setting tuned, on "
        "validation AUC only, with every other setting as in the table.\n",
        tuning_section(grouped(records, "frappe", "tune"), grouped(records, "frappe", "table")) + "\n",
        "## Criteo (head sample): the format end to end\n",
        criteo_section(grouped(records, "criteo", "table")) + "\n",
        "## ONNX export: parity and latency\n",
        "Seed-0 model of each table run, exported with calibration folded in (`models/ctr/export.py`). Parity: "
        "max |p_onnx - p_torch| over the first 2,000 test rows (ONNX Runtime fed from the rows' raw values "
        "through `encode_rows` where the column says so; the first table's Frappe runs predate that check "
        "and fed the encoded ids). Latency: median of 30 calls, one thread, "
        "ONNX Runtime session vs torch eager `no_grad`, measured on the shared 2-core machine (noisy; compare "
        "within a row).\n",
        onnx_section(records) + "\n",
        "## Notes\n",
        NOTES,
    ]
    md = "\n".join(parts)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(md)
    payload = {
        "title": TITLE,
        "table": table_rows,
        "goal": goal,
        "tuned_table": tuned_rows,
        "tuned_goal": tuned_goal,
        "long_table": long_rows,
        "long_goal": long_goal,
        "scaling": scaling_points,
        "ablation": ablation_rows,
        "runs": [{k: v for k, v in r.items() if k not in ("valid_history",)} for r in records],
    }
    json_path.write_text(json.dumps(_jsonable(payload), indent=1) + "\n")
    return md


def _scaling_reading(points: list[dict]) -> str:
    """Plain facts from the curve: per model, the AUC gain from each size step to the next."""
    if not points:
        return ""
    lines = ["Step-to-step change in test AUC (positive = still improving):\n"]
    for m in SCALING_MODELS:
        pts = sorted((p for p in points if p["model"] == m), key=lambda p: p["width"])
        if len(pts) < 2:
            continue
        steps = ", ".join(f"{a['width']}→{b['width']}: {b['AUC'] - a['AUC']:+.4f}" for a, b in itertools.pairwise(pts))
        best = max(pts, key=lambda p: p["AUC"])
        lines.append(f"* {m}: {steps} (best at width {best['width']}: {best['AUC']:.4f})")
    return "\n".join(lines) + "\n"
