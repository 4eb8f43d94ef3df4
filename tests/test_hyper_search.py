"""yaml-driven hyper-parameter search through RecBole's HyperTuning (hyperopt) and through Ray Tune."""

import json

import pytest
import yaml

from recbole_earn.cli import main
from recbole_earn.hyper_search import SearchFileError, load_search_spec, run_search
from recbole_earn.quick_start import run_earn


def llm_settings(mini):
    # 10 beams and top-10 metrics: the searches are tested, and a 20-beam title search per trial is most of the time.
    return dict(mini["config"], llm_path="tiny-llama", epochs=1, train_sample_num=16, eval_batch_size=32,
                num_beams=10, topk=[10])


def write_search(tmp_path, **content):
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(content))
    return str(path)


def two_learning_rates(tmp_path, tool="hyperopt"):
    return write_search(tmp_path, algo="exhaustive", metric="ndcg@10", tool=tool,
                        space={"learning_rate": {"choice": [0.0001, 0.01]}})


def check_search(result, settings, dataset):
    assert len(result.trials) == 2
    assert sorted(trial["params"]["learning_rate"] for trial in result.trials) == [0.0001, 0.01]
    for trial in result.trials:
        assert set(trial) == {"trial", "params", "best_valid_score", "valid_result", "test_result", "train_time_s"}
        assert trial["best_valid_score"] == trial["valid_result"]["ndcg@10"]
    assert result.best["best_valid_score"] == max(trial["best_valid_score"] for trial in result.trials)
    with open(result.trials_path, encoding="utf-8") as handle:
        assert len(json.load(handle)) == 2
    with open(result.best_yaml_path, encoding="utf-8") as handle:
        assert yaml.safe_load(handle) == result.best["params"]
    # The best yaml, given back as a config file, reproduces the best trial.
    again = run_earn(model="EARNBIGRec", dataset=dataset, config_file_list=[result.best_yaml_path],
                     config_dict=dict(settings, valid_metric="ndcg@10"))
    assert dict(again["test_result"]) == pytest.approx(result.best["test_result"])


def test_exhaustive_search_with_hyperopt(mini_ml100k, tmp_path):
    settings = llm_settings(mini_ml100k)
    result = run_search("EARNBIGRec", mini_ml100k["dataset"], two_learning_rates(tmp_path), config_dict=settings,
                        output_stem=str(tmp_path / "out" / "search"))
    check_search(result, settings, mini_ml100k["dataset"])


def test_exhaustive_search_with_ray(mini_ml100k, tmp_path):
    settings = llm_settings(mini_ml100k)
    result = run_search("EARNBIGRec", mini_ml100k["dataset"], two_learning_rates(tmp_path, tool="ray"),
                        config_dict=settings, output_stem=str(tmp_path / "out" / "search"), ray_num_cpus=1)
    check_search(result, settings, mini_ml100k["dataset"])


@pytest.mark.parametrize(
    "content, message",
    [
        (dict(metric="ndcg@10", space={"learning_rat": {"choice": [0.1]}}), "unknown knob"),
        (dict(metric="ndcg@10", space={}), "space` is empty"),
        (dict(metric="ndcg@10", space={"learning_rate": {"choice": []}}), "non-empty list"),
        (dict(metric="ndcg@10", space={"learning_rate": {"normal": [0, 1]}}), "unknown space type"),
        (dict(metric="ndcg@50", space={"learning_rate": {"choice": [0.1]}}), "not evaluated"),
        (dict(metric="ndcg@10", algo="exhaustive", space={"learning_rate": {"uniform": [0.1, 0.2]}}), "choice"),
        (dict(metric="ndcg@10", algo="random", space={"learning_rate": {"uniform": [0.2, 0.1]}}), "is empty"),
        (dict(metric="ndcg@10", algo="grid", space={"learning_rate": {"choice": [0.1]}}), "algo must be"),
    ],
)
def test_bad_search_files_fail_before_any_trial(mini_ml100k, tmp_path, content, message):
    path = write_search(tmp_path, **content)
    with pytest.raises(SearchFileError, match=message):
        run_search("EARNBIGRec", mini_ml100k["dataset"], path, config_dict=llm_settings(mini_ml100k),
                   output_stem=str(tmp_path / "out" / "search"))
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written


def test_cli_reports_a_bad_search_file(mini_ml100k, tmp_path, capsys):
    path = write_search(tmp_path, metric="ndcg@10", space={"no_such_knob": {"choice": [1]}})
    with pytest.raises(SystemExit):
        main(["--model=EARNBIGRec", f"--dataset={mini_ml100k['dataset']}", f"--hyper={path}",
              f"--data_path={mini_ml100k['data_path']}"])
    assert "unknown knob(s) no_such_knob" in capsys.readouterr().err


def test_example_search_files_parse():
    import os

    from recbole_earn.paths import properties_dir

    for name in ("BIGRec.yaml", "EARNBIGRec.yaml", "LCRec.yaml", "EARNLCRec.yaml"):
        spec = load_search_spec(os.path.join(properties_dir(), "hyper", name))
        assert spec.space and spec.metric == "ndcg@10"


def test_random_and_bayes_spaces_sample_within_bounds(tmp_path):
    import numpy as np
    from hyperopt.pyll import stochastic

    from recbole_earn.hyper_search import hyperopt_space

    path = write_search(tmp_path, algo="random", metric="ndcg@10", space={
        "learning_rate": {"loguniform": [-9.2, -6.9]}, "lora_r": {"randint": [4, 17]},
        "lora_dropout": {"uniform": [0.0, 0.1]}, "earn_k": {"choice": [4, 8]}})
    space = hyperopt_space(load_search_spec(path))
    for seed in range(20):
        sample = stochastic.sample(space, rng=np.random.default_rng(seed))
        assert 1e-4 <= sample["learning_rate"] <= 1.01e-3
        assert type(sample["lora_r"]) is int and 4 <= sample["lora_r"] < 17
        assert 0.0 <= sample["lora_dropout"] <= 0.1 and sample["earn_k"] in (4, 8)


def test_ray_search_direction_follows_valid_metric_bigger(mini_ml100k, tmp_path, monkeypatch):
    import recbole_earn.hyper_search as hyper_search

    bayes = hyper_search.SearchSpec(space={"learning_rate": ("uniform", [0.001, 0.01])}, metric="ndcg@10",
                                    algo="bayes", tool="ray")
    assert hyper_search.ray_search_algorithm(bayes, bigger=False)._mode == "min"
    assert hyper_search.ray_search_algorithm(bayes, bigger=True)._mode == "max"

    passed = {}

    def fake_ray(spec, runner, num_cpus=None, bigger=True):
        passed["bigger"] = bigger
        return [{"trial": 0, "params": {"learning_rate": 0.01}, "best_valid_score": 1.0, "test_result": {}}]

    monkeypatch.setattr(hyper_search, "run_ray", fake_ray)
    path = tmp_path / "search.yaml"
    # RecBole: a smaller average popularity is better
    for metric, bigger in (("averagepopularity@10", False), ("ndcg@10", True)):
        path.write_text(yaml.safe_dump(dict(metric=metric, tool="ray", space={"learning_rate": {"choice": [0.01]}})))
        hyper_search.run_search("EARNBIGRec", mini_ml100k["dataset"], str(path),
                                config_dict=dict(mini_ml100k["config"], metrics=["NDCG", "AveragePopularity"]),
                                output_stem=str(tmp_path / "out" / "search"))
        assert passed == {"bigger": bigger}
