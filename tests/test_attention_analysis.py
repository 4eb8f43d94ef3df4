"""The attention analysis (python -m recbole_earn.analysis attention): its metrics against hand computations, the
plain backbone forward it measures, and the command end to end on a tiny random Llama."""

import json
import math
import os

import pytest
import torch
import yaml

from recbole_earn.analysis import attention_stats as stats
from recbole_earn.analysis.__main__ import main
from recbole_earn.analysis.attention_run import (
    backbone_attentions,
    eager_attention,
    measure,
    recommendation_prompts,
    text_chunks,
)
from recbole_earn.config import Config
from recbole_earn.llm import EARNConfig, EARNModel, load_backbone, prepare_for_training

from recommender_helpers import build

FIGURES = ("sparsity_entropy.png", "sinks.png", "attention_received.png")


# -- the metrics, by hand ------------------------------------------------------------------------------------------
def causal_uniform(length):
    """[L, L]: query i spreads its attention evenly over keys 0..i."""
    rows = torch.tril(torch.ones(length, length))
    return rows / rows.sum(-1, keepdim=True)


def first_key_only(length):
    """[L, L]: every query puts all its attention on key 0 (a pure head sink)."""
    rows = torch.zeros(length, length)
    rows[:, 0] = 1.0
    return rows


def two_heads(length):
    return torch.stack([causal_uniform(length), first_key_only(length)])  # [2, L, L]


def test_metrics_equal_a_hand_computation():
    attention = two_heads(8)
    queries = torch.tensor([6, 7])  # query 6 sees 7 keys, query 7 sees 8
    # uniform head: every visible key gets 1/7 or 1/8 > 0.05; first-key head: 1 key of 7, of 8
    assert stats.sparsity(attention, queries) == pytest.approx((1 + 1 + 1 / 7 + 1 / 8) / 4)
    assert stats.entropy(attention, queries) == pytest.approx((math.log(7) + math.log(8) + 0 + 0) / 4)
    # keys 0..2: 3/7 and 3/8 of the uniform head, everything of the first-key head
    assert stats.head_sink(attention, queries) == pytest.approx((3 / 7 + 3 / 8 + 1 + 1) / 4)
    # keys q-3..q-1: 3/7 and 3/8 of the uniform head, nothing of the first-key head
    assert stats.tail_sink(attention, queries) == pytest.approx((3 / 7 + 3 / 8 + 0 + 0) / 4)


def test_sparsity_counts_only_visible_keys_above_the_threshold():
    attention = torch.zeros(1, 4, 4)
    attention[0, 3] = torch.tensor([0.90, 0.04, 0.03, 0.03])  # one key of four above 0.05
    attention[0, 2] = torch.tensor([0.50, 0.30, 0.20, 0.99])  # key 3 is not visible to query 2: not counted
    assert stats.sparsity(attention, torch.tensor([3])) == pytest.approx(1 / 4)
    assert stats.sparsity(attention, torch.tensor([2])) == pytest.approx(3 / 3)
    assert stats.sparsity(attention, torch.tensor([2, 3])) == pytest.approx((1 + 1 / 4) / 2)


def test_tail_sink_takes_the_three_keys_before_the_query():
    attention = torch.zeros(1, 8, 8)
    attention[0, 7] = torch.tensor([0.1, 0.0, 0.0, 0.0, 0.2, 0.3, 0.15, 0.25])  # keys 4, 5, 6 precede query 7
    assert stats.tail_sink(attention, torch.tensor([7])) == pytest.approx(0.2 + 0.3 + 0.15)
    assert stats.head_sink(attention, torch.tensor([7])) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="positions >= 3"):
        stats.tail_sink(attention, torch.tensor([2]))


