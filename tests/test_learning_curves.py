"""The learning-curve figure: validation metric against training time, one panel per model family."""

import json

from recbole_earn.report.learning_curves import load_curves, main


def point(seconds, ndcg):
    return {"train_seconds": seconds, "examples": 8 * seconds, "steps": seconds, "valid_score": ndcg,
            "valid_result": {"ndcg@10": ndcg, "recall@10": 2 * ndcg}}


def test_curves_are_grouped_by_family_and_drawn(tmp_path):
    table = tmp_path / "group.json"
    table.write_text(json.dumps([
        {"model": "Pop", "ndcg@10": 0.04},  # no curve: left out
        {"model": "LCRec", "seed": 1, "training_curve": [point(10, 0.01), point(20, 0.02)]},
        {"model": "EARNLCRec", "seed": 1, "training_curve": [point(4, 0.01), point(8, 0.03)]},
        {"model": "EARNBIGRec", "seed": 1, "training_curve": [point(5, 0.005)]},
    ]))
    families = load_curves([str(table)], "ndcg@10")
    assert sorted(families) == ["BIGRec", "LCRec"]
    assert families["LCRec"][1] == ("EARNLCRec", 1, [(4, 0.01), (8, 0.03)])
    out = tmp_path / "curves.png"
    main([str(table), "--out", str(out), "--baseline", "Pop (valid)=0.04"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curves_can_be_drawn_against_training_examples(tmp_path):
    table = tmp_path / "group.json"
    table.write_text(json.dumps([{"model": "LCRec", "seed": 1, "training_curve": [point(10, 0.01), point(20, 0.02)]}]))
    assert load_curves([str(table)], "ndcg@10", x="examples") == {"LCRec": [("LCRec", 1, [(80, 0.01), (160, 0.02)])]}
    out = tmp_path / "per-example.png"
    main([str(table), "--x", "examples", "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_seed_table_averages_each_model_and_ranking_apart(tmp_path):
    from recbole_earn.report.seed_table import load_rows, summarise

    rows = [{"model": "EARNBIGRec", "ranking": "LLM", "seed": seed, "train_examples": 100, "train_time_s": 10.0,
             "ndcg@10": value} for seed, value in ((1, 0.01), (2, 0.03))]
    rows.append({"model": "EARNBIGRec", "ranking": "0.5 x LLM + 0.5 x SASRec", "seed": 1, "train_time_s": 10.0,
                 "ndcg@10": 0.05})
    path = tmp_path / "table.json"
    path.write_text(json.dumps(rows))
    lines = summarise(load_rows([str(path)]), ["ndcg@10"]).splitlines()
    assert lines[2] == "| EARNBIGRec | LLM | 2 (seeds 1, 2) | 100 | 10 | 0.0200 ± 0.0141 |"
    assert lines[3] == "| EARNBIGRec | 0.5 x LLM + 0.5 x SASRec | 1 (seeds 1) |  | 10 | 0.0500 |"
