"""yaml-driven hyper-parameter search: `python run_earn.py --model=EARNBIGRec --dataset=ml-100k --hyper=search.yaml`.

The search file (examples in properties/hyper/):

    algo: exhaustive          # exhaustive (every combination of `choice` knobs) | random | bayes (TPE)
    max_evals: 4              # trials for random / bayes (exhaustive runs every combination)
    metric: ndcg@10           # validation metric to select on (must be evaluated: metrics x topk)
    tool: hyperopt            # hyperopt (RecBole's HyperTuning, in this process) | ray (Ray Tune)
    space:
      learning_rate: {loguniform: [-9.2, -6.9]}   # exp(uniform(low, high)), as hyperopt and RecBole write it
      earn_k: {choice: [4, 8]}
      lora_dropout: {uniform: [0.0, 0.1]}
      lora_r: {randint: [4, 17]}                  # integers in [low, high)

Every trial is one `objective_function` run (train, select the best epoch on `metric`, test). The search writes
`<output>.trials.json` / `.trials.csv` (each trial's parameters, validation and test results) and
`<output>.best.yaml`, the best trial's parameters, which `--config_files` accepts.
"""

import csv
import itertools
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List

import yaml

from recbole_earn.file_writing import replaced_atomically

SPACE_TYPES = ("choice", "uniform", "loguniform", "randint")
ALGOS = ("exhaustive", "random", "bayes")
TOOLS = ("hyperopt", "ray")
SEARCH_KEYS = ("algo", "max_evals", "metric", "tool", "space", "early_stop")


class SearchFileError(ValueError):
    pass


@dataclass
class SearchSpec:
    space: Dict[str, tuple]  # knob -> (space type, arguments)
    metric: str
    algo: str = "exhaustive"
    max_evals: int = 10
    tool: str = "hyperopt"
    early_stop: int = 10  # hyperopt: stop after this many trials without improvement
    path: str = ""


@dataclass
class SearchResult:
    trials: List[dict] = field(default_factory=list)
    best: dict = None  # the best trial's record
    trials_path: str = ""
    best_yaml_path: str = ""


# -- reading and checking the search file -------------------------------------------------------------------------
def load_search_spec(path) -> SearchSpec:
    if not os.path.isfile(path):
        raise SearchFileError(f"Search file {path} does not exist (see properties/hyper/ for examples)")
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict):
        raise SearchFileError(f"{path}: a search file is a yaml mapping with keys {', '.join(SEARCH_KEYS)}")
    unknown = sorted(set(data) - set(SEARCH_KEYS))
    if unknown:
        raise SearchFileError(f"{path}: unknown key(s) {', '.join(unknown)}; a search file has {', '.join(SEARCH_KEYS)}")
    if "metric" not in data:
        raise SearchFileError(f"{path}: says no `metric` to select on (e.g. metric: ndcg@10)")
    raw_space = data.get("space") or {}
    if not isinstance(raw_space, dict) or not raw_space:
        raise SearchFileError(f"{path}: `space` is empty; give at least one knob, e.g. learning_rate: {{choice: [0.001]}}")
    space = {name: _parse_knob(path, name, value) for name, value in raw_space.items()}
    spec = SearchSpec(
        space=space,
        metric=str(data["metric"]).lower(),
        algo=data.get("algo", "exhaustive"),
        max_evals=int(data.get("max_evals", 10)),
        tool=data.get("tool", "hyperopt"),
        early_stop=int(data.get("early_stop", 10)),
        path=path,
    )
    if spec.algo not in ALGOS:
        raise SearchFileError(f"{path}: algo must be one of {', '.join(ALGOS)}, got {spec.algo!r}")
    if spec.tool not in TOOLS:
        raise SearchFileError(f"{path}: tool must be one of {', '.join(TOOLS)}, got {spec.tool!r}")
    if spec.max_evals < 1:
        raise SearchFileError(f"{path}: max_evals must be >= 1, got {spec.max_evals}")
    if spec.algo == "exhaustive":
        continuous = [name for name, (kind, _) in space.items() if kind != "choice"]
        if continuous:
            raise SearchFileError(
                f"{path}: algo exhaustive enumerates `choice` knobs only; {', '.join(continuous)} are not choices "
                "(use algo: random or bayes, or list the values with choice)"
            )
    return spec


