"""LCRec and EARNLCRec: an LLM that writes the next item's semantic ID under a trie constraint.

Zheng et al., "Adapting Large Language Models by Integrating Collaborative Semantics for Recommendation" (LC-Rec):
  items      short unique code sequences (<a_12><b_7><c_201><d_3>) from an RQ-VAE over the items' text embeddings
             (recbole_earn.indexing), added to the tokenizer as new tokens
  training   the user's history as codes (optionally with titles) -> the next item's code, mixed with alignment
             tasks title -> code and code -> title, in yaml-set proportions; cross-entropy on the response
  inference  beam search (20 beams) constrained by a trie of every item's code: every beam is a real item; an
             item's score is its beam's log-probability (plus, optionally, a weighted log popularity, added code
             by code), -inf for items no beam reached

Only the code tokens' rows, the LoRA weights and the registers train. EARNLCRec is the same model with the EARN
engine switched on.
"""

import copy
import os

import torch

from recbole_earn.data.item_text import item_descriptions
from recbole_earn.data.prompts import (
    LCREC_INDEX2ITEM_TEMPLATE,
    LCREC_ITEM2INDEX_TEMPLATE,
    LCREC_SEQREC_TEMPLATE,
    HistoryPrompter,
    quote_title,
    tokenize,
    warn_if_beyond_context,
)
from recbole_earn.errors import ConfigError
from recbole_earn.indexing.collaborative import collaborative_vectors, matrix_digest, user_item_matrix
from recbole_earn.indexing.item_index import IndexSettings, build_item_index
from recbole_earn.llm.backbone import cache_root
from recbole_earn.llm.eval_mode import eval_mode
from recbole_earn.llm.trie_loss import FREE, trie_cross_entropy
from recbole_earn.model.item_trie import ItemTrie, check_beams_cover_topk, check_normalisers, check_prior_weight
from recbole_earn.model.llm_recommender import LLMRecommender

TASKS = ("seqrec", "item2index", "index2item")
CODE_TOKEN_INITS = ("mean", "item_text")


def index_folder(config):
    """Where the item index is kept: `item_index_dir` if set, else the dataset's own folder, except for RecBole's
    bundled example datasets (inside the installed package), whose index goes to the recbole-earn cache."""
    if config["item_index_dir"]:
        return os.path.expanduser(config["item_index_dir"])
    import recbole

    folder = os.path.abspath(config["data_path"])
    package = os.path.dirname(os.path.abspath(recbole.__file__))
    if folder.startswith(package + os.sep) or not os.access(folder, os.W_OK):
        return os.path.join(cache_root(), "item_index")
    return folder


def index_settings(config):
    return IndexSettings(
        levels=config["index_levels"], codebook_size=config["index_codebook_size"], code_dim=config["index_code_dim"],
        epochs=config["index_epochs"], seed=config["index_seed"], sinkhorn_epsilon=config["index_sinkhorn_epsilon"],
        collaborative_weight=float(config["index_collaborative_weight"] or 0.0),
        collaborative_dim=config["index_collaborative_dim"] or 32,
    )


def task_proportions(config):
    """{task: probability} from the `task_proportions` knob (normalised; unknown tasks are an error)."""
    raw = dict(config["task_proportions"] or {"seqrec": 1.0})
    unknown = sorted(set(raw) - set(TASKS))
    if unknown:
        raise ConfigError(f"task_proportions has unknown tasks {unknown}; the tasks are {', '.join(TASKS)}")
    weights = {task: float(raw.get(task, 0.0)) for task in TASKS}
    if any(weight < 0 for weight in weights.values()) or sum(weights.values()) <= 0:
        raise ConfigError(f"task_proportions must be >= 0 and not all 0, got {raw}")
    total = sum(weights.values())
    return {task: weight / total for task, weight in weights.items()}


