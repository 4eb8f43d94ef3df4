"""What an LLM recommender's trained weights depend on, saved with them and checked when they are loaded.

Weights trained for one setup can fit another one's shapes exactly and still mean nothing there: LoRA weights of
one backbone on a same-sized other, registers trained for earn_k=2 read at layer 3, code-token rows of an item
index built with another seed. The record names the backbone (llm_path as resolved, and its architecture's key
numbers), the EARN settings, the LoRA settings, the prompt template and, for LC-Rec, the item index's digest.
"""

import logging
import os

from recbole_earn.errors import UserInputError
from recbole_earn.llm.backbone import PRESETS, base_causal_lm

SETUP_KEY = "_trained_setup"  # the state-dict entry that holds the record (the only entry that is not a tensor)
ARCHITECTURE_KEYS = ("model_type", "hidden_size", "intermediate_size", "num_attention_heads",
                     "num_key_value_heads", "vocab_size")

logger = logging.getLogger(__name__)


class CheckpointMismatchError(UserInputError, RuntimeError):
    """Weights saved by a model of another setup (a RuntimeError, as torch's own state-dict mismatches are)."""


def resolved_llm_path(llm_path):
    """llm_path as the backbone was found: a preset or hub id as written, a local folder or file by its real path
    (so `./model` and `/abs/model` agree)."""
    name = str(llm_path).strip()
    path = os.path.expanduser(name)
    if name in PRESETS or not os.path.exists(path):
        return name
    return os.path.realpath(path)


def lora_settings(backbone):
    """The LoRA adapter's r, alpha and target modules as peft holds them ({} without LoRA)."""
    adapter = getattr(backbone, "peft_config", {}).get("default")
    if adapter is None:
        return {}
    modules = adapter.target_modules
    return {"lora_r": adapter.r, "lora_alpha": adapter.lora_alpha,
            "lora_target_modules": modules if isinstance(modules, str) else sorted(modules)}


def trained_setup(llm_path, finetune, earn_model):
    """The record of what the trained weights of an EARNModel (its backbone loaded from `llm_path`, fine-tuned
    as `finetune` says) depend on: plain values only, so that it pickles into any checkpoint."""
    architecture = base_causal_lm(earn_model.backbone).config
    return {
        "llm_path": resolved_llm_path(llm_path),
        **{key: getattr(architecture, key, None) for key in ARCHITECTURE_KEYS},
        "num_layers": earn_model.num_layers,
        "earn_k": earn_model.earn_k,
        "n_prefix_registers": earn_model.n_prefix_registers,
        "n_suffix_registers": earn_model.n_suffix_registers,
        "add_bos": earn_model.bos_token_id is not None,
        "finetune": finetune,
        **lora_settings(earn_model.backbone),
    }


# What to do when a setting differs, where "load it with the settings it was trained with" is not enough.
FIXES = {
    "item_index": "The item index holds other codes than the one the code tokens were trained for: an index "
                  "rebuilt on another machine can assign other codes even with the same settings (floating-point "
                  "results differ between machines), so copy the checkpoint's index file "
                  "(<dataset>.item-index.<key>.json, from item_index_dir or the cache's item_index folder) along "
                  "with the checkpoint.",
}


def differing_settings(saved, current):
    """The names of the settings the checkpoint records whose values differ (None: not in the current record),
    sorted. A setting recorded only by newer versions (e.g. prompt_template) is not compared on older checkpoints."""
    return [name for name in sorted(saved) if saved[name] != current.get(name)]


def check_trained_setup(saved, current, model_name):
    """Refuse weights trained with another setup; weights without a record (older checkpoints) load with a
    warning, since nothing can be checked."""
    if saved is None:
        logger.warning(f"The checkpoint loaded into {model_name} does not record the setup its weights were trained "
                       f"with (saved by an older recbole-earn): loading it unchecked.")
        return
    names = differing_settings(saved, current)
    if names:
        differences = [f"{name}: checkpoint {saved.get(name)!r}, current {current.get(name)!r}" for name in names]
        fixes = [FIXES[name] for name in names if name in FIXES]
        raise CheckpointMismatchError(
            f"The checkpoint's weights were trained with another setup than this {model_name}'s: "
            + "; ".join(differences) + ". Load it with the settings it was trained with."
            + "".join(" " + fix for fix in fixes)
        )
