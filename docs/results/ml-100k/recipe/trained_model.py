"""The model a results script examines: `<Model> <checkpoint> [key=value ...]` from its command line, built on
ml-100k with RecBole's split and the checkpoint's trained weights loaded (key=value pairs are config overrides,
as on run_earn.py's command line)."""

import logging

from recbole_earn.compat import load_recbole_checkpoint
from recbole_earn.config import Config
from recbole_earn.quick_start import build_model, prepare_data


def trained_model(argv):
    """(model in eval mode, train loader, test loader) for argv = [model name, checkpoint, key=value, ...]."""
    model_name, checkpoint = argv[0], argv[1]
    config = Config(model=model_name, dataset="ml-100k", cmd_args=dict(a.split("=", 1) for a in argv[2:]))
    logging.disable(logging.INFO)
    _, train_data, _, test_data = prepare_data(config)
    model = build_model(config, train_data, logging.getLogger())
    model.load_trained_state_dict(load_recbole_checkpoint(checkpoint)["state_dict"])
    return model.eval(), train_data, test_data
