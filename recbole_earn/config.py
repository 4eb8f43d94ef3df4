"""RecBole's Config with recbole-earn's defaults layered in.

Precedence, lowest first: RecBole's own defaults (overall, model, dataset, quick-start yaml), then ours
(`properties/overall.yaml`, `properties/model/<Model>.yaml` for the model class and its base classes, base
first, then `properties/dataset/<dataset>.yaml`), then the
user's `config_file_list`, then `config_dict`, then command-line `--key=value` values (user wins). A user's
`eval_args` replaces ours key by key, so every model keeps one evaluation protocol.

The user's values are checked against the defaults before anything runs (config_checks.py).
"""

import numpy
import torch
from recbole.config import Config as RecBoleConfig

from recbole_earn.compat import apply_recbole_compat
from recbole_earn.config_checks import (
    LIST_KEYS_WITHOUT_LIST_DEFAULT,
    check_positive_counts,
    known_config_keys,
    parse_list_value,
    read_user_yaml,
    reads_utf8_bom,
    typed_like_default,
    warn_unknown_keys,
)
from recbole_earn.model_lookup import get_model_class
from recbole_earn.paths import default_yaml_files

class Config(RecBoleConfig):
    """Drop-in for `recbole.config.Config` that also finds recbole-earn's models and default yaml files.

    Unlike RecBole's, it never reads `sys.argv` by itself (under pytest or inside a script, argv belongs to
    someone else): command-line values arrive through `cmd_args`, already split into a dict by the runner.
    """

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=None):
        apply_recbole_compat()
        self._cmd_args = dict(cmd_args or {})
        self._key_sources = {}  # user key -> where it was set, for the unknown-key warning
        super().__init__(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)

    def compatibility_settings(self):
        """The NumPy aliases RecBole's code uses (`np.float`, `np.bool`, ...), set as RecBole does, but from names
        that exist in NumPy 1 and 2 alike (RecBole's own version reads `np.float_`, gone in NumPy 2)."""
        for alias, dtype in {"bool": numpy.bool_, "int": numpy.int_, "float": numpy.float64,
                             "complex": numpy.complex128, "object": numpy.object_, "str": numpy.str_,
                             "long": numpy.int_, "unicode": numpy.str_}.items():
            setattr(numpy, alias, dtype)

    def _load_config_files(self, file_list):
        values = {}
        for path in file_list or []:
            loaded = read_user_yaml(path, self.yaml_loader)
            values.update(loaded)
            self._key_sources.update(dict.fromkeys(loaded, path))
        return values

    def _load_cmd_line(self):
        self._key_sources.update({key: f"--{key}={value}" for key, value in self._cmd_args.items()})
        return self._convert_config_dict(dict(self._cmd_args))

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
        if isinstance(model, str):
            model = get_model_class(model)
        return super()._get_model_and_dataset(model, dataset)

    def _init_device(self):
        if "local_rank" not in self.final_config_dict:
            super()._init_device()  # a single process
            if self.final_config_dict.get("use_gpu") is False:
                # RecBole 1.2.1 picks the device from gpu_id alone (its use_gpu only gates GPU-memory logging);
                # use_gpu: False runs on the CPU even where CUDA is there, without hiding the GPUs (gpu_id: '').
                self.final_config_dict["device"] = torch.device("cpu")
            return
        # A rank of a multi-process run: RecBole would join with nccl on a GPU only; CPUs need gloo.
        from recbole_earn.process_group import join_process_group

        self.final_config_dict["gpu_id"] = str(self.final_config_dict["gpu_id"])
        join_process_group(self.final_config_dict)

    def _check_user_values(self):
        """Parse list knobs and check the user's values against the defaults' types (needs the defaults loaded)."""
        defaults = self.internal_config_dict
        list_keys = {key for key, value in defaults.items() if isinstance(value, list)} | LIST_KEYS_WITHOUT_LIST_DEFAULT
        for key, value in self.external_config_dict.items():
            if key in list_keys:
                # the command line's own text: RecBole's eval() has already turned `a,b` into a tuple, `[id]` into
                # a list holding the builtin id
                value = parse_list_value(key, self._cmd_args.get(key, value))
            else:
                value = typed_like_default(key, value, defaults.get(key))
            self.external_config_dict[key] = value
        warn_unknown_keys(self._key_sources, known_config_keys() | set(defaults))

    def _get_final_config_dict(self):
        self._check_user_values()
        final_config_dict = super()._get_final_config_dict()
        if final_config_dict.get("loss_type") == "CE" and "train_neg_sample_args" not in self.external_config_dict:
            # RecBole's overall.yaml samples one negative per positive, which its own check then refuses for
            # CE-loss models (SASRec, GRU4Rec, ...); the full-softmax loss needs no negatives.
            final_config_dict["train_neg_sample_args"] = None
        user_eval_args = self.external_config_dict.get("eval_args")
        if isinstance(user_eval_args, dict) and isinstance(self.internal_config_dict.get("eval_args"), dict):
            # A partial eval_args (e.g. only mode) keeps our leave-one-out split and time order for the keys it
            # leaves out; RecBole would fill them with its random 8:1:1 split.
            final_config_dict["eval_args"] = {**self.internal_config_dict["eval_args"], **user_eval_args}
        check_positive_counts(final_config_dict)
        if final_config_dict.get("encoding"):
            final_config_dict["encoding"] = reads_utf8_bom(final_config_dict["encoding"])
        return final_config_dict

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        dataset_yaml_suffix = f"dataset/{dataset}.yaml"
        for path in default_yaml_files(model_class, dataset):
            loaded = self._update_internal_config_dict(path) or {}
            if path.replace("\\", "/").endswith(dataset_yaml_suffix):
                # RecBole prints dataset keys under "Dataset Hyper Parameters"; keep ours there too.
                self.parameters["Dataset"] += [key for key in loaded if key not in self.parameters["Dataset"]]
