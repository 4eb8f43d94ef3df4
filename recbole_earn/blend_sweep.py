"""One trained LLM recommender ranked under several blend weights, to choose `blend_weight` on validation.

    python run_earn.py --model=EARNBIGRec --dataset=ml-100k --checkpoint=saved/EARNBIGRec-<date>.pth \\
        --blend_model_checkpoint=saved/Pop-<date>.pth --blend_weights=0,0.25,0.5,0.75,1 --group_output=...

writes one row per weight (its validation score and test metrics, as `--blend_weight=w` alone would give them)
and names the weight that validates best. The LLM's beam search is nearly all of an evaluation's time and does
not depend on the weight, so each batch's LLM scores are computed once and reused for every weight; RecBole's
trainer evaluates each weight as it evaluates any model (past items left out, the same evaluators).
"""

import time
from contextlib import contextmanager
from logging import getLogger

from recbole.utils import calculate_valid_score

from recbole_earn import model_contract
from recbole_earn.errors import ConfigError
from recbole_earn.group_run import check_configs, check_table_writable, default_output_stem, result_row, write_table
from recbole_earn.quick_start import build_model, evaluation_record, prepare_data, start_logged_run


def parse_blend_weights(text):
    """'0,0.5,1' -> [0.0, 0.5, 1.0]: the conventional model's shares to try, each in [0, 1], none twice."""
    not_weights = ConfigError(f"--blend_weights takes comma-separated numbers in [0, 1], e.g. 0,0.5,1; got {text!r}")
    try:
        weights = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise not_weights from None
    if not weights or not all(0.0 <= weight <= 1.0 for weight in weights):
        raise not_weights
    if len(set(weights)) != len(weights):
        raise ConfigError(f"--blend_weights lists a weight twice: {text!r}")
    return weights


def run_blend_sweep(model, dataset, checkpoint, weights, config_file_list=None, config_dict=None, cmd_args=None,
                    output_stem=None):
    """Rank `checkpoint` (a saved LLM recommender `model`) under each blend weight of `weights`; returns (rows,
    (csv_path, json_path), best_row): a table row per weight with `blend_weight`, and the one best on validation."""
    check_configs([model], dataset, config_file_list=config_file_list, config_dict=config_dict, cmd_args=cmd_args)
    output_stem = output_stem or default_output_stem(dataset)
    check_table_writable(output_stem)
    config = start_logged_run(model, dataset, config_file_list, config_dict, cmd_args)
    if not model_contract.is_llm_recommender(config.model_class):
        raise ConfigError(f"--blend_weights ranks an LLM recommender's checkpoint (BIGRec, EARNBIGRec, LCRec, "
                          f"EARNLCRec); {model} is not one")
    if not config["blend_model_checkpoint"]:
        raise ConfigError(
            f"--blend_weights mixes the scores of the model in blend_model_checkpoint into {model}'s; set "
            "--blend_model_checkpoint=saved/<Model>-<date>.pth (e.g. a Pop or SASRec run's checkpoint)"
        )
    rows = []
    for weight, result in zip(weights, evaluate_blend_weights(config, checkpoint, weights)):
        rows.append({**result_row(result), "blend_weight": weight})
    paths = write_table(rows, output_stem)
    bigger = config["valid_metric_bigger"]
    best = max(rows, key=lambda row: row["best_valid_score"] if bigger else -row["best_valid_score"])
    return rows, paths, best


def evaluate_blend_weights(config, checkpoint, weights):
    """[run_earn-like result per weight]: the checkpoint evaluated on valid and test under each weight."""
    logger = getLogger()
    _, train_data, valid_data, test_data = prepare_data(config)
    recommender = build_model(config, train_data, logger)
    trainer = model_contract.trainer_class(config, config.model_class)(config, recommender)
    trainer.load_checkpoint(checkpoint)
    with remembered_llm_scores(recommender):
        valid_results = [evaluate_at(trainer, valid_data, weight) for weight in weights]
        model_contract.start_test_measurement(recommender)  # KV bytes of the test's own searches
        start = time.perf_counter()
        first_test = evaluate_at(trainer, test_data, weights[0])
        test_time = time.perf_counter() - start  # the search and one blend: what ranking at any one weight costs
        test_results = [first_test] + [evaluate_at(trainer, test_data, weight) for weight in weights[1:]]
    results = []
    for weight, valid_result, test_result in zip(weights, valid_results, test_results):
        recommender.blend.weight = weight  # the row's ranking label
        valid_score = calculate_valid_score(valid_result, trainer.valid_metric)
        results.append({**evaluation_record(config, recommender, valid_score, valid_result, test_result, test_time,
                                            test_data), "train_time_s": 0.0})
        logger.info(f"blend weight {weight:g}: valid {dict(valid_result)}, test {dict(test_result)}")
    return results


def evaluate_at(trainer, eval_data, weight):
    trainer.model.blend.weight = weight
    return trainer.evaluate(eval_data, load_best_model=False)


@contextmanager
def remembered_llm_scores(recommender):
    """Inside, `recommender.llm_scores` computes each batch's scores once: a batch of the same content (the same
    users, histories and targets) gets a copy of them again (a copy: RecBole masks past items in place). It holds a
    score per evaluated user and item (float32: 180 MB for ml-1m's 6,040 users x 3,706 items, both splits)."""
    compute = recommender.llm_scores
    remembered = {}

    def llm_scores(interaction):
        key = batch_content(interaction)
        if key not in remembered:
            remembered[key] = compute(interaction)
        return remembered[key].clone()

    recommender.llm_scores = llm_scores
    try:
        yield
    finally:
        del recommender.llm_scores  # the class's own method again


def batch_content(interaction):
    """A hashable copy of every field of a RecBole Interaction."""
    return tuple((name, tuple(values.shape), values.cpu().numpy().tobytes())
                 for name, values in sorted(interaction.interaction.items()))
