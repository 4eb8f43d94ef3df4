"""`run_earn.py --checkpoint=... --blend_weights=...`: one trained LLM recommender ranked under several blend weights
from one LLM search per split, each weight's metrics those of `--blend_weight=w` alone."""

import json
import os

import pytest

from recbole_earn.blend_sweep import parse_blend_weights, run_blend_sweep
from recbole_earn.cli import main
from recbole_earn.errors import ConfigError
from recbole_earn.model.bigrec import BIGRec
from recbole_earn.quick_start import run_earn

from recommender_helpers import saved_checkpoint


def bigrec_values(mini):
    return dict(mini["config"], llm_path="tiny-llama", epochs=1, train_sample_num=48, train_batch_size=8,
                eval_batch_size=16, learning_rate=0.003, use_gpu=False)


def counting_llm_scores(monkeypatch):
    """A list that gets one entry per batch BIGRec's LLM scores (beam search over the titles)."""
    calls = []
    search = BIGRec.llm_scores

    def llm_scores(self, interaction):
        calls.append(len(interaction))
        return search(self, interaction)

    monkeypatch.setattr(BIGRec, "llm_scores", llm_scores)
    return calls


def test_each_weight_ranks_as_that_weight_alone_from_one_search_per_split(mini_ml100k, monkeypatch, tmp_path):
    values = bigrec_values(mini_ml100k)
    pop = run_earn(model="Pop", dataset=mini_ml100k["dataset"], config_dict=dict(values, epochs=1, eval_step=0))
    run_earn(model="BIGRec", dataset=mini_ml100k["dataset"], config_dict=values)
    checkpoint = saved_checkpoint(values["checkpoint_dir"], "BIGRec")
    blended = dict(values, blend_model_checkpoint=saved_checkpoint(values["checkpoint_dir"], "Pop"))
    calls = counting_llm_scores(monkeypatch)
    alone = run_earn(model="BIGRec", dataset=mini_ml100k["dataset"], config_dict=dict(blended, blend_weight=0.5),
                     checkpoint=checkpoint)
    searched_once = len(calls)
    calls.clear()

    rows, (_, json_path), best = run_blend_sweep("BIGRec", mini_ml100k["dataset"], checkpoint, [0.0, 0.5, 1.0],
                                                 config_dict=blended, output_stem=str(tmp_path / "sweep"))

    assert len(calls) == searched_once  # valid and test searched once, not once per weight
    by_weight = {row["blend_weight"]: row for row in rows}
    assert {key: by_weight[0.5][key] for key in alone["test_result"]} == dict(alone["test_result"])
    assert by_weight[0.5]["best_valid_score"] == alone["best_valid_score"]
    assert by_weight[0.0]["ranking"] == "LLM" and by_weight[1.0]["ranking"] == "0 x LLM + 1 x Pop"
    assert {key: by_weight[1.0][key] for key in pop["test_result"]} == dict(pop["test_result"])
    assert best["best_valid_score"] == max(row["best_valid_score"] for row in rows)
    with open(json_path, encoding="utf-8") as handle:
        assert [row["blend_weight"] for row in json.load(handle)] == [0.0, 0.5, 1.0]


def test_blend_weights_are_numbers_in_zero_to_one_given_once():
    assert parse_blend_weights("0, 0.25,1") == [0.0, 0.25, 1.0]
    for text in ("0,1.5", "half", "", "0.5,0.5"):
        with pytest.raises(ConfigError, match="--blend_weights"):
            parse_blend_weights(text)


def test_blend_weights_need_a_checkpoint_and_a_blend_model(workdir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--model=BIGRec", "--blend_weights=0,0.5"])
    assert exit_info.value.code == 2 and "give --checkpoint and one --model" in capsys.readouterr().err
    os.makedirs("saved")
    open("saved/BIGRec.pth", "wb").close()
    with pytest.raises(SystemExit) as exit_info:
        main(["--model=BIGRec", "--checkpoint=saved/BIGRec.pth", "--blend_weights=0,2"])
    assert exit_info.value.code == 2 and "numbers in [0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--model=BIGRec", "--checkpoint=saved/BIGRec.pth", "--blend_weights=0,0.5"])
    assert exit_info.value.code == 2 and "set --blend_model_checkpoint=" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--model=SASRec", "--checkpoint=saved/BIGRec.pth", "--blend_weights=0,0.5"])
    assert exit_info.value.code == 2 and "SASRec is not one" in capsys.readouterr().err
