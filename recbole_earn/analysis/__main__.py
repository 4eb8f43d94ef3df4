"""python -m recbole_earn.analysis attention --model=LCRec --dataset=ml-100k [--checkpoint saved/X.pth]
[--num_prompts 64] [--queries all|last] [--bins 20] --out DIR [--config_files="a.yaml b.yaml"] [--key=value ...]

The config is layered as in run_earn.py (defaults, --config_files, then --key=value). Errors about the input end
in one line on stderr (exit code 2 for flags and config values, 1 for files); --debug shows the traceback."""

import argparse
import sys

PROG = "python -m recbole_earn.analysis"


def build_parser():
    parser = argparse.ArgumentParser(prog=PROG, description="Analyses of recbole-earn's LLM recommenders.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{attention}")
    attention = commands.add_parser(
        "attention", help="per-layer attention sparsity, entropy, head/tail sinks: recommendation prompts vs text",
        description="Any other --key=value overrides that config key, as in run_earn.py.",
        allow_abbrev=False)  # a config key must not be taken for an abbreviated flag
    attention.add_argument("--model", "-m", required=True, help="BIGRec, EARNBIGRec, LCRec or EARNLCRec")
    attention.add_argument("--dataset", "-d", default="ml-100k", help="dataset name (default ml-100k)")
    attention.add_argument("--checkpoint", default=None,
                           help="a checkpoint run_earn.py saved for this model; default: the untrained model "
                                "(pretrained backbone, LoRA at identity)")
    attention.add_argument("--num_prompts", type=int, default=64,
                           help="test-split prompts to analyse, and as many text chunks (default 64)")
    attention.add_argument("--queries", choices=["all", "last"], default="all",
                           help="query positions averaged over: all = every position >= 6 (default), "
                                "last = the prompt's last position")
    attention.add_argument("--bins", type=int, default=20, help="relative-position bins of the heat map (default 20)")
    attention.add_argument("--out", required=True, help="folder for attention.json and the figures")
    attention.add_argument("--config_files", default=None,
                           help="yaml files, space-separated, applied over the defaults in order")
    attention.add_argument("--debug", action="store_true", help="show the traceback of errors about the input")
    attention.set_defaults(command_parser=attention)  # its usage line goes with errors about its flags
    return parser


def parse_args(argv):
    """(args, config files, {key: value} overrides); errors about the flags end through argparse (exit code 2)."""
    from recbole_earn.cli import CommandLineError, split_overrides

    args, extra = build_parser().parse_known_args(argv)
    command_parser = args.command_parser
    if args.num_prompts < 1:
        command_parser.error(f"--num_prompts must be at least 1, got {args.num_prompts}")
    if args.bins < 1:
        command_parser.error(f"--bins must be at least 1, got {args.bins}")
    try:
        overrides = split_overrides(extra)
    except CommandLineError as error:
        command_parser.error(str(error))
    return args, (args.config_files.split() if args.config_files else None), overrides


def run_attention(args, config_files, overrides):
    from recbole_earn.analysis.attention_run import check_llm_recommender, run_attention_analysis
    from recbole_earn.compat import require_checkpoint_file
    from recbole_earn.config import Config
    from recbole_earn.model_lookup import get_model_class

    check_llm_recommender(get_model_class(args.model))  # before the config: SASRec needs no dataset loaded
    if args.checkpoint is not None:
        require_checkpoint_file(args.checkpoint)
    config = Config(model=args.model, dataset=args.dataset, config_file_list=config_files, cmd_args=overrides)
    return run_attention_analysis(config, args.out, num_prompts=args.num_prompts, checkpoint=args.checkpoint,
                                  query_mode=args.queries, bins=args.bins)


def main(argv=None):
    """Run the command line `argv` (default sys.argv[1:]); returns the result, exits on errors about the input."""
    from recbole_earn.cli import reporting_user_errors

    args, config_files, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    return reporting_user_errors(PROG, args, lambda: run_attention(args, config_files, overrides))


if __name__ == "__main__":
    main()
