"""Input that used to give wrong results with exit 0, or a raw error: each now gives a clear message naming the
file or value and the fix, or the result the user meant."""

import logging
import types

import pytest

from recbole_earn.config import Config
from recbole_earn.data.atomic_files import AtomicFileError, check_atomic_files
from recbole_earn.data.prompts import PromptError, split_template, warn_if_beyond_context
from recbole_earn.errors import ConfigError
from recbole_earn.model.bigrec import BIGRec, EARNBIGRec
from recbole_earn.model.lcrec import LCRec
from recbole_earn.model.llm_recommender import earn_config_from, refuse_training_nothing
from recbole_earn.quick_start import prepare_data

from recommender_helpers import build

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
ITEM_HEADER = "item_id:token\ttitle:token_seq\n"
ITEMS = ("i1", "i2", "i3", "i4")


def inter_rows(items=ITEMS, users=6):
    return "".join(f"u{user}\t{item}\t5\t{100 * user + step}\n" for user in range(1, users + 1)
                   for step, item in enumerate(items))


def item_rows(items=ITEMS):
    return "".join(f"{item}\tTitle of {item}\n" for item in items)


def write_dataset(root, name, inter=None, item=None, encoding="utf-8"):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / f"{name}.inter").write_bytes((INTER_HEADER + inter_rows() if inter is None else inter).encode(encoding))
    (folder / f"{name}.item").write_bytes((ITEM_HEADER + item_rows() if item is None else item).encode(encoding))
    return folder


def llm_config(root, name, model="EARNBIGRec", **overrides):
    values = {
        "data_path": str(root),
        "TITLE_FIELD": "title",
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "title"]},
        "user_inter_num_interval": None,
        "item_inter_num_interval": None,
        "show_progress": False,
    }
    values.update(overrides)
    return Config(model=model, dataset=name, config_dict=values)


def warnings_of(caplog, logger_name):
    return [record.getMessage() for record in caplog.records if record.name == logger_name]


# -- items without a .item row ----------------------------------------------------------------------------------
def test_interactions_of_items_without_a_row_stop_the_run(tmp_path):
    write_dataset(tmp_path, "partial", item=ITEM_HEADER + item_rows(ITEMS[:3]))
    with pytest.raises(AtomicFileError, match=r"1 items have no row in .*partial\.item but hold 6 interactions "
                                              r"\(e\.g\. 'i4' \(6\)\).*drop_items_without_text: True"):
        prepare_data(llm_config(tmp_path, "partial"))


def test_drop_items_without_text_drops_them_with_a_logged_count(tmp_path, caplog):
    write_dataset(tmp_path, "partial", item=ITEM_HEADER + item_rows(ITEMS[:3]))
    with caplog.at_level(logging.WARNING):
        dataset, _, _, _ = prepare_data(llm_config(tmp_path, "partial", drop_items_without_text=True))
    assert any("1 items have no row" in message and "6 interactions" in message
               for message in warnings_of(caplog, "recbole_earn.data.atomic_files"))
    assert list(dataset.field2token_id["item_id"]) == ["[PAD]", "i1", "i2", "i3"]


# -- list values on the command line -----------------------------------------------------------------------------
@pytest.mark.parametrize("raw", ["[q_proj,k_proj,v_proj]", "['q_proj','k_proj','v_proj']", "q_proj,k_proj,v_proj",
                                 "[q_proj, 'k_proj', v_proj]"])
def test_list_knobs_take_every_spelling(raw):
    config = Config(model="EARNLCRec", dataset="ml-100k", cmd_args={
        "lora_target_modules": raw, "item_text_fields": raw.replace("q_proj", "brand").replace("k_proj", "categories"),
        "topk": "5,10", "metrics": "[Recall,NDCG]"})
    assert config["lora_target_modules"] == ["q_proj", "k_proj", "v_proj"]
    assert config["item_text_fields"] == ["brand", "categories", "v_proj"]
    assert config["topk"] == [5, 10] and config["metrics"] == ["Recall", "NDCG"]


