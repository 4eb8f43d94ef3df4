"""Multi-process training (--nproc=2) of an LLM recommender on CPUs with gloo, through RecBole's distributed
support: it finishes with the same metric keys as one process, and only rank 0 writes files."""

import os
import socket

import pytest
import yaml

from recbole_earn.cli import main
from recbole_earn.distributed import run_earn_distributed
from recbole_earn.quick_start import run_earn


def free_port():
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, _, names in os.walk(folder) for name in names)


@pytest.mark.slow
def test_two_processes_train_and_evaluate_like_one(mini_ml100k, workdir):
    # 5 beams and top-5 metrics: the test is about processes, and a 20-beam title search over every user is most
    # of its time.
    values = dict(mini_ml100k["config"], llm_path="tiny-llama", epochs=1, train_sample_num=32, train_batch_size=8,
                  eval_batch_size=16, num_beams=5, topk=[5], valid_metric="NDCG@5")
    config_file = workdir / "run.yaml"
    config_file.write_text(yaml.safe_dump(values))
    result = main(["--model=EARNBIGRec", f"--dataset={mini_ml100k['dataset']}", f"--config_files={config_file}",
                   "--nproc=2", f"--port={free_port()}"])
    single = run_earn(model="EARNBIGRec", dataset=mini_ml100k["dataset"],
                      config_dict=dict(values, checkpoint_dir=os.path.join(workdir, "single")))
    assert set(result["test_result"]) == set(single["test_result"])
    assert all(0.0 <= value <= 1.0 for value in result["test_result"].values())

    # Rank 0 alone wrote a log, a tensorboard run and the checkpoint (the single run wrote its own after it).
    logs = [name for name in files_under(workdir / "log") if name.endswith(".log")]
    assert len(logs) == 2, logs
    assert len(os.listdir(workdir / "log_tensorboard")) == 2
    assert len(os.listdir(values["checkpoint_dir"])) == 1


def test_nproc_with_a_group_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--model=SASRec,BIGRec", "--nproc=2"])
    assert "--nproc / --world_size train one model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--model=SASRec", "--group_output=table", "--nproc=2"])
    assert "--nproc / --world_size train one model" in capsys.readouterr().err


def test_bad_process_counts_are_refused():
    with pytest.raises(ValueError, match=r"need 1 <= nproc <= world_size, got nproc=4, world_size=2"):
        run_earn_distributed("BIGRec", "ml-100k", nproc=4, world_size=2)
