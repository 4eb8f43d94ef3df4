"""Where an LC-Rec model's likelihood of the next item goes, code level by code level, beside a popularity count.

    python docs/results/ml-100k/recipe/code_level_loss.py EARNLCRec saved/EARNLCRec-<date>.pth [key=value ...]

On 256 training examples (a seeded sample; the model saw at most a few percent of the split), teacher-forced:
for each position of the answer (first code, second, ..., EOS) the model's negative log-likelihood over the whole
vocabulary and over the codes the trie allows after the prefix, and what a popularity count gives (the training
answers' share of each code given the prefix). Per item: the sums, and a uniform guess over the catalog.
The key=value pairs are config overrides, as on run_earn.py's command line (e.g. llm_dtype=float32).
"""

import collections
import math
import sys

import torch

from recbole_earn.llm.batch import IGNORE_INDEX
from trained_model import trained_model

EXAMPLES, BATCH = 256, 32


def popularity_nll(code_ids, answers):
    """code tuple prefix -> count over the training answers, and a function giving -log P(code[j] | code[:j])."""
    counts = collections.Counter(tuple(code_ids[item][:level]) for item in answers
                                 for level in range(len(code_ids[item]) + 1))
    return lambda code, j: -math.log(counts[tuple(code[:j + 1])] / counts[tuple(code[:j])])


def level_losses(model, interactions, popularity):
    """{position: {"model": [...], "trie": [...], "popularity": [...]}} over the examples of `interactions`."""
    items = interactions[model.ITEM_ID].tolist()
    prompts = [model.seqrec_prompter.prompt_ids(history) for history in model.histories(interactions)]
    losses = collections.defaultdict(lambda: collections.defaultdict(list))
    with torch.no_grad():
        for start in range(0, len(items), BATCH):
            codes = [model.code_ids[item] for item in items[start:start + BATCH]]
            batch = model.llm.make_batch(prompts[start:start + BATCH], codes)
            log_probs = torch.log_softmax(model.llm.lm_logits(model.llm.split_forward(batch)).float(), -1)  # [B,K,V]
            for row, code in enumerate(codes):
                positions = (batch.labels[row] != IGNORE_INDEX).nonzero().view(-1).tolist()
                for j, position in enumerate(positions):
                    label = int(batch.labels[row, position])
                    losses[j]["model"].append(-float(log_probs[row, position, label]))
                    if j == len(code):
                        continue  # EOS
                    node = model.item_trie.prefix_nodes(items[start + row])[j]
                    allowed = model.trie.children_tokens[node]
                    allowed = allowed[allowed >= 0]
                    within = torch.log_softmax(log_probs[row, position, allowed], -1)
                    losses[j]["trie"].append(-float(within[(allowed == label).nonzero()[0, 0]]))
                    losses[j]["popularity"].append(popularity(code, j))
    return losses


def report(losses, n_examples, n_items):
    mean = lambda values: sum(values) / len(values) if values else float("nan")  # noqa: E731
    for j in sorted(losses):
        kinds = losses[j]
        print(f"position {j}: model {mean(kinds['model']):.3f} nats (vocabulary), {mean(kinds['trie']):.3f} "
              f"(trie), popularity {mean(kinds['popularity']):.3f}")
    total = {kind: sum(sum(losses[j][kind]) for j in losses) / n_examples for kind in ("model", "trie", "popularity")}
    print(f"per item: model {total['model']:.3f} nats (vocabulary), {total['trie']:.3f} (trie), popularity "
          f"{total['popularity']:.3f}, uniform over items {math.log(n_items):.3f}")


def main(argv):
    model, train_data, _ = trained_model(argv)
    dataset = train_data._dataset
    answers = dataset.inter_feat[model.ITEM_ID].tolist()
    rows = torch.randperm(len(answers), generator=torch.Generator().manual_seed(0))[:EXAMPLES]
    losses = level_losses(model, dataset.inter_feat[rows], popularity_nll(model.code_ids, answers))
    report(losses, EXAMPLES, model.n_items - 1)


if __name__ == "__main__":
    main(sys.argv[1:])
