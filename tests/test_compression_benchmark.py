"""The comparison of EARN with training-free compression, run on checkpoints of tiny LC-Rec models."""

import json
import os

import pytest

from recbole_earn.benchmark.__main__ import main as benchmark_main
from recbole_earn.benchmark.compression import COLUMNS, run_comparison, write
from recbole_earn.quick_start import run_earn

from test_lcrec import lcrec_values


def trained_checkpoint(mini, model):
    values = lcrec_values(mini, train_sample_num=16, topk=[10, 20], num_beams=20)
    before = set(os.listdir(values["checkpoint_dir"])) if os.path.isdir(values["checkpoint_dir"]) else set()
    run_earn(model=model, dataset=mini["dataset"], config_dict=values)
    (name,) = set(os.listdir(values["checkpoint_dir"])) - before
    return os.path.join(values["checkpoint_dir"], name)


def test_every_method_is_measured_against_plain_fine_tuning(mini_ml100k, tmp_path):
    plain, earn = trained_checkpoint(mini_ml100k, "LCRec"), trained_checkpoint(mini_ml100k, "EARNLCRec")
    overrides = lcrec_values(mini_ml100k, num_beams=20)
    del overrides["topk"]  # the comparison's own: 10 and 20
    table = run_comparison("LCRec", mini_ml100k["dataset"], plain, earn, budget=0.5, history_items=2,
                           overrides=overrides, log=lambda line: None)
    rows = {row["method"]: row for row in table}
    assert list(rows) == ["plain fine-tuning", "StreamingLLM", "SnapKV", "SkipLayers", "prompt compression",
                          "EARN", "EARN + SnapKV"]
    assert rows["SkipLayers"]["knobs"] == {"skip_prompt_layers_from": 1}  # the EARN checkpoint's k (tiny-llama: 4/4)
    assert rows["plain fine-tuning"]["speedup"] == 1.0 and rows["plain fine-tuning"]["kv_reduction"] == 0.0
    for method in ("StreamingLLM", "SnapKV", "SkipLayers", "prompt compression", "EARN"):  # less of the prompt
        assert 0.0 < rows[method]["kv_reduction"] < 1.0
    assert rows["EARN + SnapKV"]["kv_mb_per_user"] < rows["EARN"]["kv_mb_per_user"]
    assert rows["EARN"]["model"] == "EARNLCRec" and rows["SnapKV"]["model"] == "LCRec"
    for row in table:
        assert all(0.0 <= row[metric] <= 1.0 for metric in ("recall@10", "recall@20", "ndcg@10", "ndcg@20"))
    md, csv_path, json_path = write(table, str(tmp_path / "table"))
    assert open(md).readline().strip() == "| " + " | ".join(COLUMNS) + " |"
    assert [row["method"] for row in json.load(open(json_path))] == list(rows)


def test_a_missing_checkpoint_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        benchmark_main(["compression", "--plain_checkpoint", str(tmp_path / "none.pth"),
                        "--earn_checkpoint", str(tmp_path / "none.pth")])
    assert stop.value.code == 2
    assert "--plain_checkpoint" in capsys.readouterr().err
