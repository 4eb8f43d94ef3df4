"""Making every item's code unique: a Sinkhorn-balanced last level, then an extra code for what still collides.

Nearest-code assignment piles similar items onto the same last-level code. As LC-Rec does, the last level is
instead assigned by a Sinkhorn-Knopp transport plan that asks every code to take an equal share of the items,
which spreads near-duplicates over codes. Items whose full code still collides get one more code, their rank
within the group (deterministic: by item order). Groups of one keep their codes, so the code sequences stay
prefix-free and a trie over them ends every path at exactly one item.
"""

from collections import defaultdict

import torch


def sinkhorn_assign(distances: torch.Tensor, epsilon: float = 0.05, iterations: int = 100) -> torch.Tensor:
    """Codes [n] for distances [n, K] from a transport plan with uniform marginals (each item one unit, each code
    n/K units), computed in log space; epsilon is relative to the mean distance."""
    n, k = distances.shape
    scaled = distances / distances.mean().clamp(min=1e-12)
    log_plan = -scaled / epsilon  # [n, K]
    log_row, log_col = -torch.log(torch.tensor(float(n))), -torch.log(torch.tensor(float(k)))
    for _ in range(iterations):
        log_plan = log_plan - (torch.logsumexp(log_plan, dim=1, keepdim=True) - log_row)
        log_plan = log_plan - (torch.logsumexp(log_plan, dim=0, keepdim=True) - log_col)
    return log_plan.argmax(1)


def collision_rate(codes) -> float:
    """(items - distinct code sequences) / items: the share of items a code cannot tell apart."""
    rows = [tuple(row) for row in codes]
    return (len(rows) - len(set(rows))) / max(1, len(rows))


def add_extra_codes(codes):
    """Code lists with a rank appended to every member of a group of identical codes, [(c_1..c_L[, e])]."""
    groups = defaultdict(list)
    for item, row in enumerate(codes):
        groups[tuple(row)].append(item)
    result = [list(row) for row in codes]
    for members in groups.values():
        if len(members) > 1:
            for rank, item in enumerate(members):
                result[item].append(rank)
    return result
