"""The base class of recbole-earn's LLM recommenders: a RecBole SequentialRecommender around the EARN engine.

It owns what BIGRec and LC-Rec share: the backbone (+ LoRA) and its registers from `recbole_earn.llm`, the
item titles, histories taken from RecBole's interaction, an optional blend with a conventional model's scores
(score_blend.py), and checkpoints that hold only what trains. A subclass supplies the prompts, the loss and the
LLM's scores (`llm_scores`; and `item_trie` when a constrained search finds its items). `use_earn` is the one
switch between a plain model (all layers see everything, no registers) and its EARN version.
"""

import numbers

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_earn.data.item_text import ItemTextTable
from recbole_earn.data.past_items import training_items_by_user
from recbole_earn.data.prompts import split_template
from recbole_earn.errors import ConfigError
from recbole_earn.llm.backbone import base_causal_lm, load_backbone, prepare_for_training
from recbole_earn.llm.config import EARNConfig
from recbole_earn.llm.earn_model import EARNModel
from recbole_earn.llm.kv_press import press_from_settings
from recbole_earn.llm.slot_decoding import resolved_decode_mode
from recbole_earn.model.score_blend import ScoreBlend
from recbole_earn.model.trained_setup import SETUP_KEY, CheckpointMismatchError, check_trained_setup, trained_setup

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def earn_config_from(config, num_layers, use_earn):
    """The engine's EARNConfig from RecBole config keys; the plain model runs all layers with no registers.

    The engine takes earn_k in [0, N]; a recommender needs k >= 1: layers [0, k) are the only ones that see the
    prompt, so with k = 0 no layer reads the user's history and every user gets the same ranking."""
    if not use_earn:
        return EARNConfig(earn_k=num_layers, n_prefix_registers=0, n_suffix_registers=0)
    earn = EARNConfig(earn_k=register_layer(config, num_layers), n_prefix_registers=config["n_prefix_registers"],
                      n_suffix_registers=config["n_suffix_registers"])
    try:
        k = earn.resolved_k(num_layers)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if k == 0:
        raise ConfigError(
            "earn_k=0 would never read the prompt: layers [0, earn_k) are the only ones that see it, so every user "
            f"would get the same ranking. Use earn_k in [1, {num_layers}] (the backbone has {num_layers} layers; "
            f"earn_k={num_layers} is plain fine-tuning)."
        )
    return earn


def register_layer(config, num_layers):
    """earn_k, or where it is ~, earn_k_fraction of the backbone's layers (at least 1): the paper sets k per backbone
    as a share of its depth (4 of Llama's 32 layers for LC-Rec)."""
    if config["earn_k"] is not None:
        return config["earn_k"]
    fraction = config["earn_k_fraction"]
    if not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ConfigError(f"earn_k_fraction must be a number in (0, 1], got {fraction!r} (or set earn_k to a layer "
                          "count).")
    return max(1, round(fraction * num_layers))


def kv_press_from(config):
    """The KV press the `kv_press*` knobs name (None without one), refused with the knob's name when wrong."""
    try:
        return press_from_settings(config["kv_press"], config["kv_press_budget"], window=config["kv_press_window"],
                                   sinks=config["kv_press_sinks"])
    except ValueError as error:
        raise ConfigError(str(error)) from None


def decode_mode_from(config):
    """How beam searches run their decoding steps (`decode_mode`), refused with the knob's name when wrong."""
    mode = config["decode_mode"] or "auto"
    try:
        resolved_decode_mode(mode, config["device"] or "cpu")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return mode


def prompt_layers_from(skip_from, num_layers):
    """SkipLayers at inference: the layers [0, skip_from) the prompt runs through (None: all, as trained)."""
    if skip_from is None:
        return None
    if isinstance(skip_from, bool) or not isinstance(skip_from, numbers.Integral) or not 1 <= skip_from <= num_layers:
        raise ConfigError(f"skip_prompt_layers_from must be an integer in [1, {num_layers}] (the backbone's layers) "
                          f"or ~, got {skip_from!r}")
    return int(skip_from)


