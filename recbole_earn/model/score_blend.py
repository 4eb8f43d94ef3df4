"""A conventional RecBole model's scores blended into an LLM recommender's ranking.

BIGRec's "collaborative information" variant, for every LLM recommender: the final ranking mixes the LLM's
scores (BIGRec's grounding, or the items of a constrained beam search) with the scores of a conventional
recommender (e.g. a trained SASRec) over the same items. The conventional model comes from a RecBole checkpoint
of the same dataset (`python run_earn.py --model=SASRec ...` writes `saved/SASRec-<date>.pth`), rebuilt on the LLM
model's dataset and frozen. It sees the LLM's batches, so its histories are the LLM's (MAX_ITEM_LIST_LENGTH items).

Scale rule: each row's scores over the real items (ids 1..n-1) are min-max normalised to [0, 1], then mixed as
(1 - weight) * LLM + weight * conventional. The two scales are unrelated (negative L2 distances between LLM
embeddings vs. logits or counts), and min-max removes each one's offset and scale per user while keeping how far
apart the items are, which ranks would discard. Each normalisation is increasing, so weight 0 keeps the LLM's
order and weight 1 the conventional model's. The padding id 0 stays -inf.
"""

import os

import torch
from recbole.utils import get_model

from recbole_earn.compat import load_recbole_checkpoint
from recbole_earn.model import get_earn_model


class ScoreBlend:
    """A frozen conventional model and its weight. A plain object, not an nn.Module, so that its tensors stay out
    of the host model's parameters, state_dict (its checkpoints) and .train(); it is placed on config['device'],
    where RecBole puts the host, when loaded."""

    def __init__(self, model, weight):
        self.model = model
        self.weight = weight

    @property
    def name(self):
        return type(self.model).__name__

    @classmethod
    def from_config(cls, config, dataset):
        """The blend that `blend_model_checkpoint` and `blend_weight` ask for, or None when the path is ~."""
        path = config["blend_model_checkpoint"]
        if not path:
            return None
        weight = config["blend_weight"]
        if weight is None or not 0.0 <= float(weight) <= 1.0:
            raise ValueError(f"blend_weight must be in [0, 1] (the conventional model's weight), got {weight!r}")
        with torch.random.fork_rng(devices=[]):  # its throwaway initialisation must not shift the seeded run
            model = load_conventional_model(path, config, dataset)
        return cls(model, float(weight))

    @torch.no_grad()
    def mix(self, llm_scores, interaction):
        """[B, n_items] LLM scores -> [B, n_items] blended scores for the same rows of `interaction`."""
        if self.weight == 0.0:
            return llm_scores
        # It runs where its weights are (config["device"], where RecBole also puts the host and the batches), and its
        # scores join the LLM's where those are: both moves are no-ops unless someone moved one model alone.
        weights = next(self.model.parameters(), None)
        if weights is not None:
            interaction = interaction.to(weights.device)
        other = self.model.full_sort_predict(interaction).view(llm_scores.shape)  # some models return [B * n_items]
        return blend_scores(llm_scores, other.to(llm_scores.device), self.weight)


def min_max_rows(scores):
    """[B, n_items] -> [B, n_items - 1] (float64): each row's real items (ids 1..n-1) mapped onto [0, 1]; a row
    with a single value maps to 0. Items at -inf (no constrained beam reached them) count as the row's lowest
    finite score."""
    real = scores[:, 1:].double()
    finite = torch.isfinite(real)
    floor = real.masked_fill(~finite, float("inf")).min(dim=1, keepdim=True).values  # [B, 1]
    real = torch.where(finite, real, floor.nan_to_num(posinf=0.0))
    low = real.min(dim=1, keepdim=True).values  # [B, 1]
    span = real.max(dim=1, keepdim=True).values - low  # [B, 1]
    return (real - low) / span.clamp(min=torch.finfo(real.dtype).tiny)


def blend_scores(llm_scores, other_scores, weight):
    """(1 - weight) * min-max(llm) + weight * min-max(other), per row; [B, n_items], -inf at the padding id 0."""
    mixed = (1.0 - weight) * min_max_rows(llm_scores) + weight * min_max_rows(other_scores)  # [B, n_items - 1]
    scores = torch.full_like(llm_scores, float("-inf"))
    scores[:, 1:] = mixed.to(scores.dtype)
    return scores


