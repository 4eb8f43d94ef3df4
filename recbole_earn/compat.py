"""Runtime fixes that RecBole 1.2.1 needs on today's torch and pandas, applied once by `apply_recbole_compat()`.

Each fix is scoped to the RecBole module that needs it (no process-wide monkey patching of torch or pandas)
and is idempotent. Reading `sys.argv` is the other known pitfall; it is handled by
`recbole_earn.config.Config`, which only takes command-line values that the runner hands over explicitly.
"""

import csv
import os
import pickle
import types

import numpy
import pandas
import torch
from recbole.utils import FeatureType

from recbole_earn.errors import UserInputError

_applied = False


class UnreadableCheckpointError(UserInputError):
    """A checkpoint file that torch cannot load: empty, truncated, corrupt or not a checkpoint."""


class _ModuleWithOverrides(types.ModuleType):
    """A module as seen from one RecBole module: every attribute of `module`, except the given functions."""

    def __init__(self, module, **overrides):
        super().__init__(module.__name__)
        self._module = module
        self.__dict__.update(overrides)

    def __getattr__(self, name):  # only called for names not overridden
        return getattr(self._module, name)


def unreadable_reason(path, error):
    """Why torch could not load the file at `path`, in words."""
    if isinstance(path, (str, os.PathLike)) and os.path.isfile(path) and os.path.getsize(path) == 0:
        return "it is empty (0 bytes)"
    return f"{type(error).__name__}: {error} (a truncated or corrupt file, or not a torch checkpoint?)"


def read_checkpoint_file(path, **kwargs):
    """torch.load of a checkpoint file, weights_only=False by default (RecBole's checkpoints pickle the whole
    Config); a file that cannot be loaded is an error naming it and why."""
    kwargs.setdefault("weights_only", False)
    try:
        return torch.load(path, **kwargs)
    except (EOFError, pickle.UnpicklingError, RuntimeError, ValueError) as error:
        raise UnreadableCheckpointError(
            f"Checkpoint file {path} cannot be read: {unreadable_reason(path, error)}") from error


def require_checkpoint_file(path, flag="--checkpoint"):
    """A checkpoint path given on a command line must be a file; the error names the flag and where run_earn.py
    writes checkpoints."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag} {path} does not exist (run_earn.py writes saved/<Model>-<date>.pth)")


def load_recbole_checkpoint(path, map_location="cpu", **kwargs):
    """Load a checkpoint written by RecBole's Trainer: a pickled dict that holds the whole Config."""
    return read_checkpoint_file(path, map_location=map_location, **kwargs)


def _read_atomic_file(*args, **kwargs):
    kwargs.setdefault("quoting", csv.QUOTE_NONE)
    return pandas.read_csv(*args, **kwargs)


def _distributed_data_parallel(module, device_ids=None, **kwargs):
    """DDP as RecBole's Trainer builds it, but with no device_ids for a module on the CPU (gloo)."""
    if next(module.parameters()).device.type == "cpu":
        device_ids = None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids, **kwargs)


class _NoTensorboard:
    """Stands in for a SummaryWriter on ranks other than 0: every method does nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _tensorboard_on_rank_zero(get_tensorboard):
    def tensorboard(logger):
        if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return _NoTensorboard()
        return get_tensorboard(logger)

    return tensorboard


def _count_every_interaction(self, interaction):
    """RecBole's Pop.calculate_loss, counting an item as often as the batch holds it: RecBole's indexed `+= 1`
    counts it once per batch, so its counts depend on how the seed's shuffle batches the split."""
    items = interaction[self.ITEM_ID]
    self.item_cnt.index_add_(0, items, torch.ones(len(items), 1, dtype=self.item_cnt.dtype, device=items.device))
    self.max_cnt = torch.max(self.item_cnt, dim=0)[0]
    return torch.nn.Parameter(torch.zeros(1)).to(self.device)


