"""The LLM side of recbole-earn, independent of RecBole: backbone loading, the EARN engine, decoding.

    from recbole_earn.llm import load_backbone, prepare_for_training, EARNConfig, EARNModel, beam_search
    backbone, tokenizer = load_backbone("smollm2-135m")
    backbone = prepare_for_training(backbone, "lora", lora_r=8)
    model = EARNModel(backbone, EARNConfig(earn_k=8), tokenizer)
    loss = model.compute_loss(prompt_ids, response_ids)
    out = beam_search(model, prompt_ids, num_beams=4, max_new_tokens=16)
"""

from .backbone import (
    PRESETS,
    SUPPORTED_MODEL_TYPES,
    base_causal_lm,
    build_tiny,
    cache_root,
    load_backbone,
    prepare_for_training,
    smollm2_folder,
    smollm2_tokenizer,
)
from .batch import IGNORE_INDEX, EARNBatch, build_batch
from .cache import EARNCache
from .config import EARNConfig
from .decoding import GenerationOutput, beam_search, constrained_beam_search, greedy_search
from .earn_model import EARNModel, EARNOutput, PrefillOutput
from .kv_press import KVPress, SnapKV, StreamingLLM
from .pooled_beam_search import pooled_beam_search
from .trie import TokenTrie

__all__ = [
    "PRESETS", "SUPPORTED_MODEL_TYPES", "base_causal_lm", "build_tiny", "cache_root", "load_backbone",
    "prepare_for_training", "smollm2_folder", "smollm2_tokenizer", "IGNORE_INDEX", "EARNBatch", "build_batch",
    "EARNCache", "EARNConfig", "GenerationOutput", "beam_search", "constrained_beam_search", "greedy_search",
    "EARNModel", "EARNOutput", "PrefillOutput", "KVPress", "SnapKV", "StreamingLLM", "TokenTrie",
    "pooled_beam_search",
]