def _parse_knob(path, name, value):
    if not isinstance(value, dict) or len(value) != 1:
        raise SearchFileError(f"{path}: knob {name} must be one mapping {{type: arguments}} with type in "
                              f"{', '.join(SPACE_TYPES)}, got {value!r}")
    kind, args = next(iter(value.items()))
    if kind not in SPACE_TYPES:
        raise SearchFileError(f"{path}: knob {name} has unknown space type {kind!r}; use one of {', '.join(SPACE_TYPES)}")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise SearchFileError(f"{path}: knob {name}: choice needs a non-empty list of values, got {args!r}")
        return kind, list(args)
    if not isinstance(args, list) or len(args) != 2 or not all(isinstance(a, (int, float)) for a in args):
        raise SearchFileError(f"{path}: knob {name}: {kind} needs [low, high], got {args!r}")
    low, high = args
    if not low < high:
        raise SearchFileError(f"{path}: knob {name}: {kind} range [{low}, {high}] is empty (low must be < high)")
    if kind == "randint" and not (float(low).is_integer() and float(high).is_integer()):
        raise SearchFileError(f"{path}: knob {name}: randint bounds must be integers, got {args!r}")
    return kind, [low, high]


def check_against_config(spec: SearchSpec, config, cmd_args=None):
    """Refuse, before any trial, knobs the model's config does not have, knobs also fixed on the command line,
    and a metric the evaluation does not compute."""
    known = set(config.final_config_dict)
    unknown = sorted(name for name in spec.space if name not in known)
    if unknown:
        raise SearchFileError(
            f"{spec.path}: unknown knob(s) {', '.join(unknown)}: not a config key of {config['model']} "
            "(check the spelling against properties/ and RecBole's yaml)"
        )
    fixed = sorted(name for name in spec.space if name in (cmd_args or {}))
    if fixed:
        raise SearchFileError(f"{spec.path}: {', '.join(fixed)} is searched and also set with --key=value; drop one")
    evaluated = [f"{metric.lower()}@{k}" for metric in config["metrics"] for k in config["topk"]]
    if spec.metric not in evaluated:
        raise SearchFileError(
            f"{spec.path}: metric {spec.metric!r} is not evaluated; with metrics {config['metrics']} and topk "
            f"{config['topk']} the choices are {', '.join(evaluated)}"
        )


# -- the spaces ------------------------------------------------------------------------------------------------------
def hyperopt_space(spec: SearchSpec):
    from hyperopt import hp
    from hyperopt.pyll import scope

    space = {}
    for name, (kind, args) in spec.space.items():
        if kind == "choice":
            space[name] = hp.choice(name, args)
        elif kind == "uniform":
            space[name] = hp.uniform(name, float(args[0]), float(args[1]))
        elif kind == "loguniform":
            space[name] = hp.loguniform(name, float(args[0]), float(args[1]))
        else:  # randint: hyperopt returns a numpy integer; RecBole's config wants a plain int
            space[name] = scope.int(hp.randint(name, int(args[0]), int(args[1])))
    return space


def ray_space(spec: SearchSpec):
    from ray import tune

    space = {}
    for name, (kind, args) in spec.space.items():
        if kind == "choice":
            space[name] = tune.grid_search(args) if spec.algo == "exhaustive" else tune.choice(args)
        elif kind == "uniform":
            space[name] = tune.uniform(float(args[0]), float(args[1]))
        elif kind == "loguniform":  # same convention as hyperopt: the bounds are logs of the values
            space[name] = tune.loguniform(math.exp(args[0]), math.exp(args[1]))
        else:
            space[name] = tune.randint(int(args[0]), int(args[1]))
    return space


