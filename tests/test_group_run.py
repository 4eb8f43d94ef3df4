"""Group runs: `--model=A,B` trains and evaluates each model on the same data and writes one comparison table."""

import csv
import json

import pytest

from recbole_earn.cli import main
from recbole_earn.group_run import add_earn_speedups, columns, describe_protocol, markdown_table, parse_model_list


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
    assert "training_curve" not in table[0] and table[1]["ranking"] == "LLM" and int(table[1]["train_examples"]) == 16
    with open(stem + ".json", encoding="utf-8") as handle:
        stored = json.load(handle)
    assert stored[2]["earn_speedup"] == pytest.approx(earn["earn_speedup"])
    assert "training_curve" not in stored[0]  # SASRec trains with RecBole's own trainer
    curve = stored[2]["training_curve"]  # one point per validation of the LLM trainer
    assert len(curve) == 1 and curve[0]["examples"] == 16 and "ndcg@10" in curve[0]["valid_result"]
    out = capsys.readouterr().out
    assert "| model | train_time_s |" in out and "| EARNBIGRec |" in out


def test_model_list_parsing_and_errors():
    assert parse_model_list(" SASRec, EARNBIGRec ,") == ["SASRec", "EARNBIGRec"]
    with pytest.raises(ValueError, match="more than once"):
        parse_model_list("SASRec,SASRec")
    with pytest.raises(ValueError, match="at least one"):
        parse_model_list(" , ")


def mini_argv(mini, models, *extra):
    """run_earn.py's arguments for a group run of `models` on the mini dataset."""
    return [f"--model={models}", f"--dataset={mini['dataset']}", *extra] + [
        f"--{key}={value}" for key, value in mini["config"].items()]


def assert_exits(argv, code, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    assert err.startswith("run_earn.py: error: ") and message in err and len(err.splitlines()) == 1
    return err


def test_unknown_model_in_a_group_fails_before_any_training(mini_ml100k, workdir, capsys):
    assert_exits(mini_argv(mini_ml100k, "SASRec,NoSuchRec"), 2, "Unknown model 'NoSuchRec'", capsys)
    assert not (workdir / "log").exists()


def test_a_later_models_config_error_fails_before_any_training(mini_ml100k, workdir, capsys):
    argv = mini_argv(mini_ml100k, "BIGRec,LCRec", "--topk=[21]", "--llm_path=tiny-llama")
    assert_exits(argv, 2, "topk [21] is larger than num_beams=20", capsys)
    assert not (workdir / "log").exists()


def test_an_output_path_that_cannot_be_created_fails_before_any_training(mini_ml100k, workdir, capsys):
    (workdir / "a_file").write_text("not a folder")
    argv = mini_argv(mini_ml100k, "Pop,SASRec", f"--group_output={workdir / 'a_file' / 'tables' / 'run'}")
    assert_exits(argv, 1, f"cannot write the table {workdir / 'a_file' / 'tables' / 'run'}.csv", capsys)
    assert not (workdir / "log").exists()


def test_a_failing_model_leaves_the_finished_rows(mini_ml100k, workdir, capsys):
    stem = workdir / "table" / "partial"
    missing_llm = workdir / "no" / "such-model"
    argv = mini_argv(mini_ml100k, "Pop,BIGRec", f"--group_output={stem}", "--epochs=1", f"--llm_path={missing_llm}")
    with pytest.raises(SystemExit) as exit_info:
        main(argv)

    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert "| Pop |" in captured.out
    assert f"the group stopped at BIGRec after 1 finished model(s); table written to {stem}.csv" in captured.out
    assert captured.err.startswith("run_earn.py: error: ") and str(missing_llm) in captured.err
    with open(f"{stem}.json", encoding="utf-8") as handle:
        assert [row["model"] for row in json.load(handle)] == ["Pop"]
    with open(f"{stem}.csv", encoding="utf-8") as handle:
        assert [row["model"] for row in csv.DictReader(handle)] == ["Pop"]


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


LEAVE_ONE_OUT = "split LS valid_and_test, order TO, group_by user, mode full, past items excluded"


def test_general_and_sequential_models_share_one_protocol(mini_ml100k, capsys):
    stem = str(mini_ml100k["data_path"]) + "/../table/protocol"
    argv = ["--model=Pop,SASRec", f"--dataset={mini_ml100k['dataset']}", f"--group_output={stem}", "--epochs=1",
            "--hidden_size=8", "--inner_size=16", "--n_layers=1", "--n_heads=1"]
    argv += [f"--{key}={value}" for key, value in mini_ml100k["config"].items()]
    rows = main(argv)

    assert [(row["model"], row["protocol"]) for row in rows] == [("Pop", LEAVE_ONE_OUT), ("SASRec", LEAVE_ONE_OUT)]
    out = capsys.readouterr().out
    assert f"protocol: {LEAVE_ONE_OUT}\n\n| model | train_time_s |" in out and "| protocol |" not in out
    with open(stem + ".csv", encoding="utf-8") as handle:
        assert [(row["model"], row["protocol"]) for row in csv.DictReader(handle)] == [
            ("Pop", LEAVE_ONE_OUT), ("SASRec", LEAVE_ONE_OUT)]
    with open(stem + ".json", encoding="utf-8") as handle:
        assert [row["protocol"] for row in json.load(handle)] == [LEAVE_ONE_OUT, LEAVE_ONE_OUT]


def test_rows_with_different_protocols_keep_a_protocol_column():
    full = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user",
            "mode": {"valid": "full", "test": "full"}}
    sampled = {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user",
               "mode": {"valid": "full", "test": "uni100"}}
    assert describe_protocol(full, True) == LEAVE_ONE_OUT
    assert describe_protocol(full, False).endswith("mode full, past items ranked")  # SASRec, knob off
    assert describe_protocol(sampled, None) == (
        "split RS 0.8:0.1:0.1, order RO, group_by user, mode valid full / test uni100")
    rows = [{"model": "Pop", "recall@10": 0.1, "protocol": describe_protocol(full, True)},
            {"model": "SASRec", "recall@10": 0.2, "protocol": describe_protocol(full, False)}]
    lines = markdown_table(rows).splitlines()
    assert lines[0].startswith("| model |") and lines[0].endswith("| recall@10 | protocol |")
    assert lines[3].endswith("past items ranked |")
