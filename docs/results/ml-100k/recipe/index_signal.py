"""How much of a user's next movie an LC-Rec item index lets the history predict, before any LLM is trained.

    python docs/results/ml-100k/recipe/index_signal.py \
        ~/.cache/recbole_earn/item_index/ml-100k.item-index.<key>.json ...

RecBole's bundled ml-100k, each user's interactions in time order, movies outside the index dropped; each user's
last movie is the answer. Per index and code depth d (the first d codes of a movie):
- majority: how often the answer's first d codes are the most frequent among the ten movies before it, beside
  always guessing the answers' most common first d codes;
- counts: the cross-entropy (nats per answer) of two count models of the answer's first d codes, fitted on every
  earlier pair of consecutive movies (add-one smoothing): a unigram (the codes' popularity) and a bigram (given the
  previous movie's first d codes). Their difference is what the previous movie's codes tell about the next ones,
  the mapping an LLM trained on the codes can learn.
Numpy only, seconds.
"""

import collections
import json
import math
import os
import sys

import pandas as pd
import recbole


def user_sequences():
    """Per user, the movie ids (as the index's keys) in time order."""
    path = os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k", "ml-100k.inter")
    inter = pd.read_csv(path, sep="\t")
    inter.columns = [column.split(":")[0] for column in inter.columns]
    inter = inter.sort_values(["user_id", "timestamp"], kind="stable")
    return [list(map(str, items)) for _, items in inter.groupby("user_id")["item_id"]]


def majority_share(prefix, sequences, history_length=10):
    """(share of answers whose prefix is the history's most frequent one, share of the most common answer prefix)."""
    hits, answers = 0, collections.Counter()
    for sequence in sequences:
        *history, answer = sequence[-(history_length + 1):]
        majority = collections.Counter(prefix(item) for item in history).most_common(1)[0][0]
        hits += majority == prefix(answer)
        answers[prefix(answer)] += 1
    return hits / len(sequences), answers.most_common(1)[0][1] / len(sequences)


def count_model_nats(prefix, sequences, n_prefixes):
    """(unigram, bigram) cross-entropy in nats of the answers' prefixes, counts from the earlier consecutive pairs."""
    pairs, previous, answers = collections.Counter(), collections.Counter(), collections.Counter()
    for sequence in sequences:
        for before, after in zip(sequence[:-2], sequence[1:-1]):
            pairs[prefix(before), prefix(after)] += 1
            previous[prefix(before)] += 1
            answers[prefix(after)] += 1
    total = sum(answers.values())
    unigram = [-math.log((answers[prefix(s[-1])] + 1) / (total + n_prefixes)) for s in sequences]
    bigram = [-math.log((pairs[prefix(s[-2]), prefix(s[-1])] + 1) / (previous[prefix(s[-2])] + n_prefixes))
              for s in sequences]
    return sum(unigram) / len(sequences), sum(bigram) / len(sequences)


def main(paths, depths=(1, 2, 3)):
    print("| index | collaborative weight | depth | majority | most common | unigram nats | bigram nats | gain |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    all_sequences = user_sequences()
    for path in paths:
        index = json.load(open(path))
        codes = index["codes"]
        weight = index["key"].get("collaborative_weight", 0.0)
        sequences = [s for s in ([item for item in s if item in codes] for s in all_sequences) if len(s) >= 3]
        for depth in depths:
            prefix = lambda item: tuple(codes[item][:depth])  # noqa: E731
            share, common = majority_share(prefix, sequences)
            unigram, bigram = count_model_nats(prefix, sequences, len({prefix(item) for item in codes}))
            print(f"| {os.path.basename(path)} | {weight:g} | {depth} | {share:.1%} | {common:.1%} | {unigram:.3f} | "
                  f"{bigram:.3f} | {unigram - bigram:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