def test_one_value_of_a_list_knob_is_a_list_of_one():
    config = Config(model="EARNBIGRec", dataset="ml-100k", cmd_args={"lora_target_modules": "q_proj", "topk": "10"})
    assert config["lora_target_modules"] == ["q_proj"] and config["topk"] == [10]


def test_lora_lands_on_every_listed_projection():
    from recbole_earn.llm.backbone import load_backbone, prepare_for_training

    config = Config(model="EARNBIGRec", dataset="ml-100k", cmd_args={"lora_target_modules": "[q_proj,k_proj,v_proj]"})
    backbone, _ = load_backbone("tiny-llama")
    backbone = prepare_for_training(backbone, "lora", lora_target_modules=config["lora_target_modules"])
    adapted = {name.split(".")[-1] for name, module in backbone.named_modules() if hasattr(module, "lora_A")}
    assert adapted == {"q_proj", "k_proj", "v_proj"}


def test_an_unreadable_list_is_refused():
    with pytest.raises(ConfigError, match=r"lora_target_modules=\[q_proj,k_proj is not a list"):
        Config(model="EARNBIGRec", dataset="ml-100k", cmd_args={"lora_target_modules": "[q_proj,k_proj"})


# -- earn_k ---------------------------------------------------------------------------------------------------------
def test_earn_k_zero_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match=r"earn_k=0 would never read the prompt: layers \[0, earn_k\) are the only"):
        earn_config_from({"earn_k": 0, "n_prefix_registers": 1, "n_suffix_registers": 1}, 30, use_earn=True)


def test_earn_k_beyond_the_layers_is_refused():
    with pytest.raises(ConfigError, match=r"earn_k=31 is outside \[0, 30\]: the backbone has 30 decoder layers"):
        earn_config_from({"earn_k": 31, "n_prefix_registers": 1, "n_suffix_registers": 1}, 30, use_earn=True)
    assert earn_config_from({"earn_k": 0}, 30, use_earn=False).earn_k == 30  # the plain model ignores earn_k


def test_earn_k_left_unset_is_a_share_of_the_layers():
    registers = {"n_prefix_registers": 1, "n_suffix_registers": 1}
    assert earn_config_from({"earn_k": None, "earn_k_fraction": 0.125, **registers}, 30, use_earn=True).earn_k == 4
    assert earn_config_from({"earn_k": None, "earn_k_fraction": 0.25, **registers}, 30, use_earn=True).earn_k == 8
    assert earn_config_from({"earn_k": None, "earn_k_fraction": 0.125, **registers}, 4, use_earn=True).earn_k == 1
    assert earn_config_from({"earn_k": 6, "earn_k_fraction": 0.125, **registers}, 30, use_earn=True).earn_k == 6
    assert Config(model="EARNLCRec", dataset="ml-100k")["earn_k_fraction"] == 0.125  # the paper's LC-Rec k: 4 of 32
    with pytest.raises(ConfigError, match=r"earn_k_fraction must be a number in \(0, 1\], got 1\.5"):
        earn_config_from({"earn_k": None, "earn_k_fraction": 1.5, **registers}, 30, use_earn=True)


def test_earn_k_zero_is_refused_by_the_recommender(mini_ml100k):
    values = dict(mini_ml100k["config"], llm_path="tiny-llama", earn_k=0)
    with pytest.raises(ConfigError, match=r"earn_k=0 would never read the prompt.*the backbone has 4 layers"):
        build(Config(model="EARNBIGRec", dataset=mini_ml100k["dataset"], config_dict=values))


# -- titles, duplicate rows, prompt length, misspelled keys ----------------------------------------------------------
def test_duplicate_item_rows_are_named(tmp_path):
    write_dataset(tmp_path, "dups", item=ITEM_HEADER + item_rows() + "i2\tAnother title\n")
    with pytest.raises(AtomicFileError, match=r"more than one row for 1 item ids \(e\.g\. \['i2'\]\)"):
        check_atomic_files(llm_config(tmp_path, "dups"), need_item_text=True)