def exhaustive_size(spec: SearchSpec):
    size = 1
    for kind, args in spec.space.values():
        size *= len(args)
    return size


# -- running ---------------------------------------------------------------------------------------------------------
def plain(value):
    """numpy scalars and RecBole's OrderedDicts -> plain Python, for JSON and yaml."""
    if hasattr(value, "items"):
        return {str(k): plain(v) for k, v in value.items()}
    if hasattr(value, "item") and not isinstance(value, (list, tuple, str)):
        return value.item()
    return value


def trial_record(number, params, result):
    return {
        "trial": number,
        "params": plain(params),
        "best_valid_score": plain(result["best_valid_score"]),
        "valid_result": plain(result["best_valid_result"]),
        "test_result": plain(result["test_result"]),
        "train_time_s": result["train_time_s"],
    }


class TrialRunner:
    """Runs one trial: the fixed settings (model, dataset, the user's files and --key=value) plus the trial's
    parameters, with `valid_metric` set to the search metric."""

    def __init__(self, model, dataset, metric, config_file_list=None, config_dict=None, cmd_args=None):
        self.model, self.dataset, self.metric = model, dataset, metric
        self.config_file_list = config_file_list
        self.config_dict = dict(config_dict or {})
        self.cmd_args = dict(cmd_args or {})

    def __call__(self, params, hyper_tuning_files=None):  # RecBole's HyperTuning passes its files; ours are set
        from recbole_earn.quick_start import objective_function

        values = dict(self.config_dict, model=self.model, dataset=self.dataset, valid_metric=self.metric)
        values.update(plain(params))
        return objective_function(values, self.config_file_list, cmd_args=self.cmd_args)


def grid_suggest(spec: SearchSpec):
    """A hyperopt `algo` that proposes the combinations of the `choice` knobs in order, each exactly once.

    (RecBole's own exhaustive_search samples at random until it meets no new combination, and hands hyperopt
    0.3 a numpy RandomState where it now wants a Generator.) For hp.choice, hyperopt records the index of the
    chosen option, so trial t gets the t-th tuple of itertools.product over the option indices."""
    from hyperopt.base import miscs_update_idxs_vals

    names = list(spec.space)
    combinations = list(itertools.product(*(range(len(spec.space[name][1])) for name in names)))

    def suggest(new_ids, domain, trials, seed):
        docs = []
        for new_id in new_ids:
            number = len(trials.trials) + len(docs)
            if number >= len(combinations):
                break
            misc = dict(tid=new_id, cmd=domain.cmd, workdir=domain.workdir)
            idxs = {name: [new_id] for name in names}
            vals = {name: [index] for name, index in zip(names, combinations[number])}
            miscs_update_idxs_vals([misc], idxs, vals)
            docs.extend(trials.new_trial_docs([new_id], [None], [domain.new_result()], [misc]))
        return docs

    return suggest


def run_hyperopt(spec: SearchSpec, runner: TrialRunner) -> List[dict]:
    """RecBole's HyperTuning (hyperopt) in this process; returns one record per trial."""
    from recbole.trainer import HyperTuning

    records = []

    def objective(params, _fixed_files):
        result = runner(params)
        records.append(trial_record(len(records), params, result))
        return result

    if spec.algo == "exhaustive":
        size = exhaustive_size(spec)
        algo, max_evals, early_stop = grid_suggest(spec), size, size  # every combination, no early stop
    else:
        algo, max_evals, early_stop = spec.algo, spec.max_evals, spec.early_stop
    tuner = HyperTuning(objective, space=hyperopt_space(spec), algo=algo, max_evals=max_evals, early_stop=early_stop)
    tuner.run()
    return records


def ray_search_algorithm(spec: SearchSpec, bigger: bool):
    """Ray's search algorithm for the spec's algo (None: Ray's own sampling of the space), maximising the trial
    score when bigger is better (valid_metric_bigger), else minimising it."""
    if spec.algo != "bayes":
        return None
    from ray.tune.search.hyperopt import HyperOptSearch

    return HyperOptSearch(metric="score", mode="max" if bigger else "min")


