"""What a BIGRec model writes freely for test users, and where grounding then ranks the answer.

    python docs/results/ml-100k/recipe/bigrec_generation.py EARNBIGRec saved/EARNBIGRec-<date>.pth \
        title_search=grounding num_beams=4 [key=value ...]

For the first 256 test users (full ranking, each user's past items left out, as the evaluator ranks): the share of
generated texts that are exactly a catalog title, the share that are the user's answer, how many distinct texts
were written and how often the most written one; then the answer's rank under grounding and under a popularity
count, and the rank grounding gives to the item whose title was written exactly (over the whole catalog). The
key=value pairs are config overrides, as on run_earn.py's command line (e.g. llm_dtype=float32).
"""

import collections
import statistics
import sys

import torch

from recbole_earn.data.prompts import quote_title
from trained_model import trained_model

USERS = 256


def ranks(scores, items):
    """1-based rank of `items[b]` in row b of `scores` [B, n_items] (ties counted against it)."""
    target = scores.gather(1, items[:, None])  # [B, 1]
    return ((scores >= target).sum(1)).tolist()


def test_batches(model, test_data, users):
    """(interaction, scores mask of past items) of the first `users` test users, batch by batch."""
    seen = 0
    for interaction, history_index, _, _ in test_data:
        interaction = interaction[: users - seen]
        past = torch.zeros(len(interaction), model.n_items, dtype=torch.bool)
        rows, items = history_index
        keep = rows < len(interaction)
        past[rows[keep], items[keep]] = True
        past[:, 0] = True
        yield interaction, past
        seen += len(interaction)
        if seen >= users:
            return


def diagnose(model, test_data, users):
    item_of_text = {quote_title(title): item for item, title in enumerate(model.item_titles.titles) if item}
    written, answers, grounded, popular, exact_ranks = [], [], [], [], []
    for interaction, past in test_batches(model, test_data, users):
        texts = model.generate_titles(interaction)
        grounding = model.ground(texts)  # [B, n_items]
        scores = grounding.masked_fill(past, float("-inf"))
        popularity = model.popularity[None].expand_as(scores).masked_fill(past, float("-inf"))
        answer = interaction[model.ITEM_ID]
        written += texts
        answers += answer.tolist()
        grounded += ranks(scores, answer)
        popular += ranks(popularity, answer)
        exact = [(row, item_of_text[text]) for row, text in enumerate(texts) if text in item_of_text]
        if exact:
            rows, items = zip(*exact)
            exact_ranks += ranks(grounding[list(rows)], torch.tensor(items))  # past items not left out here
    return written, answers, grounded, popular, exact_ranks, item_of_text


def report(written, answers, grounded, popular, exact_ranks, item_of_text):
    n = len(written)
    exact = sum(text in item_of_text for text in written)
    hits = sum(item_of_text.get(text) == answer for text, answer in zip(written, answers))
    (top, count), = collections.Counter(written).most_common(1)
    print(f"{n} test users: {exact / n:.1%} of the texts are a catalog title, {hits / n:.1%} are the answer; "
          f"{len(set(written))} distinct texts, the most written {top} for {count / n:.1%}")
    for name, values in (("grounding", grounded), ("popularity", popular)):
        print(f"answer's rank under {name}: median {statistics.median(values):g}, in the top 10 for "
              f"{sum(r <= 10 for r in values) / n:.1%}, top 20 {sum(r <= 20 for r in values) / n:.1%}")
    if exact_ranks:
        first = sum(r == 1 for r in exact_ranks) / len(exact_ranks)
        print(f"the exactly written item's rank under grounding: 1 for {first:.1%} of {len(exact_ranks)}, median "
              f"{statistics.median(exact_ranks):g}")


def main(argv):
    model, _, test_data = trained_model(argv)
    with torch.no_grad():
        report(*diagnose(model, test_data, USERS))


if __name__ == "__main__":
    main(sys.argv[1:])
