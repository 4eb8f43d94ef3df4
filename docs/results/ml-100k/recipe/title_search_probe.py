"""Where a constrained BIGRec ranking of the next movie is won or lost: the model's likelihood of the right title,
or the beam search that looks for it.

    python docs/results/ml-100k/recipe/title_search_probe.py EARNBIGRec saved/EARNBIGRec-<date>.pth [key=value ...]

Over the first 256 test users (RecBole's test split, in its order), for each user's next movie (its quoted title +
EOS after the user's prompt), printed beside a popularity count over the catalog and a uniform guess:
- likelihood, teacher-forced: negative log-likelihood per movie over the whole vocabulary, and over the tokens
  the title trie allows after each prefix (the model's distribution over the catalog), split into the tokens
  where titles part (branching) and the forced ones (one title goes on; free under the trie, not under the
  vocabulary);
- search, as the model runs it (its num_beams, beam_normalise, prior; past movies left out): the share of users
  whose movie is among the beams, whose movie scores above the last beam yet was not found (a search error: more
  beams would reach it), whose movie scores below it (the model ranks it lower), or is a past movie; ndcg@10 of
  the beams and of the popularity count on the same users; the search's time per user;
- copying: the model's probability of writing one of the movies its prompt lists (never the answer in
  training: a user rates a movie once), beside that of the beams' movies.
The key=value pairs are config overrides, as on run_earn.py's command line (e.g. beam_normalise=trie).
"""

import collections
import math
import sys
import time

import torch
from recbole.data.interaction import cat_interactions

from recbole_earn.llm.batch import IGNORE_INDEX
from recbole_earn.llm.scoring import candidate_log_probs
from trained_model import trained_model

USERS, BATCH = 256, 32


def first_test_users(test_data, n):
    """The first n rows of the test loader (one per user)."""
    batches, count = [], 0
    for batch in test_data:
        batches.append(batch[0])
        count += len(batch[0])
        if count >= n:
            break
    return cat_interactions(batches)[torch.arange(min(n, count))]


@torch.no_grad()
def title_losses(model, rows):
    """Per row: (nll over the vocabulary, nll over the trie, of which branching, vocabulary nll of forced tokens)."""
    trie, ids = model.item_trie, model.item_trie.item_token_ids
    items = rows[model.ITEM_ID].tolist()
    batch = model.llm.make_batch(model.prompts(rows), [ids[item] for item in items], add_eos=False)
    log_probs = torch.log_softmax(model.llm.lm_logits(model.llm.split_forward(batch)).float(), -1)  # [B, K, V]
    losses = []
    for row, item in enumerate(items):
        positions = (batch.labels[row] != IGNORE_INDEX).nonzero().view(-1).tolist()
        vocabulary = within_trie = forced = 0.0
        for position, node in zip(positions, trie.prefix_nodes(item)):
            label = int(batch.labels[row, position])
            token_nll = -float(log_probs[row, position, label])
            vocabulary += token_nll
            allowed = trie.trie.children_tokens[node]
            allowed = allowed[allowed >= 0].to(log_probs.device)
            if len(allowed) == 1:
                forced += token_nll
                continue
            within = torch.log_softmax(log_probs[row, position, allowed], -1)
            within_trie -= float(within[(allowed == label).nonzero()[0, 0]])
        losses.append((vocabulary, within_trie, forced))
    return losses