def run_ray(spec: SearchSpec, runner: TrialRunner, num_cpus=None, bigger=True) -> List[dict]:
    """Ray Tune: each trial runs in a Ray worker (a local Ray instance unless RAY_ADDRESS names a cluster).
    bigger: whether a larger validation score is better."""
    import ray
    from ray import air, tune

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        def trainable(params):
            result = runner(params)
            return {"score": float(result["best_valid_score"]), "record": trial_record(0, params, result)}

        search_alg = ray_search_algorithm(spec, bigger)
        samples = 1 if spec.algo == "exhaustive" else spec.max_evals
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space=ray_space(spec),
            tune_config=tune.TuneConfig(num_samples=samples, search_alg=search_alg, chdir_to_trial_dir=False),
            run_config=air.RunConfig(local_dir=os.path.abspath(os.path.join("log", "ray")), verbose=0),
        )
        results = tuner.fit()
        records = []
        for number, result in enumerate(results):
            if result.error is not None:
                raise RuntimeError(f"Ray trial {number} failed: {result.error}")
            record = dict(result.metrics["record"], trial=number)
            records.append(record)
        return records
    finally:
        if started_here:
            ray.shutdown()


def best_trial(records, bigger=True):
    return (max if bigger else min)(records, key=lambda record: record["best_valid_score"])


def write_outputs(records, best, spec, output_stem):
    folder = os.path.dirname(output_stem)
    if folder:
        os.makedirs(folder, exist_ok=True)
    trials_json, trials_csv, best_yaml = (output_stem + suffix for suffix in (".trials.json", ".trials.csv", ".best.yaml"))
    _atomic_write(trials_json, lambda handle: json.dump(records, handle, indent=1))

    def write_csv(handle):
        knobs = list(spec.space)
        metrics = list(records[0]["test_result"])
        writer = csv.writer(handle)
        writer.writerow(["trial", *knobs, "best_valid_score", *(f"test_{m}" for m in metrics)])
        for record in records:
            writer.writerow([record["trial"], *(record["params"].get(k) for k in knobs), record["best_valid_score"],
                             *(record["test_result"].get(m) for m in metrics)])

    _atomic_write(trials_csv, write_csv)

    def write_yaml(handle):
        handle.write(f"# Best of {len(records)} trials of {spec.path} (valid {spec.metric} = "
                     f"{best['best_valid_score']}); use with --config_files\n")
        yaml.safe_dump(best["params"], handle, default_flow_style=False, sort_keys=True)

    _atomic_write(best_yaml, write_yaml)
    return trials_json, best_yaml


def _atomic_write(path, write):
    with replaced_atomically(path, newline="") as handle:
        write(handle)


def default_output_stem(model, dataset):
    return os.path.join("log", "hyper", f"{model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}")


def run_search(model, dataset, search_file, config_file_list=None, config_dict=None, cmd_args=None,
               output_stem=None, ray_num_cpus=None) -> SearchResult:
    """Check the search file against the model's config, run every trial, write the records and the best yaml."""
    from recbole_earn.config import Config

    spec = load_search_spec(search_file)
    # The trials select on the search's metric: so does this config, whose valid_metric_bigger is then theirs.
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list,
                    config_dict=dict(config_dict or {}, valid_metric=spec.metric), cmd_args=cmd_args)
    check_against_config(spec, config, cmd_args)
    runner = TrialRunner(model, dataset, spec.metric, config_file_list, config_dict, cmd_args)
    bigger = config["valid_metric_bigger"]
    records = run_ray(spec, runner, ray_num_cpus, bigger) if spec.tool == "ray" else run_hyperopt(spec, runner)
    best = best_trial(records, bigger=bigger)
    trials_path, best_yaml = write_outputs(records, best, spec, output_stem or default_output_stem(model, dataset))
    return SearchResult(trials=records, best=best, trials_path=trials_path, best_yaml_path=best_yaml)