def test_prompts_beyond_the_context_are_named_with_the_knobs(caplog):
    backbone_config = types.SimpleNamespace(max_position_embeddings=100)
    llm = types.SimpleNamespace(causal_lm=types.SimpleNamespace(config=backbone_config), bos_token_id=1, n_registers=2)
    with caplog.at_level(logging.WARNING):
        warn_if_beyond_context(llm, prompt_tokens=90, response_tokens=7, knobs="MAX_ITEM_LIST_LENGTH")
        warn_if_beyond_context(llm, prompt_tokens=90, response_tokens=8, knobs="MAX_ITEM_LIST_LENGTH")
    [message] = warnings_of(caplog, "recbole_earn.data.prompts")
    assert "101 tokens" in message and "100 positions" in message and "MAX_ITEM_LIST_LENGTH" in message


@pytest.mark.parametrize("model", ["EARNBIGRec", "EARNLCRec"])
def test_recommenders_log_prompts_beyond_the_backbone_context(mini_ml100k, monkeypatch, caplog, model):
    from recbole_earn.llm import backbone

    tiny_config = backbone.tiny_config

    def short_context(*args, **kwargs):
        config = tiny_config(*args, **kwargs)
        config.max_position_embeddings = 64
        return config

    monkeypatch.setattr(backbone, "tiny_config", short_context)
    values = dict(mini_ml100k["config"], llm_path="tiny-llama", num_beams=10, topk=[5, 10], valid_metric="NDCG@10",
                  index_epochs=5, history_with_titles=True)
    with caplog.at_level(logging.WARNING):
        build(Config(model=model, dataset=mini_ml100k["dataset"], config_dict=values))
    [message] = warnings_of(caplog, "recbole_earn.data.prompts")
    assert "than the backbone's 64 positions (max_position_embeddings)" in message
    assert "MAX_ITEM_LIST_LENGTH" in message and ("history_with_titles" in message) == (model == "EARNLCRec")


def test_longest_prompt_takes_the_longest_items():
    from recbole_earn.data.prompts import HistoryPrompter

    def characters(text, add_special_tokens=False):  # one token per character
        return {"input_ids": [ord(character) for character in text]}

    prompter = HistoryPrompter(characters, "<{history}>", ["", "a", "bbb", "cc"], separator=", ")
    assert prompter.longest_prompt_length(2) == len("<bbb, cc>")
    assert prompter.longest_prompt_length(10) == len("<bbb, cc, a>")


def test_misspelled_keys_are_logged_with_the_closest_known_key(tmp_path, caplog):
    user_yaml = tmp_path / "my.yaml"
    user_yaml.write_text("earn_kk: 4\nhidden_size: 32\nitem_noun: films\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        Config(model="EARNBIGRec", dataset="ml-100k", config_file_list=[str(user_yaml)],
               cmd_args={"TITLE_FEILD": "title", "earn_k": "4"})
    messages = warnings_of(caplog, "recbole_earn.config_checks")
    assert len(messages) == 2
    assert "'earn_kk'" in messages[0] and "my.yaml" in messages[0] and "did you mean 'earn_k'" in messages[0]
    assert "'TITLE_FEILD'" in messages[1] and "did you mean 'TITLE_FIELD'" in messages[1]


# -- raw errors that now name the file or value ------------------------------------------------------------------
def test_a_byte_order_mark_is_read_through_or_named(tmp_path):
    bom = "\ufeff"
    write_dataset(tmp_path, "bom", inter=bom + INTER_HEADER + inter_rows(), item=bom + ITEM_HEADER + item_rows())
    with pytest.raises(AtomicFileError, match=r"bom\.inter starts with a UTF-8 byte-order mark.*encoding: utf-8"):
        check_atomic_files(llm_config(tmp_path, "bom"), need_item_text=True)
    dataset, _, _, _ = prepare_data(llm_config(tmp_path, "bom", encoding="utf-8"))
    assert list(dataset.field2token_id["user_id"])[1] == "u1"  # not "\ufeffu1", nor a field named so
    assert list(dataset.field2token_id["item_id"]) == ["[PAD]", "i1", "i2", "i3", "i4"]


