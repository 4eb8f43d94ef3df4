"""run_earn.py's errors: a mistake in the input ends in one message line and exit code 2 (flags, config values) or
1 (files), without a traceback unless --debug or RECBOLE_EARN_DEBUG=1; any other failure keeps its traceback."""

import os
import subprocess
import sys

import pytest

from recbole_earn import quick_start
from recbole_earn.cli import main
from recbole_earn.errors import ConfigError
from recbole_earn.model_lookup import UnknownModelError

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def exit_code_and_stderr(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err


def test_run_earn_py_prints_one_line_and_no_traceback(workdir):
    env = {key: value for key, value in os.environ.items() if key != "RECBOLE_EARN_DEBUG"}
    finished = subprocess.run([sys.executable, os.path.join(REPOSITORY, "run_earn.py"), "--model=SASRex"],
                              capture_output=True, text=True, env=env, timeout=300)
    assert finished.returncode == 2
    assert finished.stderr.startswith("run_earn.py: error: Unknown model 'SASRex'")
    assert "Traceback" not in finished.stderr and len(finished.stderr.splitlines()) == 1


def test_a_value_recboles_config_refuses_is_a_config_error(workdir, capsys):
    code, err = exit_code_and_stderr(["--model=SASRec", "--metrics=['nope']"], capsys)
    assert code == 2 and err == "run_earn.py: error: SASRec: There is no metric named 'nope'\n"


def test_a_value_a_model_refuses_is_a_config_error(workdir, capsys):
    code, err = exit_code_and_stderr(["--model=LCRec", "--beam_normalise=softmax"], capsys)
    assert code == 2 and err.startswith("run_earn.py: error: beam_normalise must be one of")


def test_missing_files_exit_with_code_1(workdir, capsys):
    code, err = exit_code_and_stderr(["--model=SASRec", "--config_files=nope.yaml"], capsys)
    assert code == 1 and "nope.yaml" in err and len(err.splitlines()) == 1
    code, err = exit_code_and_stderr(["--model=SASRec", "--dataset=my-data", f"--data_path={workdir}"], capsys)
    assert code == 1 and err.startswith("run_earn.py: error: Dataset 'my-data' is missing")


def test_debug_shows_the_traceback(workdir, monkeypatch):
    with pytest.raises(UnknownModelError):
        main(["--model=SASRex", "--debug"])
    monkeypatch.setenv("RECBOLE_EARN_DEBUG", "1")
    with pytest.raises(UnknownModelError):
        main(["--model=SASRex"])


def test_other_failures_keep_their_traceback(workdir, monkeypatch):
    def crash(**_):
        raise RuntimeError("a bug, not the user's input")

    monkeypatch.setattr(quick_start, "run_earn", crash)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["--model=SASRec"])


def test_config_errors_stay_value_errors():
    assert issubclass(ConfigError, ValueError) and issubclass(UnknownModelError, ConfigError)


def test_a_checkpoint_that_is_not_there_or_for_several_models_is_refused(workdir, capsys):
    code, err = exit_code_and_stderr(["--model=LCRec", "--checkpoint=saved/none.pth"], capsys)
    assert code == 1 and err == ("run_earn.py: error: --checkpoint saved/none.pth does not exist (run_earn.py writes "
                                 "saved/<Model>-<date>.pth)\n")
    code, err = exit_code_and_stderr(["--model=LCRec,EARNLCRec", "--checkpoint=saved/none.pth"], capsys)
    assert code == 2 and "--checkpoint evaluates one model in one process" in err