def _remap_token_ids(self, remap_list):
    """RecBole's Dataset._remap (factorize every token field that shares an id space), with each token
    sequence's length taken row by row: pandas 3's `Series.agg(len)` is the length of the whole column."""
    if len(remap_list) == 0:
        return
    tokens, split_point = self._concat_remaped_tokens(remap_list)
    new_ids_list, id_to_token = pandas.factorize(tokens)
    new_ids_list = numpy.split(new_ids_list + 1, split_point)
    id_to_token = numpy.array(["[PAD]"] + list(id_to_token))
    token_to_id = {token: i for i, token in enumerate(id_to_token)}
    for (feat, field, ftype), new_ids in zip(remap_list, new_ids_list):
        if field not in self.field2id_token:
            self.field2id_token[field] = id_to_token
            self.field2token_id[field] = token_to_id
        if ftype == FeatureType.TOKEN:
            feat[field] = new_ids
        elif ftype == FeatureType.TOKEN_SEQ:
            feat[field] = numpy.split(new_ids, numpy.cumsum(feat[field].map(len).to_numpy())[:-1])


def _fill_float_nan_first(fill_nan):
    """RecBole's Dataset._fill_nan, after missing float values got their column's mean by assignment: RecBole's
    `feat[field].fillna(..., inplace=True)` changes a copy under pandas 3's copy-on-write, and the NaN stay."""
    def fill(self):
        for feat_name in self.feat_name_list:
            feat = getattr(self, feat_name)
            for field in feat:
                if self.field2type[field] == FeatureType.FLOAT:
                    feat[field] = feat[field].fillna(value=feat[field].mean())
        fill_nan(self)

    return fill


def apply_recbole_compat():
    """Apply the fixes once; later calls do nothing."""
    global _applied
    if _applied:
        return
    import recbole.data.dataset.dataset as recbole_dataset
    import recbole.trainer.trainer as recbole_trainer

    # Why: torch >= 2.6 loads with weights_only=True, and RecBole's checkpoints pickle the whole Config
    # ("Unsupported operand 149" at trainer.evaluate(load_best_model=True)).
    # A checkpoint that cannot be loaded (e.g. truncated) is reported by its file name.
    recbole_trainer.torch = _ModuleWithOverrides(torch, load=read_checkpoint_file)

    # Why: atomic files are plain tab-separated text, but pandas treats a field that starts with '"' as quoted
    # and then fails ("'\t' expected after '\"'") or swallows text, e.g. a title like `"Weird Al" Yankovic`.
    recbole_dataset.pd = _ModuleWithOverrides(pandas, read_csv=_read_atomic_file)

    # Why: pandas 3 applies `Series.agg(len)` to the whole column, so RecBole's remapping of token sequences
    # (ml-100k's genres and titles) fails with "Length of values (1) does not match length of index".
    # And its copy-on-write leaves RecBole's in-place fillna of float fields without effect (NaN stay).
    recbole_dataset.Dataset._remap = _remap_token_ids
    recbole_dataset.Dataset._fill_nan = _fill_float_nan_first(recbole_dataset.Dataset._fill_nan)

    # Why: RecBole's Trainer passes device_ids=[rank] to DistributedDataParallel, which a CPU module refuses
    # (multi-process training on CPUs with gloo).
    recbole_trainer.DistributedDataParallel = _distributed_data_parallel

    # Why: every rank's Trainer opens its own tensorboard event file; only rank 0 should write files.
    recbole_trainer.get_tensorboard = _tensorboard_on_rank_zero(recbole_trainer.get_tensorboard)

    # Why: recbole/model/sequential_recommender/sine.py runs torch.autograd.set_detect_anomaly(True) at
    # import, which makes every backward about 1.7x slower, LLMs included. Import the zoo now, then undo it.
    import recbole.model.sequential_recommender  # noqa: F401

    torch.autograd.set_detect_anomaly(False)

    # Why: Pop is the popularity count every model is compared with; RecBole's counts an item once per batch.
    from recbole.model.general_recommender.pop import Pop

    Pop.calculate_loss = _count_every_interaction
    _applied = True
