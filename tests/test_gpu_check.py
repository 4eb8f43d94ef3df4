"""tools/gpu_check.sh, run on the CPU with tiny settings: every part runs, writes its results and reports its
status, and a failing part leaves the others' results."""

import json
import os
import subprocess

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tools", "gpu_check.sh")


def run_check(results, run_args, tests="tests/test_llm_split_forward.py -k test_vanilla_k_equals_plain_hf_model"):
    env = dict(os.environ, GPU_CHECK_DEVICE="cpu", GPU_CHECK_TESTS=tests, GPU_CHECK_ARCHS="tiny-llama",
               GPU_CHECK_EAGER_ARCHS="tiny-llama",
               GPU_CHECK_BENCH_ARGS="--lengths 24 --batches 1 --k_fractions 2 --repeats 1 --workloads lcrec "
                                    "--no_generate",
               GPU_CHECK_RUN_ARGS=run_args, GPU_CHECK_TIMEOUTS="120 120 240")
    return subprocess.run(["bash", SCRIPT, str(results), os.path.join(str(results), "no-wheels")], env=env,
                          capture_output=True, text=True, timeout=600)


def mini_run_args(mini_ml100k, tmp_path):
    config = dict(mini_ml100k["config"], index_epochs=20, num_beams=10, topk=[10])
    config_file = tmp_path / "mini.yaml"
    config_file.write_text(yaml.safe_dump(config))
    return (f"--dataset={mini_ml100k['dataset']} --config_files={config_file} --llm_path=tiny-llama "
            "--train_time_budget_s=None --epochs=1 --train_sample_num=32 --metrics=[NDCG] --valid_metric=ndcg@10")


def test_every_part_runs_and_reports(mini_ml100k, tmp_path):
    results = tmp_path / "results"
    done = run_check(results, mini_run_args(mini_ml100k, tmp_path))
    summary = (results / "summary.txt").read_text()
    assert done.returncode == 0, summary + done.stderr
    assert "device cpu" in summary and "torch" in summary
    for part in ("a. tests on cpu: exit 0", "b. benchmark tiny-llama: exit 0",
                 "b. benchmark tiny-llama, eager decoding: exit 0", "c. EARNLCRec: exit 0"):
        assert part in summary
    assert "2 passed" in (results / "tests.log").read_text()
    rows = json.loads((results / "benchmark-tiny-llama.json").read_text())
    assert {row["method"] for row in rows} >= {"vanilla", "earn"} and all(row["e2e_ms"] > 0 for row in rows)
    assert "test result" in (results / "run_earn.log").read_text()
    assert "decode mode growing" in (results / "benchmark-tiny-llama-growing.md").read_text()
    assert sorted(os.listdir(results)) == ["benchmark-tiny-llama-growing.json", "benchmark-tiny-llama-growing.md",
                                           "benchmark-tiny-llama.json", "benchmark-tiny-llama.md", "run_earn.log",
                                           "summary.txt", "tests.log"]  # RecBole's log/ and saved/ stay out


def test_a_failing_part_is_reported_and_the_others_still_run(mini_ml100k, tmp_path):
    results = tmp_path / "results"
    done = run_check(results, "--dataset=no-such-dataset", tests="tests/test_llm_split_forward.py -k no_such_test")
    summary = (results / "summary.txt").read_text()
    assert done.returncode != 0
    assert "a. tests on cpu: exit 5" in summary  # pytest: no test selected
    assert "b. benchmark tiny-llama: exit 0" in summary and (results / "benchmark-tiny-llama.json").is_file()
    assert "c. EARNLCRec: exit 1" in summary and "no-such-dataset" in (results / "run_earn.log").read_text()
