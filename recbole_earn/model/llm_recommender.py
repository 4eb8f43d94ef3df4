"""The base class of recbole-earn's LLM recommenders: a RecBole SequentialRecommender around the EARN engine.

It owns what BIGRec and LC-Rec share: the backbone (+ LoRA) and its registers from `recbole_earn.llm`, the
item titles, histories taken from RecBole's interaction, and checkpoints that hold only what trains. A
subclass supplies the prompts, the loss and the scores. `use_earn` is the one switch between a plain model
(all layers see everything, no registers) and its EARN version.
"""

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_earn.data.item_text import ItemTextTable
from recbole_earn.llm.backbone import base_causal_lm, load_backbone, prepare_for_training
from recbole_earn.llm.config import EARNConfig
from recbole_earn.llm.earn_model import EARNModel
from recbole_earn.trainer import LLMTrainer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def earn_config_from(config, num_layers, use_earn):
    """The engine's EARNConfig from RecBole config keys; the plain model runs all layers with no registers."""
    if not use_earn:
        return EARNConfig(earn_k=num_layers, n_prefix_registers=0, n_suffix_registers=0)
    return EARNConfig(
        earn_k=config["earn_k"],
        n_prefix_registers=config["n_prefix_registers"],
        n_suffix_registers=config["n_suffix_registers"],
    )


class LLMRecommender(SequentialRecommender):
    input_type = InputType.POINTWISE
    needs_item_text = True  # the runner checks for the .item file before loading the dataset
    trainer_class = LLMTrainer
    use_earn = False

    def __init__(self, config, dataset):
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
        backbone, self.tokenizer = load_backbone(config["llm_path"], dtype=DTYPES[dtype])
        backbone = prepare_for_training(
            backbone,
            finetune=config["finetune"],
            lora_r=config["lora_r"],
            lora_alpha=config["lora_alpha"],
            lora_dropout=config["lora_dropout"],
            lora_target_modules=config["lora_target_modules"],
        )
        num_layers = base_causal_lm(backbone).config.num_hidden_layers
        self.llm = EARNModel(backbone, earn_config_from(config, num_layers, self.use_earn), tokenizer=self.tokenizer)
        self.reset_inference_stats()

    @staticmethod
    def distinct_rows(user_ids):
        """(the first row of each distinct user, each row's index into those distinct users), for sampled
        evaluation, where a batch holds several rows (candidate items) per user."""
        users, row_user = torch.unique(user_ids, return_inverse=True)
        first_row = torch.full((len(users),), len(user_ids), dtype=torch.long, device=user_ids.device)
        first_row.scatter_reduce_(0, row_user, torch.arange(len(user_ids), device=user_ids.device), reduce="amin")
        return first_row, row_user

    def histories(self, interaction):
        """Each row's history as a list of internal item ids, oldest first (RecBole pads on the right)."""
        item_seq = interaction[self.ITEM_SEQ].tolist()  # [B, max_seq_length]
        lengths = interaction[self.ITEM_SEQ_LEN].tolist()  # [B]
        return [seq[:length] for seq, length in zip(item_seq, lengths)]

    def ranking_label(self):
        """What the scores come from, for result tables (a subclass that blends in other scores says so)."""
        return "LLM"

    # -- inference statistics, for comparison tables ----------------------------------------------------------
    def reset_inference_stats(self):
        """Zero the counters that `record_generation` accumulates."""
        self.inference_stats = {"users": 0, "kv_bytes": 0, "prefill_s": 0.0, "decode_s": 0.0}

    def record_generation(self, output, num_users):
        """Add one batched generation (a `GenerationOutput` for `num_users` prompts) to `inference_stats`."""
        self.inference_stats["users"] += num_users
        self.inference_stats["kv_bytes"] += sum(output.kv_layer_bytes)
        self.inference_stats["prefill_s"] += output.prefill_seconds
        self.inference_stats["decode_s"] += output.decode_seconds

    def kv_bytes_per_user(self):
        """Mean KV-cache bytes held per user at the end of its generation (None before any generation)."""
        stats = self.inference_stats
        return stats["kv_bytes"] / stats["users"] if stats["users"] else None

    # -- checkpoints: only what trains -----------------------------------------------------------------------
    def trainable_names(self):
        return {name for name, parameter in self.named_parameters() if parameter.requires_grad}

    def state_dict(self, *args, **kwargs):
        """Only the trained tensors (LoRA weights, registers, ...). The frozen backbone is rebuilt from the
        config that RecBole saves beside them, so a checkpoint is megabytes, not the whole LLM."""
        full = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        keep = {prefix + name for name in self.trainable_names()}
        return type(full)((name, tensor) for name, tensor in full.items() if name in keep)

    def load_state_dict(self, state_dict, strict=True, assign=False):
        trainable = self.trainable_names()
        unexpected = sorted(set(state_dict) - set(super().state_dict(keep_vars=True)))
        missing = sorted(trainable - set(state_dict))
        if strict and (unexpected or missing):
            raise RuntimeError(
                f"Checkpoint does not match {type(self).__name__}'s trainable weights: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]} (was it saved with other finetune / LoRA / register settings?)"
            )
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        self.on_weights_changed()
        return result

    def train(self, mode=True):
        if mode:
            self.on_weights_changed()  # training is about to change the weights
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        # .to() / .cuda() / .half() (quick_start.build_model moves the model to config["device"]): parameters and
        # buffers (e.g. BIGRec's popularity) follow by themselves; a cache computed from the weights (BIGRec's item
        # embeddings) is on the old device or dtype, so it is dropped. (LC-Rec's trie moves at each beam search.)
        result = super()._apply(fn, *args, **kwargs)
        self.on_weights_changed()
        return result

    def on_weights_changed(self):
        """Drop whatever a subclass caches from the current weights (e.g. item embeddings)."""
