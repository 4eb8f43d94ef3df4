"""Prompts as token ids: a user's history of items -> the prompt, the next item -> the response.

Every item's text is tokenized once and prompts are assembled from those pieces, so building a batch of
prompts costs list concatenation, not tokenizer calls, and an item's tokens are the same wherever it appears.
"""

import logging
from typing import List, Sequence

from recbole_earn.errors import ConfigError

logger = logging.getLogger(__name__)

HISTORY_PLACEHOLDER = "{history}"

# BIGRec's Alpaca-style template; {item_noun} and {interaction_verb} come from the dataset yaml.
BIGREC_TEMPLATE = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nGiven the {item_noun} the user has {interaction_verb} recently, please recommend the next "
    "one that the user will like.\n\n"
    "### Input:\nThe user has {interaction_verb} the following {item_noun} before: {history}\n\n"
    "### Response:\n"
)


class PromptError(ConfigError):
    pass


def fill_template(template, **fields):
    """`template` with its placeholders filled from `fields`; a placeholder that is not one of them, or a stray
    brace, is a PromptError that names the placeholders the template may use."""
    try:
        return template.format(**fields)
    except KeyError as error:
        problem = f"uses {{{error.args[0]}}}, which is not set"
    except (IndexError, AttributeError) as error:
        problem = f"has a placeholder that is not a plain name ({error})"
    except ValueError as error:
        problem = f"is not a format string ({error}; write a literal brace as {{{{ or }}}})"
    raise PromptError(
        f"The prompt template {problem}; its placeholders are {', '.join(sorted(fields))}. Template: {template!r}"
    ) from None


def tokenize(tokenizer, text) -> List[int]:
    """Token ids of `text` alone (no BOS/EOS: the engine adds BOS, and EOS ends the response)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def quote_title(title) -> str:
    """How an item appears in prompts and responses: its exact title in double quotes, as BIGRec writes it."""
    return f'"{title}"'


def split_template(template, **fields):
    """(text before {history}, text after it) of a prompt template with its other placeholders filled."""
    if not isinstance(template, str) or template.count(HISTORY_PLACEHOLDER) != 1:
        raise PromptError(f"The prompt template must contain {HISTORY_PLACEHOLDER} exactly once: {template!r}")
    return tuple(fill_template(template, history=HISTORY_PLACEHOLDER, **fields).split(HISTORY_PLACEHOLDER))


class HistoryPrompter:
    """Token ids of prompts `template` with the user's items (newest last) in place of `{history}`.

    `item_texts[i]` is how internal item id `i` is written (e.g. a quoted title); `empty_history` stands in
    for a user with no history (a cold user), so such a user still gets a well-formed prompt.
    """

    def __init__(self, tokenizer, template, item_texts, separator=", ", empty_history="(none)", **fields):
        head, tail = split_template(template, **fields)
        self.head_ids = tokenize(tokenizer, head)
        self.tail_ids = tokenize(tokenizer, tail)
        self.separator_ids = tokenize(tokenizer, separator)
        self.empty_history_ids = tokenize(tokenizer, empty_history)
        self.item_ids = [tokenize(tokenizer, text) for text in item_texts]

    def prompt_ids(self, history: Sequence[int]) -> List[int]:
        """Token ids of the prompt for a history of internal item ids, oldest first."""
        if len(history) == 0:
            return self.head_ids + self.empty_history_ids + self.tail_ids
        ids = list(self.head_ids)
        for position, item in enumerate(history):
            if position:
                ids += self.separator_ids
            ids += self.item_ids[item]
        return ids + self.tail_ids

    def longest_prompt_length(self, max_items) -> int:
        """Tokens of the longest prompt a history of at most `max_items` items can give: its longest items."""
        longest = sorted((len(ids) for ids in self.item_ids[1:]), reverse=True)[:max_items]
        history = sum(longest) + len(self.separator_ids) * max(len(longest) - 1, 0)
        return len(self.head_ids) + max(history, len(self.empty_history_ids)) + len(self.tail_ids)

    def item_text_ids(self, item: int) -> List[int]:
        """Token ids of one item's text (the BIGRec response, before EOS)."""
        return self.item_ids[item]


def warn_if_beyond_context(llm, prompt_tokens, response_tokens, knobs):
    """Log a warning when BOS, the registers, the longest prompt and the response can pass the backbone's
    positions (max_position_embeddings): it would run on, at positions it was never trained for. A warning, not
    an error: the bound takes the longest items together, which few histories hold."""
    limit = getattr(llm.causal_lm.config, "max_position_embeddings", None)
    length = int(llm.bos_token_id is not None) + llm.n_registers + prompt_tokens + response_tokens
    if limit and length > limit:
        logger.warning(
            f"Examples can reach {length} tokens (prompt {prompt_tokens} with the longest items, response "
            f"{response_tokens}), more than the backbone's {limit} positions (max_position_embeddings), beyond which "
            f"it was never trained; shorten the prompts with {knobs}."
        )


# LC-Rec's tasks in the same Alpaca style. Items are written as their code tokens (<a_12><b_7><c_201><d_3>).
_ALPACA_HEAD = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n"
)
LCREC_SEQREC_TEMPLATE = (
    _ALPACA_HEAD + "Here are the {item_noun} the user has {interaction_verb}, in order: {history}. Can you predict "
    "the next one the user will like?\n\n### Response:\n"
)
LCREC_ITEM2INDEX_TEMPLATE = _ALPACA_HEAD + "Which of the {item_noun} has the title {title}?\n\n### Response:\n"
LCREC_INDEX2ITEM_TEMPLATE = _ALPACA_HEAD + "What is the title of the item {code}?\n\n### Response:\n"
