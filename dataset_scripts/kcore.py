"""Iterative k-core filtering of interactions."""

from collections import Counter


def iterative_k_core(interactions, k, user_index=0, item_index=1):
    """Keep the interactions whose user and item each have at least `k` interactions, repeating until stable:
    dropping a rare item can push a user below k (and the other way round), so one pass is not enough.
    `interactions` is a list of tuples; order is preserved. k <= 1 keeps everything."""
    rows = list(interactions)
    if k <= 1:
        return rows
    while True:
        user_counts = Counter(row[user_index] for row in rows)
        item_counts = Counter(row[item_index] for row in rows)
        kept = [row for row in rows if user_counts[row[user_index]] >= k and item_counts[row[item_index]] >= k]
        if len(kept) == len(rows):
            return kept
        rows = kept
