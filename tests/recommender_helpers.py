"""Scaffolding shared by the LLM recommender tests: build a model as the trainer sees it, train it briefly, and
check that its checkpoint restores the same scores."""

import logging
import os

import torch
from recbole.model.sequential_recommender import SASRec

from recbole_earn.quick_start import build_model, prepare_data
from recbole_earn.trainer import few_shot_loader


def device_keys(device, llm_dtype=None):
    """RecBole config keys that put a run on `device` (the `device` fixture's "cpu" or "cuda"): RecBole takes CUDA
    from gpu_id where CUDA is there, and recbole_earn's Config keeps use_gpu: False on the CPU (an empty gpu_id
    would also mean the CPU, but RecBole writes it to CUDA_VISIBLE_DEVICES for the whole process). With
    `llm_dtype`, the LLM's precision too."""
    on_gpu = torch.device(device).type == "cuda"
    keys = {"use_gpu": on_gpu, "gpu_id": "0"} if on_gpu else {"use_gpu": False}
    if llm_dtype is not None:
        keys["llm_dtype"] = llm_dtype
    return keys


def build(config):
    """(model, few-shot train loader, valid loader, test loader), as the LLM trainer would see them."""
    _, train_data, valid_data, test_data = prepare_data(config)
    model = build_model(config, train_data, logging.getLogger())
    return model, few_shot_loader(train_data, config["train_sample_num"], config["seed"]), valid_data, test_data


def saved_checkpoint(folder, model):
    """The path of the one checkpoint of `model` that run_earn saved in `folder`."""
    (name,) = [name for name in os.listdir(folder) if name.startswith(f"{model}-")]
    return os.path.join(folder, name)


def first_batch(loader, device=None):
    """The loader's first interaction, on `device` when given (as RecBole's Trainer moves every batch)."""
    batch = next(iter(loader))
    batch = batch[0] if isinstance(batch, tuple) else batch
    return batch if device is None else batch.to(device)


def model_device(model):
    return next(model.parameters()).device


def train(model, loader, epochs=1, lr=0.01):
    """AdamW over what trains, `epochs` passes over `loader` (batches on the model's device); leaves the model in
    eval mode."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    device = model_device(model)
    model.train()
    for _ in range(epochs):
        for interaction in loader:
            optimizer.zero_grad()
            model.calculate_loss(interaction.to(device)).backward()
            optimizer.step()
    model.eval()


def assert_checkpoint_restores_scores(config, model, users, path):
    """Save what `model` trains, rebuild from `config` with another seed, load, and compare full-sort scores."""
    expected = model.full_sort_predict(users)
    torch.save({"state_dict": model.trained_state_dict()}, path)
    config["seed"] = 7  # a different initialisation, then the saved weights
    restored, _, _, _ = build(config)
    restored.load_trained_state_dict(torch.load(path)["state_dict"])
    restored.eval()
    torch.testing.assert_close(restored.full_sort_predict(users), expected, rtol=0, atol=1e-5)


def saved_sasrec_scores(path, config, users):
    """[B, n_items]: a saved SASRec's own full-sort scores, rebuilt independently of the LLM recommender."""
    checkpoint = torch.load(path, weights_only=False, map_location=users[config["USER_ID_FIELD"]].device)
    _, train_data, _, _ = prepare_data(config)
    sasrec = SASRec(checkpoint["config"], train_data._dataset)
    sasrec.load_state_dict(checkpoint["state_dict"])
    with torch.no_grad():
        return sasrec.to(users[config["USER_ID_FIELD"]].device).eval().full_sort_predict(users)


def reference_padded(scores):
    """[B, n_items - 1] -> [B, n_items] with the padding id 0 in front."""
    return torch.cat([torch.full_like(scores[:, :1], float("-inf")), scores], dim=1)