def test_attention_received_divides_by_the_queries_that_see_each_key():
    received = stats.attention_received(two_heads(4))
    # uniform head: key j gets sum over i >= j of 1/(i+1), over 4 - j queries; first-key head: key 0 gets 1 each
    uniform = torch.tensor([(1 + 1 / 2 + 1 / 3 + 1 / 4) / 4, (1 / 2 + 1 / 3 + 1 / 4) / 3, (1 / 3 + 1 / 4) / 2, 1 / 4])
    sink = torch.tensor([1.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(received, (uniform + sink) / 2)
    sums, counts = stats.relative_position_bins(received, bins=2)  # keys 0, 1 | keys 2, 3
    torch.testing.assert_close(sums, torch.stack([received[:2].sum(), received[2:].sum()]).double())
    torch.testing.assert_close(counts, torch.tensor([2.0, 2.0], dtype=torch.float64))


def test_query_positions():
    assert stats.query_positions(9).tolist() == [6, 7, 8]
    assert stats.query_positions(9, "last").tolist() == [8]
    with pytest.raises(ValueError, match="too short"):
        stats.query_positions(6)


def test_text_chunks_follow_each_other_and_wrap_around():
    assert text_chunks(list(range(10)), [4, 4, 4]) == [[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3]]
    with pytest.raises(ValueError, match="fewer than the longest prompt"):
        text_chunks(list(range(3)), [4])


# -- the forward it measures ---------------------------------------------------------------------------------------
def test_backbone_forward_is_the_plain_model_without_registers():
    backbone, tokenizer = load_backbone("tiny-llama")
    backbone = prepare_for_training(backbone, "lora", lora_r=4)
    llm = EARNModel(backbone, EARNConfig(earn_k=2), tokenizer).eval()  # 2 registers the analysis leaves out
    with torch.no_grad():
        for name, parameter in llm.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)  # LoRA no longer the identity: the forward must run it
    ids = [llm.bos_token_id] + tokenizer("The user watched three movies", add_special_tokens=False)["input_ids"]
    with eager_attention(llm.causal_lm):
        attentions, hidden = backbone_attentions(llm, ids)
    assert llm.causal_lm.config._attn_implementation == "earn"  # the engine's attention is given back
    length = len(ids)
    assert attentions.shape == (4, 4, length, length)  # tiny-llama: 4 layers, 4 heads
    torch.testing.assert_close(attentions.sum(-1), torch.ones(4, 4, length))
    assert float(attentions.triu(diagonal=1).abs().max()) == 0.0  # causal
    expected = llm.embed_texts([ids[1:]], add_bos=True)[0]  # the engine's plain forward (sdpa), last position
    torch.testing.assert_close(hidden[-1], expected, rtol=1e-4, atol=1e-5)


# -- the command ---------------------------------------------------------------------------------------------------
def config_file(mini, path, **values):
    """A yaml file with the mini dataset's keys and a tiny backbone: the command reads it as --config_files."""
    content = dict(mini["config"], llm_path="tiny-llama", use_gpu=False, eval_batch_size=16, **values)
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(content, handle)
    return str(path)


def run_command(mini, out, *extra, model="BIGRec", config_path=None):
    config_path = config_path or config_file(mini, out.parent / "analysis.yaml")
    return main(["attention", f"--model={model}", f"--dataset={mini['dataset']}", "--num_prompts", "3",
                 "--out", str(out), f"--config_files={config_path}", *extra])


def check_outputs(out, layers=4, bins=20):
    with open(out / "attention.json", encoding="utf-8") as handle:
        result = json.load(handle)
    for name in FIGURES:
        assert (out / name).stat().st_size > 1000
    assert len(result["layers"]) == layers
    longest = result["settings"]["prompt_tokens"]["max"]
    for row in result["layers"]:
        for source in ("rec", "text"):
            values = row[source]
            assert 0.0 < values["sparsity"] <= 1.0
            assert 0.0 <= values["entropy"] <= math.log(longest)
            assert 0.0 <= values["head_sink"] <= 1.0 and 0.0 <= values["tail_sink"] <= 1.0
            assert values["head_sink"] + values["tail_sink"] <= 1.0 + 1e-5  # disjoint keys from query 6 on
    for source in ("rec", "text"):
        received = torch.tensor(result["attention_received"][source])
        assert received.shape == (layers, bins)
        assert bool((received > 0).all()) and bool((received <= 1 + 1e-5).all())
    return result


def test_bigrec_command_writes_json_figures_and_table(mini_ml100k, workdir, capsys):
    out = workdir / "analysis"
    returned = run_command(mini_ml100k, out, "--MAX_ITEM_LIST_LENGTH=3")  # a config override, as in run_earn.py
    result = check_outputs(out)
    assert result == json.loads(json.dumps(returned))
    settings = result["settings"]
    assert settings["model"] == "BIGRec" and settings["num_prompts"] == 3 and settings["checkpoint"] is None
    assert 6 < settings["prompt_tokens"]["max"] < 140  # 3 titles; the last 10 titles make 168 tokens or more
    table = capsys.readouterr().out
    layer_lines = [line for line in table.splitlines() if line[:5].strip().isdigit()]
    assert "sparsity rec/text" in table and len(layer_lines) == 4


def test_checkpoint_weights_are_the_ones_measured(mini_ml100k, workdir):
    config_path = config_file(mini_ml100k, workdir / "analysis.yaml")
    config = Config(model="BIGRec", dataset=mini_ml100k["dataset"], config_file_list=[config_path])
    model, _, _, test_data = build(config)
    sequences = [[model.llm.bos_token_id] + prompt for prompt in recommendation_prompts(model, test_data, 3)]
    untrained = measure(model.llm, sequences, "last")["entropy"]
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)  # as if trained: LoRA is no longer the identity
    trained = measure(model.llm, sequences, "last")["entropy"]
    checkpoint = workdir / "BIGRec-trained.pth"
    torch.save({"state_dict": model.trained_state_dict()}, checkpoint)

    result = run_command(mini_ml100k, workdir / "analysis", "--checkpoint", str(checkpoint), "--queries=last",
                         config_path=config_path)
    measured = [row["rec"]["entropy"] for row in result["layers"]]
    assert measured == pytest.approx(trained, abs=1e-5)
    assert measured != pytest.approx(untrained, abs=1e-4)
    assert result["settings"]["queries"] == "last"


