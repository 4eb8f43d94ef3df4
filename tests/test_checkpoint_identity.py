"""Checkpoints record the setup their weights were trained with, and a model of another setup refuses them: another
backbone of the same shapes, another earn_k, other LoRA settings, another prompt template, another LC-Rec item
index. Unreadable checkpoint files are errors that name the file."""

import logging

import pytest
import torch

from recbole_earn.compat import UnreadableCheckpointError, apply_recbole_compat, read_checkpoint_file
from recbole_earn.config import Config
from recbole_earn.model.trained_setup import SETUP_KEY, CheckpointMismatchError, differing_settings
from recbole_earn.quick_start import prepare_data
from recbole_earn.trainer import LLMTrainer


def values(mini, **overrides):
    quick = dict(llm_path="tiny-llama", train_sample_num=16, eval_batch_size=16, num_beams=4, topk=[2],
                 valid_metric="NDCG@2", index_levels=2, index_codebook_size=8, index_epochs=5)
    return {**mini["config"], **quick, **overrides}


def models_on_one_dataset(mini, model, *settings):
    """A model per dict of config overrides, all on the same prepared dataset; and that dataset's test loader."""
    configs = [Config(model=model, dataset=mini["dataset"], config_dict=values(mini, **keys)) for keys in settings]
    _, train_data, _, test_data = prepare_data(configs[0])
    return [config.model_class(config, train_data._dataset) for config in configs], configs, test_data


def test_checkpoint_records_the_setup_and_loads_into_the_same_one(mini_ml100k):
    (model,), _, _ = models_on_one_dataset(mini_ml100k, "EARNBIGRec", dict(earn_k=1, lora_alpha=16))
    state = model.trained_state_dict()
    expected = dict(llm_path="tiny-llama", model_type="llama", num_layers=4, earn_k=1, n_prefix_registers=1,
                    n_suffix_registers=1, add_bos=True, finetune="lora", lora_r=8, lora_alpha=16,
                    lora_target_modules=["q_proj", "v_proj"])
    assert {name: state[SETUP_KEY].get(name) for name in expected} == expected
    model.load_trained_state_dict(state)


def test_another_backbone_earn_k_or_lora_alpha_is_refused_naming_each(mini_ml100k, tmp_path):
    (trained, other), configs, test_data = models_on_one_dataset(
        mini_ml100k, "EARNBIGRec", dict(earn_k=1), dict(llm_path="tiny-qwen2", earn_k=2, lora_alpha=32))
    state = trained.trained_state_dict()
    with pytest.raises(CheckpointMismatchError) as refused:
        other.load_trained_state_dict(state)
    message = str(refused.value)
    for difference in ("llm_path: checkpoint 'tiny-llama', current 'tiny-qwen2'", "earn_k: checkpoint 1, current 2",
                       "lora_alpha: checkpoint 16, current 32", "model_type: checkpoint 'llama', current 'qwen2'"):
        assert difference in message

    # Through RecBole's evaluate(load_best_model=True): the refusal names the file.
    path = tmp_path / "trained.pth"
    torch.save({"state_dict": state, "other_parameter": {}}, path)
    with pytest.raises(CheckpointMismatchError, match=f"^{path}: .*earn_k: checkpoint 1, current 2"):
        LLMTrainer(configs[1], other).evaluate(test_data, load_best_model=True, model_file=str(path))


def test_registers_trained_after_bos_are_refused_where_the_prefix_register_comes_first(mini_ml100k):
    (after_bos, first), _, _ = models_on_one_dataset(mini_ml100k, "EARNBIGRec", dict(earn_k=1),
                                                     dict(earn_k=1, add_bos=False))
    assert first.llm.make_batch([[10, 11]]).register_index[0, 0].item() == 0  # position 0 holds the prefix register
    assert after_bos.llm.make_batch([[10, 11]]).register_index[0, 0].item() == -1  # BOS
    with pytest.raises(CheckpointMismatchError, match="add_bos: checkpoint True, current False"):
        first.load_trained_state_dict(after_bos.trained_state_dict())


def test_lcrec_index_built_with_another_seed_is_refused(mini_ml100k):
    (trained, other), _, _ = models_on_one_dataset(mini_ml100k, "EARNLCRec", dict(index_seed=1), dict(index_seed=2))
    assert trained.index.codes != other.index.codes
    with pytest.raises(CheckpointMismatchError,
                       match=f"item_index: checkpoint '{trained.index.digest()}', current '{other.index.digest()}'"
                             r".*copy the checkpoint's index file \(<dataset>\.item-index\.<key>\.json"):
        other.load_trained_state_dict(trained.trained_state_dict())


@pytest.mark.parametrize("model", ["EARNLCRec", "EARNBIGRec"])
def test_weights_trained_on_another_prompt_are_refused(mini_ml100k, model):
    (trained, other), _, _ = models_on_one_dataset(
        mini_ml100k, model, {}, dict(prompt_template="Seen: {history}. Next:"))
    with pytest.raises(CheckpointMismatchError, match=r"prompt_template: checkpoint '.*', current 'Seen: \{history\}"):
        other.load_trained_state_dict(trained.trained_state_dict())


def test_a_setting_an_older_checkpoint_does_not_record_is_not_compared(mini_ml100k):
    (trained, other), _, _ = models_on_one_dataset(
        mini_ml100k, "EARNBIGRec", {}, dict(prompt_template="Seen: {history}. Next:"))
    state = trained.trained_state_dict()
    del state[SETUP_KEY]["prompt_template"]  # as saved before checkpoints recorded their prompt
    assert differing_settings(state[SETUP_KEY], other.trained_setup) == []
    other.load_trained_state_dict(state)


def test_checkpoint_without_a_record_loads_with_a_warning(mini_ml100k, caplog):
    (model,), _, _ = models_on_one_dataset(mini_ml100k, "EARNBIGRec", {})
    state = model.trained_state_dict()
    del state[SETUP_KEY]  # as saved before checkpoints recorded their setup
    with caplog.at_level(logging.WARNING):
        model.load_trained_state_dict(state)
    assert "does not record the setup its weights were trained with" in caplog.text


@pytest.mark.parametrize("content, reason", [(b"", "it is empty"), (b"PK\x03\x04 cut short", "RuntimeError"),
                                             (b"not a checkpoint", "UnpicklingError")])
def test_unreadable_checkpoint_file_is_named(tmp_path, content, reason):
    path = tmp_path / "best.pth"
    path.write_bytes(content)
    with pytest.raises(UnreadableCheckpointError, match=f"Checkpoint file {path} cannot be read: {reason}"):
        read_checkpoint_file(str(path))
    apply_recbole_compat()  # RecBole's Trainer loads its checkpoints through the same function
    import recbole.trainer.trainer as recbole_trainer

    with pytest.raises(UnreadableCheckpointError, match=str(path)):
        recbole_trainer.torch.load(str(path), map_location="cpu")
