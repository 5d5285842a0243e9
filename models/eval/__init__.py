"""Shared evaluation harness: leave-one-out split, full-ranking metrics, baselines, reports.

    from models.eval import Popularity, evaluate, leave_one_out
    split = leave_one_out(dataset.interactions, "ml-latest-small")
    pop = Popularity().fit(split)
    print(evaluate(pop.score_fn, split, which="test"))   # {"HR@10": ..., "NDCG@10": ..., ...}

The protocol (split, full ranking, seen-item exclusion, pessimistic ties, metrics, seeds) is
documented in docs/evaluation.md; every reported number follows it.
"""

from models.eval.baselines import Popularity, RandomScores
from models.eval.harness import (
    DEFAULT_KS,
    DEFAULT_SEEDS,
    PROTOCOL,
    RankResult,
    ScoreFn,
    evaluate,
    evaluate_seeds,
    history_mask,
    rank_users,
    resolve_rows,
)
from models.eval.metrics import (
    UNRANKED,
    exclusion_mask,
    hit_rate,
    hits_at_k,
    mrr,
    ndcg,
    ndcg_at_k,
    precision_at_k,
    rank_of_target_sets,
    rank_of_targets,
    recall_at_k,
)
from models.eval.report import (
    TABLE_METRICS,
    aggregate,
    format_mean_std,
    read_report,
    render_markdown_section,
    render_table,
    write_report,
)
from models.eval.split import PAD_ID, PAD_INDEX, SequenceSplit, Which, leave_one_out

__all__ = [
    "DEFAULT_KS",
    "DEFAULT_SEEDS",
    "PAD_ID",
    "PAD_INDEX",
    "PROTOCOL",
    "TABLE_METRICS",
    "UNRANKED",
    "Popularity",
    "RandomScores",
    "RankResult",
    "ScoreFn",
    "SequenceSplit",
    "Which",
    "aggregate",
    "evaluate",
    "evaluate_seeds",
    "exclusion_mask",
    "format_mean_std",
    "history_mask",
    "hit_rate",
    "hits_at_k",
    "leave_one_out",
    "mrr",
    "ndcg",
    "ndcg_at_k",
    "precision_at_k",
    "rank_of_target_sets",
    "rank_of_targets",
    "rank_users",
    "read_report",
    "recall_at_k",
    "render_markdown_section",
    "render_table",
    "resolve_rows",
    "write_report",
]
