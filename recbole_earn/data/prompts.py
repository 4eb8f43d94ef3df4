"""Prompts as token ids: a user's history of items -> the prompt, the next item -> the response.

Every item's text is tokenized once and prompts are assembled from those pieces, so building a batch of
prompts costs list concatenation, not tokenizer calls, and an item's tokens are the same wherever it appears.
"""

from typing import List, Sequence

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


class PromptError(ValueError):
    pass


def tokenize(tokenizer, text) -> List[int]:
    """Token ids of `text` alone (no BOS/EOS: the engine adds BOS, and EOS ends the response)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def quote_title(title) -> str:
    """How an item appears in prompts and responses: its exact title in double quotes, as BIGRec writes it."""
    return f'"{title}"'


class HistoryPrompter:
    """Token ids of prompts `template` with the user's items (newest last) in place of `{history}`.

    `item_texts[i]` is how internal item id `i` is written (e.g. a quoted title); `empty_history` stands in
    for a user with no history (a cold user), so such a user still gets a well-formed prompt.
    """

    def __init__(self, tokenizer, template, item_texts, separator=", ", empty_history="(none)", **fields):
        if template.count(HISTORY_PLACEHOLDER) != 1:
            raise PromptError(f"The prompt template must contain {HISTORY_PLACEHOLDER} exactly once: {template!r}")
        try:
            head, tail = template.format(history=HISTORY_PLACEHOLDER, **fields).split(HISTORY_PLACEHOLDER)
        except KeyError as error:
            raise PromptError(
                f"The prompt template uses {{{error.args[0]}}}, which is not set; available: "
                f"{', '.join(sorted(fields))}, history"
            ) from None
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

    def item_text_ids(self, item: int) -> List[int]:
        """Token ids of one item's text (the BIGRec response, before EOS)."""
        return self.item_ids[item]


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