def test_lcrec_command_measures_prompts_of_code_tokens(mini_ml100k, workdir):
    out = workdir / "analysis"
    config_path = config_file(mini_ml100k, workdir / "lcrec.yaml", num_beams=10, topk=[5, 10], index_levels=3,
                              index_codebook_size=16, index_epochs=20, item_text_fields=["release_year", "class"])
    result = run_command(mini_ml100k, out, "--bins=5", model="LCRec", config_path=config_path)
    check_outputs(out, bins=5)
    assert result["settings"]["model"] == "LCRec"


# -- bad input -----------------------------------------------------------------------------------------------------
def error_of(argv, capsys):
    with pytest.raises(SystemExit) as raised:
        main(argv)
    return raised.value.code, capsys.readouterr().err


def test_unknown_subcommand_is_refused(capsys):
    code, err = error_of(["heads", "--model=BIGRec", "--out=x"], capsys)
    assert code == 2 and "invalid choice: 'heads'" in err


def test_num_prompts_below_one_is_refused(capsys):
    code, err = error_of(["attention", "--model=BIGRec", "--num_prompts=0", "--out=x"], capsys)
    assert code == 2 and "--num_prompts must be at least 1, got 0" in err


def test_a_model_without_an_llm_is_refused(capsys, workdir):
    code, err = error_of(["attention", "--model=SASRec", "--out=x"], capsys)
    assert code == 2 and "the attention analysis needs an LLM recommender" in err and "SASRec" in err
    assert not os.path.exists(workdir / "x")


def test_a_missing_checkpoint_is_refused(capsys, workdir):
    code, err = error_of(["attention", "--model=LCRec", "--checkpoint=saved/none.pth", "--out=x"], capsys)
    assert code == 1 and "--checkpoint saved/none.pth does not exist" in err


def test_a_stray_argument_is_refused(capsys):
    code, err = error_of(["attention", "--model=BIGRec", "--out=x", "lora_r=4"], capsys)
    assert code == 2 and "--key=value" in err
