"""The objectives of a re-ranking policy, named once for the search, the decision, deploy and the reports.

Every objective is measured on the policy's top-k lists, k = `policy.k`. Code and params use the
short names (`JUDGED`: all but cost, the ones bounds and the gate judge); reports label the list-length metrics with their k ("ndcg@10"), derived from policy.k.

    ndcg             NDCG@k of the held-out next item (full ranking)          higher is better
    ild              intra-list diversity@k                                     higher
    novelty          mean self-information of listed items (bits)             higher
    coverage         catalog coverage@k                                        higher
    personalization  1 - mean overlap of two users' lists                      higher
    cost             modelled serving latency (ms)                             lower

Reported beside them (`CATALOGUE`: measured on the same lists, not searched or judged):

    exposure_gini    Gini index of item exposure over the catalogue@k          lower
    tail_share       share of impressions outside the 20 % most popular items  higher
"""
from __future__ import annotations

OBJECTIVES = ("ndcg", "ild", "novelty", "coverage", "personalization", "cost")  # what the search trades off
JUDGED = OBJECTIVES[:5]  # higher is better: what the decision rules, the bounds and the gate judge
CATALOGUE = ("exposure_gini", "tail_share")  # how the lists spread over the catalogue, reported with coverage
REPORTED = JUDGED + CATALOGUE  # a deployed policy's figures
LOWER_IS_BETTER = ("cost", "exposure_gini")
AT_K = ("ndcg", "ild", "coverage", "exposure_gini", "tail_share")  # labelled with the list length in reports


def label(name: str, k: int) -> str:
    """How reports name an objective: 'ndcg@10' for the list-length metrics, the name otherwise."""
    return f"{name}@{k}" if name in AT_K else name


def labelled(values, k: int, names: tuple[str, ...] = JUDGED) -> dict[str, float]:
    """{label: value} of values given in `names` order (an array row or a sequence)."""
    return {label(name, k): float(v) for name, v in zip(names, values)}
