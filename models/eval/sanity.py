"""Sanity run of the harness on real data: popularity and random baselines under the standard protocol.

    python -m models.eval.sanity --dataset ml-latest-small --dataset amazon-beauty
    python -m models.eval.sanity --dataset ml-latest-small --json var/eval/sanity.json --md var/eval/sanity.md

Popularity is deterministic, so it runs once (std 0); random runs once per seed. The numbers
quoted in docs/evaluation.md come from this script.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from models.eval.baselines import Popularity, RandomScores
from models.eval.harness import DEFAULT_SEEDS, PROTOCOL, evaluate
from models.eval.report import Run, render_markdown_section, write_report
from models.eval.split import Which, leave_one_out


def run(datasets: list[str], which: Which, with_random: bool, progress: bool) -> dict[str, dict[str, list[Run]]]:
    from feature_store.sources.adapters import load_dataset

    results: dict[str, dict[str, list[Run]]] = {}
    for name in datasets:
        t0 = time.perf_counter()
        split = leave_one_out(load_dataset(name).interactions, name)
        t1 = time.perf_counter()
        pop = Popularity().fit(split)
        models: dict[str, list[Run]] = {"popularity": [evaluate(pop.score_fn, split, which, progress=progress)]}
        t2 = time.perf_counter()
        if with_random:
            models["random"] = []
            for seed in DEFAULT_SEEDS:
                r = evaluate(RandomScores(seed).score_fn, split, which, progress=progress)
                r["seed"] = seed
                models["random"].append(r)
        results[name] = models
        print(
            f"{name}: {len(split)} users ({split.dropped_users} dropped), {split.n_items} items, "
            f"{sum(len(s) for s in split.sequences)} events; split {t1 - t0:.1f}s, popularity eval {t2 - t1:.1f}s; "
            f"repeat_targets={models['popularity'][0]['repeat_targets']:.4f}"
        )
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", required=True)
    parser.add_argument("--which", choices=("valid", "test"), default="test")
    parser.add_argument("--no-random", action="store_true", help="skip the random floor")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--md", type=Path, default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    results = run(args.dataset, args.which, not args.no_random, not args.no_progress)
    print()
    print(render_markdown_section(results, title=f"Baselines [{args.which}]"))
    if args.json is not None:
        write_report(args.json, args.md, results, PROTOCOL, f"Baselines under the shared protocol [{args.which}]")


if __name__ == "__main__":
    main()
