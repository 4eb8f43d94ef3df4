"""Inputs of the efficiency benchmark: recommendation-style prompts of an exact token length and an LC-Rec-like trie.

Prompts are built like BIGRec's (Alpaca instruction + the user's history as quoted item titles), with real
MovieLens-100K titles read from the copy of ml-100k bundled with RecBole. Each prompt of a batch is a different
random "user" (a random list of titles), cut or extended at the token level so that every prompt has exactly the
requested number of tokens: the batch has no padding and the analytic formulas hold exactly.

The trie stands in for LC-Rec's semantic ids `<a_i><b_j><c_k><d_l>`: 4 levels of 256 codes each (1,024 distinct
token ids of the backbone's vocabulary), and one random 4-token code per item.
"""

import os
import random
from dataclasses import dataclass
from typing import List, Optional, Sequence

# BIGRec's Alpaca-style prompt; the history goes where {history} is.
PROMPT_HEAD = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nGiven the movies the user has watched recently, please recommend the next one that the user "
    "will like.\n\n"
    "### Input:\nThe user has watched the following movies before: "
)
PROMPT_TAIL = "\n\n### Response:\n"
# For prompts too short for the full template (tests on tiny models).
SHORT_HEAD = "The user watched: "
SHORT_TAIL = "\nNext movie:"


@dataclass(frozen=True)
class Workload:
    """One generation workload. `prefill` runs the prompt only; the others decode `new_tokens` tokens with
    `beams` beams (and a trie constraint when `constrained`)."""

    name: str
    beams: int = 1
    new_tokens: int = 0
    constrained: bool = False

    @property
    def decodes(self) -> bool:
        return self.new_tokens > 0

    @property
    def decode_steps(self) -> int:
        """Model steps after prefill: the first token comes from prefill's last hidden state."""
        return max(self.new_tokens - 1, 0)


PREFILL = Workload("prefill")
BIGREC = Workload("bigrec", beams=4, new_tokens=16)
LCREC = Workload("lcrec", beams=20, new_tokens=4, constrained=True)
WORKLOADS = {w.name: w for w in (PREFILL, BIGREC, LCREC)}


def ml100k_item_file() -> str:
    import recbole

    return os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k", "ml-100k.item")


def movie_titles(path: Optional[str] = None) -> List[str]:
    """`Title (year)` for every movie of RecBole's bundled ml-100k.item."""
    titles = []
    with open(path or ml100k_item_file(), encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        title_col = next(i for i, h in enumerate(header) if h.startswith("movie_title"))
        year_col = next((i for i, h in enumerate(header) if h.startswith("release_year")), None)
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            if len(fields) <= title_col or not fields[title_col].strip():
                continue
            title = fields[title_col].strip()
            if year_col is not None and len(fields) > year_col and fields[year_col].strip():
                title = f"{title} ({fields[year_col].strip()})"
            titles.append(title)
    if not titles:
        raise ValueError(f"no movie titles in {path or ml100k_item_file()}")
    return titles


def _ids(tokenizer, text) -> List[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def build_prompts(tokenizer, length: int, batch: int, seed: int = 0, titles: Optional[Sequence[str]] = None
                  ) -> List[List[int]]:
    """`batch` BIGRec-style prompts of exactly `length` token ids each (no BOS: the engine and the generate()
    baseline add it). The history (quoted titles, comma separated) is cut at the token level to fit."""
    titles = list(titles) if titles is not None else movie_titles()
    head, tail = _ids(tokenizer, PROMPT_HEAD), _ids(tokenizer, PROMPT_TAIL)
    if length - len(head) - len(tail) < 16:  # too short for BIGRec's template: a one-line instruction
        head, tail = _ids(tokenizer, SHORT_HEAD), _ids(tokenizer, SHORT_TAIL)
    room = length - len(head) - len(tail)
    if room < 1:
        raise ValueError(f"prompt length {length} leaves no room for a history (template takes {len(head) + len(tail)})")
    rng = random.Random(seed)
    prompts = []
    for _ in range(batch):
        history: List[int] = []
        order = list(range(len(titles)))
        rng.shuffle(order)
        position = 0
        while len(history) < room:
            if position == len(order):  # extend: a long history may reuse titles
                rng.shuffle(order)
                position = 0
            piece = ("" if not history else ", ") + f'"{titles[order[position]]}"'
            history += _ids(tokenizer, piece)
            position += 1
        prompts.append(head + history[:room] + tail)
    return prompts


def semantic_id_sequences(n_items: int = 1682, vocab_ids: Optional[Sequence[int]] = None, levels: int = 4,
                          codes_per_level: int = 256, seed: int = 0, vocab_start: int = 10000) -> List[List[int]]:
    """`n_items` distinct random codes of `levels` tokens; level l draws from its own `codes_per_level` token ids
    (by default vocab_start + l * codes_per_level + c, i.e. 1,024 ids for 4 x 256), like LC-Rec's
    <a_i><b_j><c_k><d_l>."""
    if vocab_ids is None:
        vocab_ids = range(vocab_start, vocab_start + levels * codes_per_level)
    vocab_ids = list(vocab_ids)
    if len(vocab_ids) < levels * codes_per_level:
        raise ValueError(f"need {levels * codes_per_level} token ids, got {len(vocab_ids)}")
    if n_items > codes_per_level ** levels:
        raise ValueError("more items than distinct codes")
    rng = random.Random(seed)
    codes = set()
    while len(codes) < n_items:
        codes.add(tuple(rng.randrange(codes_per_level) for _ in range(levels)))
    return [[vocab_ids[level * codes_per_level + c] for level, c in enumerate(code)] for code in sorted(codes)]


class PrefixAllowedTokens:
    """`prefix_allowed_tokens_fn` for transformers' generate(): the trie as a dict of prefixes, the generated part
    being everything after the (left-padded) prompt of `prompt_length` columns."""

    def __init__(self, sequences: Sequence[Sequence[int]], prompt_length: int, fallback_token: int):
        self.prompt_length = prompt_length
        self.fallback = [fallback_token]
        self.children = {}
        for seq in sequences:
            for i in range(len(seq)):
                self.children.setdefault(tuple(seq[:i]), set()).add(int(seq[i]))
        self.children = {prefix: sorted(tokens) for prefix, tokens in self.children.items()}

    def __call__(self, batch_id, input_ids):
        generated = tuple(input_ids[self.prompt_length:].tolist())
        return self.children.get(generated, self.fallback)
