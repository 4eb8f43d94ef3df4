"""The command line: `python run_earn.py --model=EARNBIGRec --dataset=ml-100k [--config_files="a.yaml b.yaml"]
[--key=value ...]`, modelled on RecBole's run_recbole.py. Every `--key=value` overrides any yaml value.
`--model=SASRec,EARNBIGRec` runs a group and writes one comparison table (see group_run.py); `--group_output`
with one model writes its one-row table.

Errors about the user's input (recbole_earn.errors, and files not found) end in one `run_earn.py: error: ...`
line on stderr, exit code 2 for flags and config values and 1 for files; `--debug` or RECBOLE_EARN_DEBUG=1
shows their traceback. Any other failure keeps its traceback."""

import argparse
import os
import sys

from recbole_earn.errors import ConfigError, UserInputError

PROG = "run_earn.py"
DEBUG_ENV = "RECBOLE_EARN_DEBUG"


class CommandLineError(ConfigError):
    pass


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train and evaluate a recbole-earn model (BIGRec, EARNBIGRec, LCRec, EARNLCRec) or any "
        "RecBole model on a RecBole dataset. Any other --key=value overrides that config key.",
    )
    parser.add_argument(
        "--model", "-m", default="SASRec",
        help="model name, ours or RecBole's (default SASRec); a comma-separated list runs a group and compares them",
    )
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name (default ml-100k)")
    parser.add_argument(
        "--config_files", default=None, help="yaml files, space-separated, applied over the defaults in order"
    )
    parser.add_argument(
        "--hyper", default=None, metavar="SEARCH_YAML",
        help="run a hyper-parameter search described by this yaml (see properties/hyper/)",
    )
    parser.add_argument(
        "--hyper_output", default=None,
        help="search: path without extension for .trials.json/.trials.csv/.best.yaml (default log/hyper/...)",
    )
    parser.add_argument(
        "--group_output", default=None,
        help="group runs: path without extension for the table's .csv and .json (default log/group/<dataset>-<time>); "
        "with one --model, writes that model's one-row table there",
    )
    parser.add_argument(
        "--checkpoint", default=None, metavar="PTH",
        help="evaluate this checkpoint (saved/<Model>-<date>.pth from an earlier run of the same --model, dataset "
        "and training settings) on valid and test instead of training, e.g. to try inference settings",
    )
    parser.add_argument(
        "--blend_weights", default=None, metavar="W1,W2,...",
        help="with --checkpoint and --blend_model_checkpoint: rank the checkpoint under each of these blend weights "
        "(the LLM's search runs once per split) and write one row per weight; the weight best on validation is named",
    )
    parser.add_argument(
        "--debug", action="store_true",
        help=f"show the traceback of errors about flags, config and files too (or set {DEBUG_ENV}=1)",
    )
    distributed = parser.add_argument_group("multi-process training (RecBole's: one process per rank)")
    distributed.add_argument("--nproc", type=int, default=1, help="processes to start on this machine (default 1)")
    distributed.add_argument("--world_size", type=int, default=-1, help="processes over all machines (default nproc)")
    distributed.add_argument("--ip", default="localhost", help="address of the rank-0 machine")
    distributed.add_argument("--port", default="5678", help="free port on the rank-0 machine")
    distributed.add_argument("--group_offset", type=int, default=0, help="rank of this machine's first process")
    return parser


def split_overrides(extra_args):
    """`--key=value` strings -> {key: value}; RecBole's Config converts the value strings to types."""
    overrides = {}
    for arg in extra_args:
        if not arg.startswith("--") or "=" not in arg:
            raise CommandLineError(f"Unrecognised argument '{arg}': config overrides are written --key=value.")
        key, value = arg[2:].split("=", 1)
        if key in overrides and overrides[key] != value:
            raise CommandLineError(f"'--{key}' is given twice with different values.")
        overrides[key] = value
    return overrides


def parse_args(argv):
    args, extra = build_parser().parse_known_args(argv)
    config_files = args.config_files.split() if args.config_files else None
    return args, config_files, split_overrides(extra)


