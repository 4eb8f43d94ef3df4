"""How much of a user's next movie an LC-Rec item index lets the history predict, before any LLM is trained.

    python docs/results/ml-100k/recipe/index_signal.py ~/.cache/recbole_earn/item_index/ml-100k.item-index.<key>.json ...

For every user of RecBole's bundled ml-100k (interactions in time order, movies outside the index dropped) the last
movie is the answer and the ten before it the history. Per index: how often the answer's first code is the most
frequent first code of the history, against always guessing the answers' most common first code, and the same for
the first two codes. Numpy only, seconds.
"""

import collections
import json
import os
import sys

import pandas as pd
import recbole


def user_sequences():
    path = os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k", "ml-100k.inter")
    inter = pd.read_csv(path, sep="\t")
    inter.columns = [column.split(":")[0] for column in inter.columns]
    inter = inter.sort_values(["user_id", "timestamp"], kind="stable")
    return [list(map(str, items)) for _, items in inter.groupby("user_id")["item_id"]]


def signal(codes, sequences, depth, history_length=10):
    """(share of answers whose first `depth` codes are the history's most frequent, share of the most common)."""
    hits, answers = 0, collections.Counter()
    users = 0
    for sequence in sequences:
        sequence = [item for item in sequence if item in codes]
        if len(sequence) < 2:
            continue
        *history, answer = sequence[-(history_length + 1):]
        prefix = lambda item: tuple(codes[item][:depth])  # noqa: E731
        majority = collections.Counter(prefix(item) for item in history).most_common(1)[0][0]
        hits += majority == prefix(answer)
        answers[prefix(answer)] += 1
        users += 1
    return hits / users, answers.most_common(1)[0][1] / users


def main(paths):
    sequences = user_sequences()
    print("| index | collaborative weight | first code: history's majority | most common | first two codes: majority | most common |")
    print("| --- | --- | --- | --- | --- | --- |")
    for path in paths:
        index = json.load(open(path))
        weight = index["key"].get("collaborative_weight", 0.0) if isinstance(index["key"], dict) else "?"
        first, first_common = signal(index["codes"], sequences, 1)
        two, two_common = signal(index["codes"], sequences, 2)
        print(f"| {os.path.basename(path)} | {weight} | {first:.1%} | {first_common:.1%} | {two:.1%} | {two_common:.1%} |")


if __name__ == "__main__":
    main(sys.argv[1:])