def check_history_length(length):
    if length is not None and (isinstance(length, bool) or not isinstance(length, numbers.Integral) or length < 1):
        raise ConfigError(f"inference_history_length must be an integer >= 1 or ~ (the whole history), got {length!r}")


def refuse_training_nothing(config, model_class):
    """finetune: frozen leaves only what the model adds to train (EARN's registers, LC-Rec's code-token rows);
    a plain model that adds nothing would train nothing."""
    if config["finetune"] == "frozen" and not model_class.use_earn and not model_class.trains_new_token_rows:
        name = model_class.__name__
        raise ConfigError(
            f"finetune: frozen trains nothing in {name}: the backbone is frozen and {name} has no registers. Use "
            f"finetune: lora or full, or EARN{name}, whose registers train."
        )


class LLMRecommender(SequentialRecommender):
    input_type = InputType.POINTWISE
    # What the runner reads (recbole_earn.model_contract): the .item file is checked for before the data loads,
    # and LLMTrainer (recbole_earn.trainer) trains.
    is_llm_recommender = True
    needs_item_text = True
    trainer_name = "LLMTrainer"
    use_earn = False
    trains_new_token_rows = False  # rows of tokens added to the vocabulary, which train even with a frozen backbone

    @classmethod
    def check_config(cls, config):
        """Refuse config values the model cannot run with; needs no model, so a group run checks before training."""
        kv_press_from(config)
        check_history_length(config["inference_history_length"])
        decode_mode_from(config)

    def __init__(self, config, dataset):
        refuse_training_nothing(config, type(self))
        if config["prompt_template"]:  # checked before the backbone loads (and LC-Rec's item index is built)
            split_template(config["prompt_template"], item_noun="", interaction_verb="")
        type(self).check_config(config)
        super().__init__(config, dataset)
        catalog = self.n_items - 1  # RecBole's id 0 is padding
        if max(config["topk"]) > catalog:
            raise ValueError(
                f"topk {config['topk']} asks for more items than the catalog of {catalog} items of dataset "
                f"'{config['dataset']}'; use --topk with values <= {catalog}."
            )
        self.item_titles = ItemTextTable.from_dataset(dataset)
        dtype = config["llm_dtype"] or "float32"
        if dtype not in DTYPES:
            raise ValueError(f"llm_dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        backbone, self.tokenizer = load_backbone(config["llm_path"], dtype=DTYPES[dtype], device=config["device"])
        backbone = prepare_for_training(
            backbone,
            finetune=config["finetune"],
            lora_r=config["lora_r"],
            lora_alpha=config["lora_alpha"],
            lora_dropout=config["lora_dropout"],
            lora_target_modules=config["lora_target_modules"],
        )
        num_layers = base_causal_lm(backbone).config.num_hidden_layers
        self.llm = EARNModel(backbone, earn_config_from(config, num_layers, self.use_earn), tokenizer=self.tokenizer,
                             add_bos=config["add_bos"])
        # What the trained weights depend on, saved with them (a subclass adds its own, e.g. LC-Rec's item index).
        self.trained_setup = trained_setup(config["llm_path"], config["finetune"], self.llm)
        # Inference-time compression, the baselines EARN is measured against: of the prompt's KV, or of the prompt.
        self.llm.kv_press = kv_press_from(config)
        self.llm.prompt_layers = prompt_layers_from(config["skip_prompt_layers_from"], num_layers)
        self.llm.decode_mode = decode_mode_from(config)
        self.inference_history_length = config["inference_history_length"]
        self.exclude_history = bool(config["exclude_history_items"])
        self.training_items = training_items_by_user(dataset, self.USER_ID, self.ITEM_ID, self.ITEM_SEQ)
        self.item_trie = None  # a subclass whose beams search a trie of item token sequences sets it
        self.blend = ScoreBlend.from_config(config, dataset)  # None unless blend_model_checkpoint is set
        self.reset_inference_stats()

    def float32_backbone_model(self, llm_path):
        """This model's EARNModel when it runs in float32, otherwise the pretrained backbone loaded again in float32
        (all layers, no registers) on the same device: for what must not depend on the run's precision."""
        if self.llm.causal_lm.dtype == torch.float32:
            return self.llm
        backbone, _ = load_backbone(llm_path, dtype=torch.float32)
        num_layers = backbone.config.num_hidden_layers
        plain = EARNConfig(earn_k=num_layers, n_prefix_registers=0, n_suffix_registers=0)
        return EARNModel(backbone, plain, tokenizer=self.tokenizer).to(self.llm.registers.device)

    @staticmethod
    def distinct_rows(user_ids):
        """(the first row of each distinct user, each row's index into those distinct users), for sampled
        evaluation, where a batch holds several rows (candidate items) per user."""
        users, row_user = torch.unique(user_ids, return_inverse=True)
        first_row = torch.full((len(users),), len(user_ids), dtype=torch.long, device=user_ids.device)
        first_row.scatter_reduce_(0, row_user, torch.arange(len(user_ids), device=user_ids.device), reduce="amin")
        return first_row, row_user

    def training_item_counts(self, dataset):
        """[n_items] float: how often each item is the answer of a training example (id 0, padding, counts 0)."""
        return torch.bincount(dataset.inter_feat[self.ITEM_ID], minlength=self.n_items).float()

    def histories(self, interaction):
        """Each row's history as a list of internal item ids, oldest first (RecBole pads on the right)."""
        item_seq = interaction[self.ITEM_SEQ].tolist()  # [B, max_seq_length]
        lengths = interaction[self.ITEM_SEQ_LEN].tolist()  # [B]
        return [seq[:length] for seq, length in zip(item_seq, lengths)]

    def seen_items(self, interaction):
        """Per row, the indices (item id - 1) of the user's past items: their training items and the history in the
        row (which holds the validation item at test time): the items the evaluation leaves out."""
        users = interaction[self.USER_ID].tolist()
        return [sorted(item - 1 for item in self.training_items.get(user, set()).union(history))
                for user, history in zip(users, self.histories(interaction))]

    def prompt_histories(self, interaction):
        """The histories prompts are written from: at inference, only the last `inference_history_length` items
        when that is set (prompt compression); in training, the whole history."""
        histories = self.histories(interaction)
        if self.training or self.inference_history_length is None:
            return histories
        return [history[-self.inference_history_length:] for history in histories]

    # -- ranking ----------------------------------------------------------------------------------------------
    def llm_scores(self, interaction):
        """[B, n_items]: the LLM's own score of every item per row (-inf where no beam reached it)."""
        raise NotImplementedError

    def llm_ranking_label(self):
        """What the LLM's own scores are, for result tables: "LLM", or e.g. "LLM + 2 x log popularity"."""
        weight = self.item_trie.prior_weight if self.item_trie is not None else 0.0
        return f"LLM + {weight:g} x log popularity" if weight else "LLM"

    @torch.no_grad()
    def search_items(self, interaction):
        """[B, n_items]: each beam of the search constrained to `item_trie` at its item, with its log-probability
        (+ prior), -inf elsewhere. When the evaluation leaves out the user's past items (`exclude_history_items`),
        so do the beams, which then all go to eligible items."""
        excluded = self.seen_items(interaction) if self.exclude_history else None
        output = self.item_trie.search(self.llm, self.prompts(interaction), self.num_beams, excluded=excluded,
                                       normalise=self.beam_normalise)
        self.record_generation(output, num_users=output.sequences.shape[0])
        return self.item_trie.scores(output)

    @torch.no_grad()
    def full_sort_predict(self, interaction):
        scores = self.llm_scores(interaction)  # [B, n_items]
        return scores if self.blend is None else self.blend.mix(scores, interaction)

    @torch.no_grad()
    def predict(self, interaction):
        """[B] score of each row's item (sampled evaluation). With a trie and no blend: its token sequence's
        log-probability (+ prior) after its user's prompt, one prefill per distinct user whose candidates are then
        scored like beams sharing its cache; otherwise the full ranking of each distinct user, read at its items."""
        first_row, row_user = self.distinct_rows(interaction[self.USER_ID])
        if self.item_trie is not None and self.blend is None:
            return self.item_trie.candidate_scores(self.llm, self.prompts(interaction[first_row]), row_user,
                                                   interaction[self.ITEM_ID])
        scores = self.full_sort_predict(interaction[first_row])  # [U, n_items]
        return scores[row_user, interaction[self.ITEM_ID]]  # [B]

    def ranking_label(self):
        """What the scores come from, for result tables: "LLM", "LLM + 2 x log popularity",
        "0.7 x LLM + 0.3 x SASRec" (min-max normalised scores, weights as mixed)."""
        label = self.llm_ranking_label()
        if self.blend is None or self.blend.weight == 0.0:
            return label
        weight = self.blend.weight
        label = f"({label})" if " + " in label else label
        return f"{1.0 - weight:g} x {label} + {weight:g} x {self.blend.name}"

    # -- inference statistics, for comparison tables ----------------------------------------------------------
    def reset_inference_stats(self):
        """Zero the counters that `record_generation` accumulates."""
        self.inference_stats = {"users": 0, "kv_bytes": 0}

    def record_generation(self, output, num_users):
        """Add one batched generation (a `GenerationOutput` for `num_users` prompts) to `inference_stats`."""
        self.inference_stats["users"] += num_users
        self.inference_stats["kv_bytes"] += sum(output.kv_layer_bytes)

    def kv_bytes_per_user(self):
        """Mean KV-cache bytes held per user at the end of its generation (None before any generation)."""
        stats = self.inference_stats
        return stats["kv_bytes"] / stats["users"] if stats["users"] else None

    # -- checkpoints: what trains, with the setup it was trained with ------------------------------------------
    def trainable_names(self):
        return {name for name, parameter in self.named_parameters() if parameter.requires_grad}

    def trained_state_dict(self):
        """Only the trained tensors (LoRA weights, registers, ...), and the record of the setup they were trained
        with (`SETUP_KEY`): what LLMTrainer's checkpoints hold. The frozen backbone is rebuilt from the config
        saved beside them, so a checkpoint is megabytes, not the whole LLM."""
        trained = self.trainable_names()
        state = {name: tensor for name, tensor in self.state_dict().items() if name in trained}
        state[SETUP_KEY] = dict(self.trained_setup)
        return state

    def load_trained_state_dict(self, state_dict, strict=True):
        """Load `trained_state_dict()`'s tensors after checking that they were trained with this model's setup (a
        checkpoint without that record, from an older version, loads with a warning). strict: every trainable
        tensor must be there, and nothing the model lacks."""
        check_trained_setup(state_dict.get(SETUP_KEY), self.trained_setup, type(self).__name__)
        weights = {name: tensor for name, tensor in state_dict.items() if name != SETUP_KEY}
        unexpected = sorted(set(weights) - set(self.state_dict(keep_vars=True)))
        missing = sorted(self.trainable_names() - set(weights))
        if strict and (unexpected or missing):
            raise CheckpointMismatchError(
                f"Checkpoint does not match {type(self).__name__}'s trainable weights: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]} (was it saved with other finetune / LoRA / register settings?)"
            )
        return self.load_state_dict(weights, strict=False)

    def load_state_dict(self, state_dict, strict=True, assign=False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.on_weights_changed()  # new weights: what was cached from the old ones goes
        return result

    def train(self, mode=True):
        if mode:
            self.on_weights_changed()  # training is about to change the weights
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        # .to() / .cuda() / .half() (quick_start.build_model moves the model to config["device"]): parameters and
        # buffers (e.g. BIGRec's popularity) follow by themselves; a cache computed from the weights (BIGRec's item
        # embeddings) is on the old device or dtype, so it is dropped. (Beam search copies LC-Rec's trie to the
        # model's device.)
        result = super()._apply(fn, *args, **kwargs)
        self.on_weights_changed()
        return result

    def on_weights_changed(self):
        """Drop whatever a subclass caches from the current weights (e.g. item embeddings)."""