class LCRec(LLMRecommender):
    trains_new_token_rows = True  # the code tokens' rows

    @classmethod
    def check_config(cls, config):
        """Refuse config values LC-Rec cannot run with; needs no model, so a group run checks before training."""
        super().check_config(config)
        check_normalisers(config)
        check_beams_cover_topk(config, "LC-Rec")
        if config["code_token_init"] not in CODE_TOKEN_INITS:
            raise ConfigError(
                f"code_token_init must be one of {', '.join(CODE_TOKEN_INITS)}, got {config['code_token_init']!r}")
        task_proportions(config)
        check_prior_weight(config)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.num_beams = config["num_beams"]
        self.beam_normalise = config["beam_normalise"] or "vocabulary"
        self.loss_normalise = config["loss_normalise"] or "vocabulary"
        self.index = self._item_index(config, dataset)
        self.trained_setup["item_index"] = self.index.digest()  # the code tokens' rows are trained for these codes

        titles = [quote_title(title) for title in self.item_titles.titles]
        self._add_code_tokens(config["code_token_init"], titles)
        self.item_trie = ItemTrie(self.code_ids, self.training_item_counts(dataset),
                                  prior_weight=config["popularity_prior_weight"] or 0.0)
        self.trie = self.item_trie.trie

        fields = {"item_noun": config["item_noun"] or "items",
                  "interaction_verb": config["interaction_verb"] or "interacted with"}
        codes = [self.index.item_text(item) for item in range(self.n_items)]
        history_items = [f"{code} {title}" for code, title in zip(codes, titles)] if config["history_with_titles"] \
            else codes
        template = config["prompt_template"] or LCREC_SEQREC_TEMPLATE
        self.seqrec_prompter = HistoryPrompter(self.tokenizer, template, history_items, **fields)
        self.trained_setup["prompt_template"] = template  # registers and LoRA are trained to read this prompt
        longest_code = max(len(ids) for ids in self.code_ids)
        warn_if_beyond_context(self.llm, self.seqrec_prompter.longest_prompt_length(config["MAX_ITEM_LIST_LENGTH"]),
                               longest_code + 1, knobs="MAX_ITEM_LIST_LENGTH or history_with_titles: False")
        self.item2index = self._split_template(LCREC_ITEM2INDEX_TEMPLATE.format(title="{item}", **fields))
        self.index2item = self._split_template(LCREC_INDEX2ITEM_TEMPLATE.format(code="{item}", **fields))
        self.proportions = task_proportions(config)
        self.task_generator = torch.Generator().manual_seed(int(config["seed"] or 0))

    def _add_code_tokens(self, init, titles):
        """The code tokens join a private copy of the tokenizer (others may share the loaded one) and get their own
        trainable rows in the engine, right after the tokenizer's vocabulary, starting as `init` says."""
        self.tokenizer = copy.deepcopy(self.tokenizer)
        first_id = len(self.tokenizer)
        self.tokenizer.add_tokens(self.index.token_strings())
        added = self.llm.add_tokens(first_id, len(self.index.token_strings()))
        self.code_ids = [[first_id + offset for offset in self.index.item_token_offsets(item)]
                         for item in range(self.n_items)]  # [n_items][code length]; id 0 is padding: []
        self.title_ids = [tokenize(self.tokenizer, title) for title in titles]
        if init == "item_text":
            self._init_code_rows_from_titles(added)

    @torch.no_grad()
    def _init_code_rows_from_titles(self, added):
        """Start each code token's rows at the mean title embedding of the items whose ID holds that code (scaled
        to the vocabulary's mean row norm), instead of one shared mean row: codes start apart, and near the text
        of the items they stand for."""
        item_offsets = [self.index.item_token_offsets(item) for item in range(1, self.n_items)]
        for rows, weight in ((added.input_rows, self.llm.causal_lm.get_input_embeddings().weight),
                             (added.output_rows, getattr(self.llm.causal_lm.get_output_embeddings(), "weight", None))):
            if rows is None or weight is None:
                continue  # tied lm head: the input rows are the output rows
            vocabulary = weight[:added.first_id].float()  # [V, hidden]
            titles = torch.stack([vocabulary[ids].mean(0) for ids in self.title_ids[1:]])  # [items, hidden]
            sums = torch.zeros(rows.shape, dtype=torch.float32, device=rows.device)  # [codes, hidden]
            counts = torch.zeros(rows.shape[0], dtype=torch.float32, device=rows.device)
            for item_vector, offsets in zip(titles, item_offsets):
                sums[offsets] += item_vector
                counts[offsets] += 1
            used = counts > 0
            means = sums[used] / counts[used, None]
            target_norm = vocabulary.norm(dim=-1).mean()
            rows[used] = (means * target_norm / means.norm(dim=-1, keepdim=True).clamp(min=1e-6)).to(rows.dtype)

    def _item_index(self, config, dataset):
        texts = item_descriptions(dataset, self.item_titles.titles, config["item_text_fields"])
        tokens = list(dataset.field2id_token[dataset.iid_field])

        def embed(item_texts):
            model = self.float32_backbone_model(config["llm_path"])  # one index for runs in any precision
            # no LoRA dropout; LoRA starts as the identity, so this is the pretrained backbone
            with eval_mode(model):
                ids = [tokenize(self.tokenizer, text) or [model.eos_token_id] for text in item_texts]
                return model.embed_texts(ids, batch_size=config["embedding_batch_size"], pooling="mean").float()

        distributed = torch.distributed.is_initialized()
        first = not distributed or torch.distributed.get_rank() == 0
        if not first:
            torch.distributed.barrier()  # rank 0 builds and saves the index; the other ranks then load that file
        interactions = user_item_matrix(self.training_items, self.n_items)[:, 1:]  # [users, items], no padding
        settings = index_settings(config)
        index = build_item_index(texts, tokens, embed, settings, index_folder(config), config["dataset"],
                                 str(config["llm_path"]),
                                 collaborative=lambda: collaborative_vectors(interactions, settings.collaborative_dim,
                                                                             seed=settings.seed),
                                 interactions_digest=matrix_digest(interactions))
        if first and distributed:
            torch.distributed.barrier()
        return index

    def _split_template(self, text):
        head, tail = text.split("{item}")
        return tokenize(self.tokenizer, head), tokenize(self.tokenizer, tail)

    # -- training -------------------------------------------------------------------------------------------------
    def sample_tasks(self, count):
        probabilities = torch.tensor([self.proportions[task] for task in TASKS])
        return [TASKS[i] for i in torch.multinomial(probabilities, count, replacement=True,
                                                    generator=self.task_generator).tolist()]

    def example(self, task, history, item):
        """(prompt ids, response ids) of one training example about `item` (the next item of `history`)."""
        if task == "seqrec":
            return self.seqrec_prompter.prompt_ids(history), self.code_ids[item]
        if task == "item2index":
            head, tail = self.item2index
            return head + self.title_ids[item] + tail, self.code_ids[item]
        head, tail = self.index2item
        return head + self.code_ids[item] + tail, self.title_ids[item]

    def calculate_loss(self, interaction):
        items = interaction[self.POS_ITEM_ID].tolist()
        tasks = self.sample_tasks(len(items))
        examples = [self.example(task, history, item)
                    for task, history, item in zip(tasks, self.histories(interaction), items)]
        prompts, responses = [prompt for prompt, _ in examples], [response for _, response in examples]
        if self.loss_normalise == "vocabulary":
            return self.llm.compute_loss(prompts, responses)
        # Code answers are scored among the trie's children, each response's EOS and titles over the vocabulary.
        nodes = [node for task, item, response in zip(tasks, items, responses)
                 for node in (self.item_trie.prefix_nodes(item) if task != "index2item" else [FREE] * len(response))
                 + [FREE]]
        return trie_cross_entropy(self.llm, self.llm.make_batch(prompts, responses), torch.tensor(nodes), self.trie)

    # -- inference ------------------------------------------------------------------------------------------------
    def prompts(self, interaction):
        return [self.seqrec_prompter.prompt_ids(history) for history in self.prompt_histories(interaction)]

    def llm_scores(self, interaction):
        """[B, n_items]: the constrained code search's beams at their items, -inf elsewhere."""
        return self.search_items(interaction)


class EARNLCRec(LCRec):
    use_earn = True