def main(argv=None):
    """Run the command line `argv` (default sys.argv[1:]); returns the result, exits on errors about the input."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, config_files, overrides = parse_args(argv)
    except CommandLineError as error:
        build_parser().error(str(error))
    return reporting_user_errors(PROG, args, lambda: run_command(args, config_files, overrides))


def reporting_user_errors(prog, args, command):
    """command()'s result; an error about the user's input ends in one `prog: error: ...` line and its exit code
    instead of a traceback (unless debugging), any other error propagates."""
    try:
        return command()
    except Exception as error:
        exit_code = user_error_exit_code(error)
        if exit_code is None or debugging(args):
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(exit_code) from None


def user_error_exit_code(error):
    """The exit code of an error about the user's input; None for anything else (it keeps its traceback)."""
    if isinstance(error, UserInputError):
        return error.exit_code
    if isinstance(error, FileNotFoundError):  # its message names the path: a config file, dataset or llm_path
        return 1
    return None


def debugging(args):
    return args.debug or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def run_command(args, config_files, overrides):
    multi_process = args.nproc > 1 or args.world_size > 1
    writes_a_table = "," in args.model or bool(args.group_output)  # a group, or one model's one-row table
    if multi_process and (args.hyper or writes_a_table):
        build_parser().error(
            "--nproc / --world_size train one model; run group runs, --group_output tables and searches without them"
        )
    if args.blend_weights is not None and args.checkpoint is None:  # the checks of --checkpoint below do the rest
        build_parser().error("--blend_weights ranks one trained model: give --checkpoint and one --model, no --hyper "
                             "or --nproc")
    if args.checkpoint is not None:
        if multi_process or args.hyper or "," in args.model:
            build_parser().error("--checkpoint evaluates one model in one process; give one --model, no --hyper "
                                 "or --nproc")
        from recbole_earn.compat import require_checkpoint_file

        require_checkpoint_file(args.checkpoint)
    if args.blend_weights is not None:
        return run_blend_sweep_command(args, config_files, overrides)
    if args.hyper:
        return run_search_command(args, config_files, overrides)
    if writes_a_table:
        return run_group_command(args, config_files, overrides)
    if multi_process:
        from recbole_earn.distributed import run_earn_distributed

        result = run_earn_distributed(
            args.model, args.dataset, args.nproc, config_file_list=config_files, cmd_args=overrides,
            world_size=args.world_size, ip=args.ip, port=args.port, group_offset=args.group_offset,
        )
        if result is None:  # not the machine of rank 0
            return None
    else:
        from recbole_earn.group_run import check_configs  # after argument errors: importing RecBole takes seconds
        from recbole_earn.quick_start import run_earn

        check_configs([args.model], args.dataset, config_file_list=config_files, cmd_args=overrides)
        result = run_earn(model=args.model, dataset=args.dataset, config_file_list=config_files, cmd_args=overrides,
                          checkpoint=args.checkpoint)
    print(f"test result ({result['model']} on {result['dataset']}): {dict(result['test_result'])}")
    return result


def run_group_command(args, config_files, overrides):
    from recbole_earn.group_run import markdown_table, parse_model_list, run_group

    try:
        models = parse_model_list(args.model)
    except ValueError as error:
        build_parser().error(str(error))
    rows, (csv_path, json_path) = run_group(
        models, args.dataset, config_file_list=config_files, cmd_args=overrides, output_stem=args.group_output,
        checkpoint=args.checkpoint,
    )
    print(markdown_table(rows))
    print(f"table written to {csv_path} and {json_path}")
    return rows


def run_blend_sweep_command(args, config_files, overrides):
    from recbole_earn.blend_sweep import parse_blend_weights, run_blend_sweep
    from recbole_earn.group_run import markdown_table

    weights = parse_blend_weights(args.blend_weights)
    rows, (csv_path, json_path), best = run_blend_sweep(
        args.model, args.dataset, args.checkpoint, weights, config_file_list=config_files, cmd_args=overrides,
        output_stem=args.group_output,
    )
    print(markdown_table(rows))
    print(f"best on validation: blend_weight {best['blend_weight']:g} (valid {best['best_valid_score']:.4f}); "
          f"table written to {csv_path} and {json_path}")
    return rows


def run_search_command(args, config_files, overrides):
    from recbole_earn.hyper_search import SearchFileError, run_search

    if "," in args.model:
        build_parser().error("--hyper searches one model at a time; give a single --model")
    try:
        result = run_search(args.model, args.dataset, args.hyper, config_file_list=config_files, cmd_args=overrides,
                            output_stem=args.hyper_output)
    except SearchFileError as error:
        build_parser().error(str(error))
    best = result.best
    print(f"best of {len(result.trials)} trials: {best['params']} (valid {best['best_valid_score']}), "
          f"test {best['test_result']}")
    print(f"trials written to {result.trials_path}; best configuration: --config_files={result.best_yaml_path}")
    return result


if __name__ == "__main__":
    main()
