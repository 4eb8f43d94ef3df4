"""python -m recbole_earn.benchmark efficiency [--quick] [--json PATH] [--llm_path smollm2-135m] [--repeats N]
[--threads N] ...

python -m recbole_earn.benchmark compression --model=LCRec --dataset=ml-100k --plain_checkpoint=saved/LCRec-X.pth
--earn_checkpoint=saved/EARNLCRec-Y.pth [--budget 0.5] [--history_items 5] [--out STEM] [--key=value ...]"""

import argparse
import os
import platform
import sys
import time


def _int_list(text):
    return [int(x) for x in text.split(",") if x.strip()]


def _press_budget(text):
    from recbole_earn.llm.kv_press import checked_budget

    try:
        return checked_budget(float(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m recbole_earn.benchmark",
                                     description="Benchmarks of the EARN engine.")
    sub = parser.add_subparsers(dest="command", required=True)
    eff = sub.add_parser("efficiency", help="vanilla vs EARN vs transformers generate(): time, KV cache, limits")
    eff.add_argument("--quick", action="store_true",
                     help="small subset: L=300, k=N/4, prefill at batch 1 and 8, bigrec and lcrec at batch 1, "
                          "generate() for bigrec only, 1 repeat")
    eff.add_argument("--json", metavar="PATH", help="write the rows as a JSON list")
    eff.add_argument("--llm_path", default="smollm2-135m", help="a backbone as in run_earn.py, or an "
                     "architecture with random weights: llama-7b-arch, qwen2.5-7b-arch, llama-1b-arch, "
                     "smollm2-135m-arch (the same cost per token as the trained model)")
    eff.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                     help="weights and activations of every method (default float32; bfloat16 is fast on CPUs "
                          "with AVX512-BF16 or AMX)")
    eff.add_argument("--device", default="cpu", help="cpu or cuda (cuda:0, ...): where every method runs "
                     "(default cpu)")
    eff.add_argument("--repeats", type=int, default=None, help="timed runs per method after a warm-up "
                     "(median reported); default 3, 1 with --quick")
    eff.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    eff.add_argument("--lengths", type=_int_list, default=[150, 300, 600],
                     help="L values: tokens of the vanilla prefill, BOS + prompt (default 150,300,600)")
    eff.add_argument("--batches", type=_int_list, default=[1, 8])
    eff.add_argument("--k_fractions", type=_int_list, default=[8, 4, 2],
                     help="earn_k = N / f rounded half up, for each f (default 8,4,2)")
    eff.add_argument("--workloads", default="prefill,bigrec,lcrec")
    eff.add_argument("--beam_normalise", default="vocabulary", choices=["vocabulary", "trie"],
                     help="lcrec workload: beam scores over the whole vocabulary (LC-Rec's, one full lm head per "
                     "step) or renormalised over the trie's allowed codes (only their lm-head rows)")
    eff.add_argument("--press_budget", type=_press_budget, default=None,
                     help="also time the compression baselines (StreamingLLM, SnapKV, SkipLayers at each k, EARN + "
                          "SnapKV), each press keeping this share in (0, 1) or this count of every prompt's tokens")
    eff.add_argument("--decode_mode", default="auto", choices=["auto", "growing", "slots", "graph"],
                     help="how the engine runs decoding steps: on a growing cache (eager), on fixed buffers "
                          "(eager), or on them replayed as a CUDA graph; auto = graph on CUDA, growing elsewhere")
    eff.add_argument("--no_generate", action="store_true", help="skip the transformers generate() baseline")
    eff.add_argument("--generate_max_tokens", type=int, default=None,
                     help="skip a generate() case whose prompt tokens (batch x beams x L: generate runs the prompt "
                          "once per beam) exceed this; default 50000, 2000 with --quick; 0 = no limit")
    add_compression_parser(sub)
    return parser


def add_compression_parser(sub):
    comp = sub.add_parser("compression", help="EARN beside StreamingLLM, SnapKV and prompt compression on trained "
                          "checkpoints: accuracy, inference time and KV cache per user (any other --key=value "
                          "overrides that config key)")
    comp.add_argument("--model", default="LCRec", help="the plain model, LCRec or BIGRec; its EARN twin is "
                      "EARN<model> (default LCRec)")
    comp.add_argument("--dataset", default="ml-100k")
    comp.add_argument("--plain_checkpoint", required=True, help="run_earn.py's checkpoint of --model")
    comp.add_argument("--earn_checkpoint", required=True, help="run_earn.py's checkpoint of EARN<model>")
    comp.add_argument("--budget", type=float, default=0.5, help="prompt tokens a press keeps: a share in (0, 1) "
                      "or a count (default 0.5)")
    comp.add_argument("--history_items", type=int, default=5, help="prompt compression: history items kept in "
                      "the prompt (default 5)")
    comp.add_argument("--skip_from", type=int, default=None, help="SkipLayers: the prompt runs through layers "
                      "below this one (default: the EARN checkpoint's earn_k)")
    comp.add_argument("--config_files", default=None, help="yaml files, space-separated")
    comp.add_argument("--out", default=None, help="path stem of the table's .md/.csv/.json")
    comp.add_argument("--debug", action="store_true", help="show the traceback of errors about the input too")


