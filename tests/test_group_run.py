"""Group runs: `--model=A,B` trains and evaluates each model on the same data and writes one comparison table."""

import csv
import json

import pytest

from recbole_earn.cli import main
from recbole_earn.group_run import add_earn_speedups, columns, markdown_table, parse_model_list


def test_two_llm_models_and_sasrec_in_one_table(mini_ml100k, capsys):
    overrides = dict(mini_ml100k["config"], llm_path="tiny-llama", epochs=1, train_sample_num=16, eval_batch_size=32)
    stem = str(mini_ml100k["data_path"]) + "/../table/ml-mini"
    argv = ["--model=SASRec,BIGRec,EARNBIGRec", f"--dataset={mini_ml100k['dataset']}", f"--group_output={stem}"]
    argv += [f"--{key}={value}" for key, value in overrides.items()]
    rows = main(argv)

    assert [row["model"] for row in rows] == ["SASRec", "BIGRec", "EARNBIGRec"]
    for row in rows:
        for metric in ("recall@10", "ndcg@10", "recall@20", "ndcg@20"):
            assert 0.0 <= row[metric] <= 1.0
        assert row["train_time_s"] > 0 and row["infer_ms_per_user"] > 0
    sasrec, bigrec, earn = rows
    assert sasrec["kv_bytes_per_user"] is None and sasrec["earn_speedup"] is None
    assert bigrec["kv_bytes_per_user"] > earn["kv_bytes_per_user"] > 0  # EARN keeps only registers in later layers
    assert bigrec["earn_speedup"] is None
    assert earn["earn_speedup"] == pytest.approx(bigrec["infer_ms_per_user"] / earn["infer_ms_per_user"])

    with open(stem + ".csv", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert [row["model"] for row in table] == ["SASRec", "BIGRec", "EARNBIGRec"]
    assert list(table[0])[:5] == ["model", "train_time_s", "infer_ms_per_user", "kv_bytes_per_user", "earn_speedup"]
    assert "ndcg@20" in table[0]
    with open(stem + ".json", encoding="utf-8") as handle:
        assert json.load(handle)[2]["earn_speedup"] == pytest.approx(earn["earn_speedup"])
    out = capsys.readouterr().out
    assert "| model | train_time_s |" in out and "| EARNBIGRec |" in out


def test_model_list_parsing_and_errors():
    assert parse_model_list(" SASRec, EARNBIGRec ,") == ["SASRec", "EARNBIGRec"]
    with pytest.raises(ValueError, match="more than once"):
        parse_model_list("SASRec,SASRec")
    with pytest.raises(ValueError, match="at least one"):
        parse_model_list(" , ")


def test_unknown_model_in_a_group_fails_before_any_training(mini_ml100k):
    from recbole_earn.model_lookup import UnknownModelError

    with pytest.raises(UnknownModelError, match="NoSuchRec"):
        main(["--model=SASRec,NoSuchRec", f"--dataset={mini_ml100k['dataset']}"])


def test_speedup_needs_the_plain_model_and_table_has_every_metric():
    rows = [
        {"model": "EARNBIGRec", "train_time_s": 1.0, "infer_ms_per_user": 50.0, "kv_bytes_per_user": 10,
         "earn_speedup": None, "recall@10": 0.1},
        {"model": "SASRec", "train_time_s": 1.0, "infer_ms_per_user": 1.0, "kv_bytes_per_user": None,
         "earn_speedup": None, "recall@10": 0.2, "mrr@10": 0.05},
    ]
    add_earn_speedups(rows)
    assert rows[0]["earn_speedup"] is None  # no BIGRec in this group
    assert columns(rows)[-2:] == ["recall@10", "mrr@10"]
    assert markdown_table(rows).splitlines()[3].startswith("| SASRec | 1.0000 | 1.0000 | - | - | 0.2000 |")


def test_one_model_with_group_output_writes_a_one_row_table(mini_ml100k):
    stem = str(mini_ml100k["data_path"]) + "/../table/one"
    argv = ["--model=SASRec", f"--dataset={mini_ml100k['dataset']}", f"--group_output={stem}", "--epochs=1"]
    argv += [f"--{key}={value}" for key, value in mini_ml100k["config"].items()]
    rows = main(argv)

    assert [row["model"] for row in rows] == ["SASRec"] and rows[0]["infer_ms_per_user"] > 0
    with open(stem + ".json", encoding="utf-8") as handle:
        assert json.load(handle) == json.loads(json.dumps(rows))