# -- loading ---------------------------------------------------------------------------------------------------
def load_conventional_model(path, config, dataset):
    """The RecBole model saved in checkpoint `path`, rebuilt on `dataset` (the LLM model's), frozen, eval mode."""
    checkpoint = read_checkpoint(path)
    saved_config = checkpoint["config"]
    model_class = conventional_model_class(path, saved_config["model"])
    if saved_config["dataset"] != config["dataset"]:
        raise ValueError(
            f"blend_model_checkpoint {path} was trained on dataset '{saved_config['dataset']}', but this run uses "
            f"'{config['dataset']}'; train {saved_config['model']} on '{config['dataset']}' and pass its checkpoint."
        )
    saved_config["device"] = config["device"]  # it may have been saved on another machine
    model = model_class(saved_config, dataset)
    check_history_length(path, model, config)
    check_shapes(path, model, checkpoint, dataset)
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    model.requires_grad_(False)
    return model.to(config["device"]).eval()


def read_checkpoint(path):
    """The dict RecBole's Trainer saved at `path` (it holds 'config' and 'state_dict')."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"blend_model_checkpoint {path} does not exist. Train the conventional model on the same dataset first "
            f"(e.g. python run_earn.py --model=SASRec --dataset=<dataset>) and pass the saved/<Model>-<date>.pth it "
            f"writes, or set blend_model_checkpoint: ~ to rank by the LLM alone."
        )
    try:
        checkpoint = load_recbole_checkpoint(path)  # torch.load(weights_only=False): it pickles the Config
    except Exception as error:  # pickle, zip and torch errors alike
        message = f"blend_model_checkpoint {path} is not a RecBole checkpoint: torch.load failed ({error})."
        raise ValueError(message) from error
    if not (isinstance(checkpoint, dict) and {"config", "state_dict"} <= set(checkpoint)):
        raise ValueError(
            f"blend_model_checkpoint {path} is not a RecBole checkpoint (a dict with 'config' and 'state_dict', as "
            f"run_earn.py / RecBole's Trainer save to saved/<Model>-<date>.pth)."
        )
    return checkpoint


def conventional_model_class(path, name):
    if get_earn_model(name) is not None:
        raise ValueError(
            f"blend_model_checkpoint {path} holds {name}, an LLM recommender; blend a conventional RecBole model "
            f"(e.g. SASRec) instead."
        )
    try:
        return get_model(name)
    except ValueError as error:
        raise ValueError(f"blend_model_checkpoint {path} holds model '{name}', unknown to RecBole.") from error


def check_history_length(path, model, config):
    """A sequential model must not get longer histories than it was built for (SASRec's position embeddings)."""
    longest = getattr(model, "max_seq_length", None)
    if longest is not None and config["MAX_ITEM_LIST_LENGTH"] > longest:
        raise ValueError(
            f"blend_model_checkpoint {path} holds a {type(model).__name__} for histories of up to {longest} items, "
            f"but this run's MAX_ITEM_LIST_LENGTH is {config['MAX_ITEM_LIST_LENGTH']}; set it to {longest} or less."
        )


def check_shapes(path, model, checkpoint, dataset):
    """Every saved tensor must fit the model rebuilt on this dataset: a different item (or user) count means the
    checkpoint's ids are not this dataset's."""
    expected = {**model.state_dict(), **model.other_parameter()}
    saved = {**checkpoint["state_dict"], **(checkpoint.get("other_parameter") or {})}
    for name, tensor in saved.items():
        here = expected.get(name)
        if torch.is_tensor(tensor) and torch.is_tensor(here) and tensor.shape != here.shape:
            raise ValueError(
                f"blend_model_checkpoint {path} does not fit dataset '{dataset.dataset_name}' as this run prepares "
                f"it ({dataset.item_num - 1} items, {dataset.user_num - 1} users): {name} is {list(tensor.shape)} "
                f"there, {list(here.shape)} here. Train the conventional model with this run's dataset settings "
                f"(filtering, load_col) and pass that checkpoint."
            )
