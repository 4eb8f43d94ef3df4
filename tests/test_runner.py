"""The runner end to end: RecBole's SASRec through run_earn.py's code path on a small real dataset, and the
errors for a missing dataset, an unknown model and a malformed argument."""

import os

import pytest

from recbole_earn.cli import CommandLineError, main, split_overrides
from recbole_earn.data.atomic_files import DatasetFilesError
from recbole_earn.quick_start import run_earn


def test_sasrec_trains_and_reports_test_metrics(mini_ml100k, capsys):
    overrides = {key: str(value) for key, value in mini_ml100k["config"].items()}  # dicts too, as Python literals
    argv = [
        "--model=SASRec",
        f"--dataset={mini_ml100k['dataset']}",
        "--epochs=1",
        "--train_batch_size=256",
        "--MAX_ITEM_LIST_LENGTH=20",
    ] + [f"--{key}={value}" for key, value in overrides.items()]
    result = main(argv)

    test_result = result["test_result"]
    for metric in ("recall@10", "ndcg@10", "recall@20", "ndcg@20"):
        assert 0.0 <= test_result[metric] <= 1.0
    assert result["model"] == "SASRec" and result["test_users"] == 60
    assert result["train_time_s"] > 0 and result["test_time_s"] > 0
    assert "recall@10" in capsys.readouterr().out
    # RecBole's own logging and checkpointing, under the working directory / checkpoint_dir.
    assert os.listdir(os.path.join(os.getcwd(), "log", "SASRec"))
    assert any(name.startswith("SASRec-") for name in os.listdir(mini_ml100k["config"]["checkpoint_dir"]))


def test_missing_dataset_names_files_and_command(workdir):
    with pytest.raises(DatasetFilesError) as error:
        run_earn(model="SASRec", dataset="ml-1m", config_dict={"data_path": str(workdir / "empty")})
    message = str(error.value)
    assert os.path.join("empty", "ml-1m", "ml-1m.inter") in message
    assert "python dataset_scripts/prepare_dataset.py ml-1m" in message
    assert not os.path.exists(workdir / "empty")  # nothing downloaded or created


def test_missing_unknown_dataset_explains_the_atomic_files(workdir):
    with pytest.raises(DatasetFilesError, match=r"my-data\.inter.*Write RecBole atomic files"):
        run_earn(model="SASRec", dataset="my-data", config_dict={"data_path": str(workdir)})


def test_unknown_model_on_the_command_line(workdir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--model=SASRex", "--dataset=ml-100k"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("run_earn.py: error: Unknown model 'SASRex'") and "SASRec" in err


def test_malformed_arguments_are_refused():
    assert split_overrides(["--epochs=2", "--learning_rate=1e-3"]) == {"epochs": "2", "learning_rate": "1e-3"}
    with pytest.raises(CommandLineError, match="--key=value"):
        split_overrides(["epochs=2"])
    with pytest.raises(CommandLineError, match="twice"):
        split_overrides(["--epochs=2", "--epochs=3"])
    with pytest.raises(SystemExit):
        main(["--model=SASRec", "--epochs", "2"])
