"""Checks of the user's config values against the defaults, before anything runs: a list knob takes `[a,b]`,
`['a','b']` and `a,b` alike, a word where the default is a number or a switch is refused, counts must be positive,
and a key that no default has (a typo such as `earn_kk`) is logged with the closest known key."""

import ast
import difflib
import functools
import glob
import logging
import os

import yaml

from recbole_earn.errors import ConfigError
from recbole_earn.paths import properties_dir

logger = logging.getLogger(__name__)

# List knobs whose default is not a list (None, or only a dataset yaml sets them).
LIST_KEYS_WITHOUT_LIST_DEFAULT = frozenset({
    "item_text_fields", "benchmark_filename", "normalize_field", "additional_feat_suffix",
    "alias_of_user_id", "alias_of_item_id", "alias_of_entity_id", "alias_of_relation_id",
})

# Knobs that count something: 0 would fail far from the config (an empty batch, an index without code levels).
POSITIVE_INT_KEYS = (
    "train_batch_size", "eval_batch_size", "embedding_batch_size", "MAX_ITEM_LIST_LENGTH", "num_beams",
    "max_new_tokens", "lora_r", "index_levels", "index_codebook_size", "index_code_dim", "index_collaborative_dim",
)

# Keys that RecBole, its models or our runners read or set without a yaml default naming them.
RUNTIME_KEYS = frozenset({
    "model", "dataset", "config_files", "encoding", "device", "single_spec", "local_rank", "world_size", "nproc",
    "ip", "port", "offset", "verbose", "eval_type", "MODEL_TYPE", "MODEL_INPUT_TYPE", "valid_metric_bigger",
    "valid_neg_sample_args", "test_neg_sample_args", "CROP_ITEM_SEQ", "CROP_ITEM_SEQ_LEN", "INVERSE_ITEM_SEQ",
    "MASK_INDEX", "MASK_ITEM_SEQ", "NEG_ITEMS", "POS_ITEMS", "REORDER_ITEM_SEQ", "cin", "contrast", "eta",
    "feature_num", "has_residual", "norm", "sim", "tail_ratio", "token_num_threshold", "use_filter",
    "xgb_early_stopping_rounds",
})

NONE_WORDS = ("none", "null", "~")


def read_user_yaml(path, loader):
    """{key: value} of one user yaml file; a file that is not yaml, or not `key: value` lines, names itself."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        values = yaml.load(text, Loader=loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"Config file {path} is not valid yaml{where}: {problem}.") from None
    if values is None:
        return {}  # an empty file sets nothing
    if not isinstance(values, dict):
        raise ConfigError(
            f"Config file {path} holds a {type(values).__name__}; a config file is `key: value` lines."
        )
    return values


def top_level_yaml_keys(path):
    """The keys a yaml file sets at its top level (lines `key:` that start in the first column)."""
    keys = set()
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line[:1].isalpha() or line[:1] == "_":
                keys.add(line.split(":", 1)[0].strip())
    return keys


@functools.lru_cache(maxsize=1)
def known_config_keys():
    """Every key a RecBole or recbole-earn default yaml sets (any model, any dataset), plus RecBole's documented
    arguments and the keys set at run time."""
    import recbole
    from recbole.utils import dataset_arguments, evaluation_arguments, general_arguments, training_arguments

    keys = set(RUNTIME_KEYS) | set(general_arguments + training_arguments + evaluation_arguments + dataset_arguments)
    ours = properties_dir()
    folders = [os.path.join(os.path.dirname(recbole.__file__), "properties"), ours]
    # Search spaces and recipes are files a user passes, not defaults: their keys must be known elsewhere.
    not_defaults = tuple(os.path.join(ours, folder) + os.sep for folder in ("hyper", "recipe"))
    for folder in folders:
        for path in glob.glob(os.path.join(folder, "**", "*.yaml"), recursive=True):
            if not path.startswith(not_defaults):
                keys |= top_level_yaml_keys(path)
    return frozenset(keys)


def closest_key(key, known):
    """The known key nearest to `key` by spelling (case ignored), or None."""
    by_lower = {name.lower(): name for name in known}
    matches = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[matches[0]] if matches else None


def warn_unknown_keys(sources, known):
    """Log each user key that no default knows (RecBole would ignore it silently), with the closest known key."""
    for key, source in sources.items():
        if key in known:
            continue
        guess = closest_key(key, known)
        hint = f"; did you mean '{guess}'?" if guess else ""
        logger.warning(f"Unknown config key '{key}' (from {source}) is ignored: no RecBole or recbole-earn "
                       f"default has it{hint}")


def scalar_from_text(text):
    """'3' -> 3, '0.5' -> 0.5, 'true' -> True, anything else stays text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, (int, float, str)) else text


def split_list_text(key, text):
    """`[a, 'b', 3]` or `a,b,3` -> ['a', 'b', 3], for elements that Python cannot read as literals."""
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if any(bracket in inner for bracket in "[]{}()"):
        raise ConfigError(f"{key}={text} is not a list that can be read; write it as [a,b] or a,b.")
    if not inner.strip():
        return []
    elements = [element.strip() for element in inner.split(",")]
    if "" in elements:
        raise ConfigError(f"{key}={text} has an empty element; write it as [a,b] or a,b.")
    return [scalar_from_text(element.strip("'\"")) for element in elements]


def parse_list_value(key, value):
    """A list knob's value as a list: `[a,b]`, `['a','b']`, `a,b` (text, as a command line gives it), a tuple and
    a single value alike; None stays None."""
    if value is None or isinstance(value, list):
        return value
    if isinstance(value, tuple):
        return list(value)
    if not isinstance(value, str):
        return [value]
    text = value.strip()
    if text.lower() in NONE_WORDS:
        return None
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return split_list_text(key, text)
    if isinstance(parsed, (dict, set)):
        raise ConfigError(f"{key} is a list, got {text!r}; write it as [a,b] or a,b.")
    return list(parsed) if isinstance(parsed, (list, tuple)) else [parsed]


def typed_like_default(key, value, default):
    """`value` checked against the type of the key's default: a word where a number or a switch is expected is
    refused (it would fail deep in training, e.g. an optimizer comparing 'fast' with 0), and so is anything but
    True or False for a switch; 'inf' becomes a float."""
    if isinstance(default, bool) and not isinstance(value, bool):
        # a switch read as None would quietly act as False
        raise ConfigError(f"{key} must be True or False (default {default}), got {value!r}.")
    if not isinstance(value, str) or default is None:
        return value
    if value.strip().lower() in NONE_WORDS and isinstance(default, (int, float)):
        return None  # e.g. --train_time_budget_s=none, as ~ in yaml
    if isinstance(default, (int, float)):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{key} must be a number (default {default}), got {value!r}.") from None
    return value


def check_positive_counts(values):
    """Refuse a count knob (batch sizes, index levels, ...) that is not a positive integer."""
    for key in POSITIVE_INT_KEYS:
        value = values.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key} must be a positive integer, got {value!r}.")


def reads_utf8_bom(encoding):
    """The encoding to read atomic files with: UTF-8 also reads through a byte-order mark at the file's start
    (spreadsheet exports write one, and RecBole would take it as part of the first field's name)."""
    if isinstance(encoding, str) and encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        return "utf-8-sig"
    return encoding