@pytest.mark.parametrize("inter, message", [
    ("", r"empty\.inter has no header line \(it is empty"),
    (INTER_HEADER, r"empty\.inter has a header but no interactions"),
    ((INTER_HEADER + inter_rows()).replace("\t", ","), r"empty\.inter looks comma-separated"),
    ("user_id\titem_id\n" + "u1\ti1\n", r"header field 'user_id' is not name:type"),
])
def test_malformed_interaction_files_are_named(tmp_path, inter, message):
    write_dataset(tmp_path, "empty", inter=inter)
    with pytest.raises(AtomicFileError, match=message):
        prepare_data(llm_config(tmp_path, "empty"))


def test_a_tab_inside_a_title_names_the_line(tmp_path):
    write_dataset(tmp_path, "tabbed", item=ITEM_HEADER + item_rows().replace("Title of i3", "Title\tof i3"))
    with pytest.raises(AtomicFileError, match=r"tabbed\.item, line 4: 3 fields where the header has 2.*tab inside"):
        check_atomic_files(llm_config(tmp_path, "tabbed"), need_item_text=True)


def test_a_file_in_another_encoding_is_named(tmp_path):
    write_dataset(tmp_path, "latin", item=ITEM_HEADER + item_rows() + "i5\tPokémon\n", encoding="latin-1")
    with pytest.raises(AtomicFileError, match=r"latin\.item is not utf-8(-sig)? text.*set encoding"):
        check_atomic_files(llm_config(tmp_path, "latin", encoding="utf-8"), need_item_text=True)


def test_broken_yaml_names_the_file_and_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: 3\nlora_target_modules: [q_proj, v_proj\nlearning_rate: 0.01\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.yaml is not valid yaml, line 3"):
        Config(model="SASRec", dataset="ml-100k", config_file_list=[str(broken)])


@pytest.mark.parametrize("key, value, message", [
    ("learning_rate", "fast", r"learning_rate must be a number \(default [0-9.]+\), got 'fast'"),
    ("embedding_batch_size", "0", r"embedding_batch_size must be a positive integer, got 0"),
    ("index_levels", "0", r"index_levels must be a positive integer, got 0"),
    ("add_bos", "None", r"add_bos must be True or False \(default True\), got None"),
    ("add_bos", "yes", r"add_bos must be True or False \(default True\), got 'yes'"),
])
def test_impossible_values_are_refused(key, value, message):
    with pytest.raises(ConfigError, match=message):
        Config(model="EARNLCRec", dataset="ml-100k", cmd_args={key: value})


def test_frozen_plain_model_would_train_nothing():
    with pytest.raises(ConfigError, match=r"finetune: frozen trains nothing in BIGRec.*EARNBIGRec"):
        refuse_training_nothing({"finetune": "frozen"}, BIGRec)
    refuse_training_nothing({"finetune": "frozen"}, EARNBIGRec)  # its registers train
    refuse_training_nothing({"finetune": "frozen"}, LCRec)  # its code tokens' rows train


def test_prompt_template_placeholders_are_checked_before_the_backbone_loads():
    with pytest.raises(PromptError, match=r"uses \{user_name\}, which is not set; its placeholders are history, "
                                          r"interaction_verb, item_noun"):
        EARNBIGRec({"finetune": "lora", "prompt_template": "{user_name} watched {history}"}, dataset=None)
    with pytest.raises(PromptError, match=r"not a format string"):
        split_template("{history} and {", item_noun="", interaction_verb="")