def main(argv=None):
    args, extra = build_parser().parse_known_args(argv)
    if args.command == "compression":
        return compression_main(args, extra)
    if extra:
        build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
    import torch

    from .efficiency import run_benchmark, write_json

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    backbone, tokenizer, plain = load_models(args)
    N = backbone.config.num_hidden_layers
    ks, cases, repeats, cap = plan(args, N)
    print_header(args, backbone, ks, repeats, cap)
    result = run_benchmark(backbone, tokenizer, cases, ks, repeats=repeats, plain_backbone=plain,
                           generate_max_tokens=cap or None, log=lambda s: print(s, file=sys.stderr, flush=True),
                           beam_normalise=args.beam_normalise, press_budget=args.press_budget,
                           decode_mode=args.decode_mode)
    print_rows(result)
    print_limits(backbone, result["rows"], N)
    if args.json:
        write_json(result["rows"], args.json)
        print(f"# wrote {len(result['rows'])} rows to {args.json}")
    print(f"# total runtime {time.perf_counter() - started:.1f} s")
    return 0


def compression_main(args, extra):
    from recbole_earn.cli import CommandLineError, reporting_user_errors, split_overrides

    try:
        overrides = split_overrides(extra)
    except CommandLineError as error:
        build_parser().error(str(error))
    from recbole_earn.compat import require_checkpoint_file

    for flag in ("plain_checkpoint", "earn_checkpoint"):
        try:
            require_checkpoint_file(getattr(args, flag), flag=f"--{flag}")
        except FileNotFoundError as error:
            build_parser().error(str(error))
    return reporting_user_errors("python -m recbole_earn.benchmark", args, lambda: run_compression(args, overrides))


def run_compression(args, overrides):
    from .compression import markdown, run_comparison, write

    started = time.perf_counter()
    config_files = args.config_files.split() if args.config_files else None
    table = run_comparison(args.model, args.dataset, args.plain_checkpoint, args.earn_checkpoint, budget=args.budget,
                           history_items=args.history_items, skip_from=args.skip_from,
                           config_files=config_files, overrides=overrides,
                           log=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"# {args.model} / EARN{args.model} on {args.dataset}: test split, full ranking; speedup and KV reduction "
          f"against plain fine-tuning")
    print(markdown(table))
    if args.out:
        print(f"# wrote {', '.join(write(table, args.out))}")
    print(f"# total runtime {time.perf_counter() - started:.1f} s")
    return 0


def load_models(args):
    """The backbone EARN and vanilla share, its tokenizer, and (unless --no_generate) a second, unmodified copy
    for generate()."""
    import torch

    from recbole_earn.llm import load_backbone

    dtype = getattr(torch, args.dtype)
    backbone, tokenizer = load_backbone(args.llm_path, dtype=dtype, device=args.device)
    plain = None if args.no_generate else load_backbone(args.llm_path, dtype=dtype, device=args.device)[0]
    return backbone, tokenizer, plain


def plan(args, N):
    """(register layers, cases, timed repeats, generate() token cap) for this run; --quick shrinks all four."""
    from .efficiency import default_cases, earn_ks, quick_cases

    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    cap = args.generate_max_tokens if args.generate_max_tokens is not None else (2000 if args.quick else 50_000)
    if args.quick:
        return earn_ks(N, [4]), quick_cases(300), repeats, cap
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    return earn_ks(N, args.k_fractions), default_cases(args.lengths, args.batches, workloads), repeats, cap


def print_header(args, backbone, ks, repeats, cap):
    import torch

    config = backbone.config
    device = next(backbone.parameters()).device
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {platform.machine()}"
    print(f"# EARN efficiency benchmark: {args.llm_path} (N={config.num_hidden_layers} layers, {config.hidden_size} "
          f"hidden), {args.dtype}, torch {torch.__version__}, {where}; k in {ks}; repeats {repeats} (median; a warm-up run per method, workload "
          f"and batch); generate cap {cap or 'none'}; decode mode {args.decode_mode}")
    print("# workloads: prefill; bigrec = 16 new tokens, 4 beams; lcrec = 4 new tokens, 20 beams, trie of 1682 "
          f"4-token codes over 1024 ids, scores normalised over the {args.beam_normalise}. L = BOS + prompt tokens. "
          "R = 2 registers.", flush=True)


def print_rows(result):
    from .efficiency import format_table

    print()
    print(format_table(result["rows"]))
    print()
    for line in result["skipped"]:
        print(f"# skipped: {line}")
    print(f"# EARN/vanilla kv_bytes equal the exact per-layer formula x bytes per entry: {result['exact_kv']}")


def print_limits(backbone, rows, N):
    """This machine's memory bandwidth and the weights a decoding step reads, then the Limits summary."""
    from .limits import format_limits, limits_summary
    from .roofline import decode_step_bytes, stream_bandwidth
    from .workloads import BIGREC, LCREC

    device = next(backbone.parameters()).device
    megabytes = 2048 if device.type == "cuda" else 256
    bandwidth = stream_bandwidth(megabytes=megabytes, device=device)
    # Every step of the benchmark's beam searches, trie-constrained or not, takes the log-softmax over the whole
    # vocabulary (beam_search's default normalisation, LC-Rec's own), so it reads the whole lm head.
    step_bytes = decode_step_bytes(backbone, full_lm_head=True)
    floors_ms = {w.name: step_bytes / bandwidth * 1000 for w in (BIGREC, LCREC)}
    print(f"# memory bandwidth (reading a {megabytes} MiB tensor): {bandwidth / 1e9:.1f} GB/s; weights one decoding "
          f"step reads: {step_bytes / 1e6:.0f} MB")
    print()
    print(format_limits(limits_summary(rows, N, decode_floor_ms=floors_ms), N))
    print()


if __name__ == "__main__":
    sys.exit(main())