@torch.no_grad()
def search_outcomes(model, rows, popularity, losses):
    """(per row: (outcome, ndcg@10 of the beams, ndcg@10 of the popularity count, probability of the prompt's
    movies, probability of the beams' movies), seconds of the search); `losses`: the rows' `title_losses`."""
    items = rows[model.ITEM_ID].tolist()
    prompts = model.prompts(rows)
    excluded = model.seen_items(rows) if model.exclude_history else [[] for _ in items]
    start = time.perf_counter()
    output = model.item_trie.search(model.llm, prompts, model.num_beams, excluded=excluded,
                                    normalise=model.beam_normalise)
    seconds = time.perf_counter() - start
    beams = model.item_trie.scores(output).cpu()  # [B, n_items]
    # The right movie's score as the search scores it: its title's log-probability under the search's softmax.
    column = 0 if model.beam_normalise == "vocabulary" else 1
    target = -torch.tensor([loss[column] for loss in losses]) + model.item_trie.item_log_prior.cpu()[items]  # [B]
    last_beam = output.scores[:, -1].float().cpu()
    beam_mass = output.scores.float().exp().sum(1).cpu()  # [B]: probability of the beams' (unseen) movies
    history_mass = prompt_movies_mass(model, prompts, model.prompt_histories(rows))
    counts = popularity.expand(len(items), -1).clone()  # [B, n_items]
    counts[:, 0] = float("-inf")
    for row, past in enumerate(excluded):
        counts[row, [item + 1 for item in past]] = float("-inf")
    results = []
    for row, item in enumerate(items):
        if item - 1 in excluded[row]:
            outcome = "a past movie (left out)"
        elif torch.isfinite(beams[row, item]):
            outcome = "among the beams"
        elif target[row] > last_beam[row]:
            outcome = "above the last beam, not found"
        else:
            outcome = "below the last beam"
        results.append((outcome, ndcg_at_10(beams[row], item), ndcg_at_10(counts[row], item),
                        float(history_mass[row]), float(beam_mass[row])))
    return results, seconds


def prompt_movies_mass(model, prompts, histories):
    """[B]: the model's probability (vocabulary softmax) of writing one of the movies its prompt lists, summed."""
    ids = model.item_trie.item_token_ids
    width = max(len(history) for history in histories)
    candidates = [[ids[item] for item in history + history[:1] * (width - len(history))] for history in histories]
    log_probs = candidate_log_probs(model.llm, prompts, candidates).cpu()  # [B, width]
    listed = torch.tensor([[column < len(history) for column in range(width)] for history in histories])
    return (log_probs.exp() * listed).sum(1)


def ndcg_at_10(scores, item):
    top = torch.topk(scores, 10).indices.tolist()
    return 1.0 / math.log2(top.index(item) + 2) if item in top and torch.isfinite(scores[item]) else 0.0


def main(argv):
    model, train_data, test_data = trained_model(argv)
    counts = model.training_item_counts(train_data._dataset).float().cpu()  # [n_items]
    share = (counts[1:] + 1.0) / (counts[1:] + 1.0).sum()  # the prior's popularity, every movie counted once more
    rows = first_test_users(test_data, USERS)
    losses, outcomes, seconds = [], [], 0.0
    for start in range(0, len(rows), BATCH):
        part = rows[torch.arange(start, min(start + BATCH, len(rows)))].to(model.llm.registers.device)
        part_losses = title_losses(model, part)
        part_outcomes, part_seconds = search_outcomes(model, part, counts[None], part_losses)
        losses += part_losses
        outcomes, seconds = outcomes + part_outcomes, seconds + part_seconds
    items = rows[model.ITEM_ID].tolist()
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    print(f"{len(items)} test users; {model.__class__.__name__}, {model.num_beams} beams, "
          f"beam_normalise {model.beam_normalise}, prior weight {model.item_trie.prior_weight:g}")
    print(f"nats per movie: model {mean([v for v, _, _ in losses]):.3f} (vocabulary; forced tokens "
          f"{mean([f for _, _, f in losses]):.3f} of it), {mean([t for _, t, _ in losses]):.3f} (trie); "
          f"popularity {mean([-math.log(share[item - 1]) for item in items]):.3f}; "
          f"uniform {math.log(model.n_items - 1):.3f}")
    shares = collections.Counter(outcome for outcome, *_ in outcomes)
    for outcome, count in shares.most_common():
        print(f"  {outcome}: {count / len(items):.3f}")
    print(f"probability of writing a movie the prompt lists {mean([o[3] for o in outcomes]):.3f}, one the beams "
          f"hold {mean([o[4] for o in outcomes]):.3f} (means over users; the beams' under beam_normalise)")
    print(f"ndcg@10: beams {mean([o[1] for o in outcomes]):.4f}, popularity {mean([o[2] for o in outcomes]):.4f}; "
          f"search {1000 * seconds / len(items):.0f} ms per user (batches of {BATCH})")


if __name__ == "__main__":
    main(sys.argv[1:])
