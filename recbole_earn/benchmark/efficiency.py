"""EARN efficiency benchmark: vanilla vs EARN through the same decoder, and plain transformers generate(), in one
process on the same weights.

Notation:
  N      decoder layers of the backbone
  k      the register layer: layers [0, k) see the whole prompt, layers [k, N) only the registers and what follows
  R      registers per prompt (1 prefix + 1 suffix = 2)
  L      tokens of the vanilla prefill (BOS + prompt; the prompt has L - 1 tokens)
  T      generated KV entries held per prompt at the end (beams x decoding steps: the beams of a prompt share its
         prompt cache, only their generated tokens are per beam)
  steps  decoding model steps (new tokens - 1: the first token comes from prefill)

Methods, all on the same backbone weights:
  vanilla   EARNModel(backbone, EARNConfig(earn_k=N, 0, 0)): the plain model through the EARN decoder
  earn      EARNModel(backbone, EARNConfig(earn_k=k, 1, 1)) (random registers: fine for timing)
  generate  transformers `generate()` on a second, unmodified copy of the backbone (the pipeline users run today)
With a press budget (a share of each prompt's tokens kept), the training-free baselines too:
  stream    vanilla with StreamingLLM: the first 4 prompt tokens and the most recent ones kept after prefill
  snapkv    vanilla with SnapKV: per layer and KV head the prompt tokens the last 8 attend to most, + those 8
  skip      vanilla with SkipLayers at k: the prompt runs through layers [0, k) only (EARN's compute, untrained)
  earn+snap EARN at k with SnapKV on its layers < k

Analytic limits (token-layer counts; matmul FLOPs scale the same way):
  limit_prefill      = N*L / (k*L + (N-k)*R)
  KV ratio           = [k(L+T) + (N-k)(R+T)] / [N(L+T)],   limit_kv_reduction = 1 - KV ratio
  limit_e2e          = (N*L + steps*beams*N) / (k*L + (N-k)*R + steps*beams*N)
limit_e2e prices a decoded token-layer like a prefill one. On a CPU a decoding step is bound by reading the weights
(at batch 1, 7-9x a prefill token per beam), so the benchmark also reports, from measured times,
  ceiling_e2e        = (P + D) / (P / limit_prefill + D)
with P and D the vanilla decoder's prefill and decoding milliseconds: the best end-to-end speedup of any EARN
implementation whose prefill reaches the analytic limit and whose decoding costs what the vanilla model's does.
Speedups and the KV reduction of a row are against the vanilla row of the same workload, L and batch.
"""

import json
import math
import statistics
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch

from recbole_earn.llm.architectures import in_vocabulary
from recbole_earn.llm.timing import device_clock

from .workloads import (
    BIGREC,
    LCREC,
    PREFILL,
    WORKLOADS,
    PrefixAllowedTokens,
    Workload,
    build_prompts,
    movie_titles,
    semantic_id_sequences,
)

ROW_KEYS = (
    "workload", "L", "batch", "k", "N", "method", "prefill_ms", "decode_ms_per_token", "e2e_ms", "kv_bytes",
    "speedup_prefill", "speedup_e2e", "limit_prefill", "limit_e2e", "kv_reduction", "limit_kv_reduction",
    "ceiling_e2e",
)
K_FRACTIONS = (8, 4, 2)  # earn_k = N/8, N/4, N/2
N_PREFIX_REGISTERS = 1
N_SUFFIX_REGISTERS = 1


# -- analytic formulas -------------------------------------------------------------------------------------------
def round_k(num_layers: int, fraction: int) -> int:
    """N / fraction rounded half up (N=30: 3.75 -> 4, 7.5 -> 8, 15 -> 15), kept in [1, N - 1]."""
    return min(max(int(math.floor(num_layers / fraction + 0.5)), 1), num_layers - 1)


def earn_ks(num_layers: int, fractions: Sequence[int] = K_FRACTIONS) -> List[int]:
    """Distinct register layers for the given fractions, in the order given (small models may merge some)."""
    ks = []
    for fraction in fractions:
        k = round_k(num_layers, fraction)
        if k not in ks:
            ks.append(k)
    return ks


def limit_prefill(N, k, L, R):
    return N * L / (k * L + (N - k) * R)


def kv_ratio(N, k, L, R, T):
    return (k * (L + T) + (N - k) * (R + T)) / (N * (L + T))


def limit_kv_reduction(N, k, L, R, T):
    return 1.0 - kv_ratio(N, k, L, R, T)


def limit_e2e(N, k, L, R, steps, beams):
    decode = steps * beams * N
    return (N * L + decode) / (k * L + (N - k) * R + decode)


def ceiling_e2e(vanilla_prefill, vanilla_decode, prefill_limit):
    """Best end-to-end speedup when decoding costs the vanilla decoder's measured time for both and the prefill
    speedup reaches its analytic limit: (P + D) / (P / limit_prefill + D)."""
    return (vanilla_prefill + vanilla_decode) / (vanilla_prefill / prefill_limit + vanilla_decode)


def kv_bytes_per_entry(config, dtype=torch.float32) -> int:
    """Bytes of one token's keys + values in one layer."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_key_value_heads * head_dim * torch.tensor([], dtype=dtype).element_size()


def engine_kv_bytes(N, k, L, R, T, batch, bytes_per_entry):
    """Exact bytes the engine's cache holds for `batch` prompts of L vanilla tokens: layers < k keep BOS, the prompt
    and the R registers (L + R) plus T generated entries; layers >= k keep R + T (k = N, R = 0: vanilla N(L + T))."""
    return batch * bytes_per_entry * (k * (L + R + T) + (N - k) * (R + T))


# -- one measurement ---------------------------------------------------------------------------------------------
@dataclass
class Sample:
    prefill_s: float
    decode_s_per_token: Optional[float]
    e2e_s: float
    kv_bytes: Optional[int]


def run_engine(model, prompts, workload: Workload, trie=None, beam_normalise="vocabulary") -> Sample:
    """One run of the EARN engine (vanilla or EARN): prefill only, or beam search (constrained for lcrec, its
    scores normalised as `beam_normalise` says: over the vocabulary, or over the trie's allowed tokens only)."""
    from recbole_earn.llm import beam_search

    device = model.registers.device
    if not workload.decodes:
        with torch.inference_mode():
            start = device_clock(device)
            prefill = model.prefill(prompts)
            elapsed = device_clock(device) - start
        return Sample(elapsed, None, elapsed, prefill.cache.nbytes())
    start = device_clock(device)
    out = beam_search(model, prompts, num_beams=workload.beams, max_new_tokens=workload.new_tokens,
                      trie=trie if workload.constrained else None, stop_at_eos=False, normalise=beam_normalise)
    elapsed = device_clock(device) - start
    if out.sequences.shape[-1] != workload.new_tokens or out.decode_steps != workload.decode_steps:
        raise RuntimeError(f"{workload.name}: expected {workload.new_tokens} new tokens, got "
                           f"{out.sequences.shape[-1]} ({out.decode_steps} steps)")
    if workload.constrained and not bool((out.lengths == workload.new_tokens).all()):
        raise RuntimeError(f"{workload.name}: some beams did not produce exactly {workload.new_tokens} tokens")
    per_token = out.decode_seconds / out.decode_steps if out.decode_steps else None
    return Sample(out.prefill_seconds, per_token, elapsed, int(sum(out.kv_layer_bytes)))


class _FirstLogitsClock:
    """A logits processor that only notes when generate() first has logits (= end of its prefill)."""

    def __init__(self):
        self.first = None

    def __call__(self, input_ids, scores):
        if self.first is None:
            self.first = device_clock(scores.device)
        return scores


def _cache_bytes(cache) -> Optional[int]:
    if cache is None:
        return None
    layers = getattr(cache, "layers", None)
    total = 0
    try:
        if layers is not None:
            for layer in layers:
                for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                    if isinstance(tensor, torch.Tensor):
                        total += tensor.numel() * tensor.element_size()
        else:  # legacy tuple of (keys, values) per layer
            for keys, values in cache:
                total += keys.numel() * keys.element_size() + values.numel() * values.element_size()
    except (TypeError, ValueError):
        return None
    return total or None


def run_generate(plain, prompts, workload: Workload, bos_token_id, pad_token_id, eos_token_id,
                 trie_sequences=None) -> Sample:
    """One run of transformers' generate() on the unmodified model, with the same BOS + prompt ids.
    prefill = until generate first has logits; decode per token = the rest over (new tokens - 1)."""
    from transformers import LogitsProcessorList

    head = [bos_token_id] if bos_token_id is not None else []
    input_ids = torch.tensor([head + list(p) for p in prompts], dtype=torch.long)
    attention_mask = torch.ones_like(input_ids)
    clock = _FirstLogitsClock()
    new_tokens = max(workload.new_tokens, 1)
    kwargs = dict(
        num_beams=workload.beams, max_new_tokens=new_tokens, do_sample=False, pad_token_id=pad_token_id,
        eos_token_id=eos_token_id, return_dict_in_generate=True, logits_processor=LogitsProcessorList([clock]),
    )
    if workload.constrained:
        kwargs["prefix_allowed_tokens_fn"] = PrefixAllowedTokens(trie_sequences, input_ids.shape[1], eos_token_id)
    elif workload.decodes:
        kwargs["min_new_tokens"] = new_tokens  # fixed work, like the engine's stop_at_eos=False
    input_ids, attention_mask = input_ids.to(plain.device), attention_mask.to(plain.device)
    with torch.inference_mode():
        start = device_clock(plain.device)
        out = plain.generate(input_ids, attention_mask=attention_mask, **kwargs)
        end = device_clock(plain.device)
    produced = out.sequences.shape[1] - input_ids.shape[1]
    if produced != new_tokens:
        raise RuntimeError(f"generate {workload.name}: expected {new_tokens} new tokens, got {produced}")
    prefill_s = (clock.first or end) - start
    per_token = (end - clock.first) / (new_tokens - 1) if workload.decodes and new_tokens > 1 else None
    return Sample(prefill_s, per_token, end - start, _cache_bytes(getattr(out, "past_key_values", None)))


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _median_sample(samples: List[Sample]) -> Sample:
    return Sample(_median([s.prefill_s for s in samples]), _median([s.decode_s_per_token for s in samples]),
                  _median([s.e2e_s for s in samples]), samples[-1].kv_bytes)


# -- the benchmark -----------------------------------------------------------------------------------------------
@dataclass
class Case:
    workload: Workload
    L: int
    batch: int
    warmup: bool = True  # False: no warm-up run for this case (when earlier cases already warmed the same code)
    generate: bool = True  # False: no generate() baseline for this case


def default_cases(lengths, batches, workloads) -> List[Case]:
    return [Case(WORKLOADS[w] if isinstance(w, str) else w, L, b) for w in workloads for L in lengths for b in batches]


def quick_cases(L=300) -> List[Case]:
    """--quick (under a minute on a busy 2-core machine): prefill at batch 1 and 8, the decoding workloads at batch
    1; only the first case has a warm-up run (it warms up the shared code: layers, attention, lm head); generate()
    only for bigrec (its lcrec runs the prompt 20 times: half a minute alone)."""
    return [Case(PREFILL, L, 1, generate=False), Case(PREFILL, L, 8, warmup=False, generate=False),
            Case(BIGREC, L, 1, warmup=False), Case(LCREC, L, 1, warmup=False, generate=False)]


def _ms(seconds):
    return None if seconds is None else seconds * 1000.0


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def run_benchmark(backbone, tokenizer, cases: Sequence[Case], ks: Sequence[int], repeats: int = 3,
                  plain_backbone=None, generate_max_tokens: Optional[int] = 50_000, n_items: int = 1682,
                  warmup: bool = True, seed: int = 0, log: Callable[[str], None] = print,
                  titles: Optional[Sequence[str]] = None, beam_normalise: str = "vocabulary",
                  press_budget: Optional[float] = None, decode_mode: str = "auto") -> Dict:
    """Time every case for vanilla, each EARN k, (if `plain_backbone`) generate() and (with `press_budget`) the
    compression baselines, every engine method decoding in `decode_mode` (slot_decoding.py). Each method gets one
    untimed warm-up run per (workload, batch) the first time it meets it (cases in ascending L: the cheapest one),
    then `repeats` timed runs, interleaved across methods; medians are reported. Returns
    {"rows": [...], "skipped": [...], "exact_kv": bool}: rows with exactly ROW_KEYS."""
    from recbole_earn.llm import TokenTrie

    vocab_size = backbone.config.vocab_size
    titles = list(titles) if titles is not None else movie_titles()
    models = engine_models(backbone, tokenizer, ks, seed, press_budget)
    for _, _, model in models:
        model.decode_mode = decode_mode
    sequences = semantic_id_sequences(n_items=n_items, seed=seed)
    trie = TokenTrie(sequences)
    rows, skipped, exact_kv = [], [], True
    warmed = set()  # (method, k, workload, batch) already run once: first-call effects are behind us

    for case in cases:
        prompts = [[in_vocabulary(t, vocab_size) for t in prompt]  # an architecture may have fewer ids
                   for prompt in build_prompts(tokenizer, case.L - 1, case.batch, seed=seed + case.L, titles=titles)]
        if warmup and case.warmup:
            warm_up(models, prompts, case, trie, beam_normalise, warmed)
        measured = time_engine(models, prompts, case, trie, beam_normalise, repeats)
        case_rows, exact = engine_rows(backbone, case, models, measured)
        rows += case_rows
        exact_kv = exact_kv and exact
        log(_progress(case_rows))

        if plain_backbone is not None and case.generate:
            cost = case.batch * case.workload.beams * case.L
            if generate_max_tokens is not None and cost > generate_max_tokens:
                skipped.append(f"generate {case.workload.name} L={case.L} batch={case.batch}: {cost} prompt tokens > "
                               "--generate_max_tokens")
                log(f"  skipped {skipped[-1]}")
                continue
            gen = _time_generate(plain_backbone, tokenizer, prompts, case.workload, sequences, repeats)
            rows.append(generate_row(backbone, case, gen, measured[("vanilla", backbone.config.num_hidden_layers)]))
            log(_progress(rows[-1:]))
    return {"rows": rows, "skipped": skipped, "exact_kv": exact_kv}


def engine_models(backbone, tokenizer, ks, seed, press_budget=None):
    """[(method, k, EARNModel)] on one backbone: the vanilla decoder (k = N, no registers), EARN at each k, and
    with `press_budget` the compression baselines (module doc)."""
    from recbole_earn.llm import EARNConfig, EARNModel, SnapKV, StreamingLLM

    N = backbone.config.num_hidden_layers

    def vanilla():
        return EARNModel(backbone, EARNConfig(earn_k=N, n_prefix_registers=0, n_suffix_registers=0), tokenizer).eval()

    def earn(k):
        torch.manual_seed(seed + k)  # random registers: fine for timing
        return EARNModel(backbone, EARNConfig(k, N_PREFIX_REGISTERS, N_SUFFIX_REGISTERS), tokenizer).eval()

    def pressed(model, press=None, prompt_layers=None):
        model.kv_press, model.prompt_layers = press, prompt_layers
        return model

    models = [("vanilla", N, vanilla())] + [("earn", k, earn(k)) for k in ks]
    if press_budget is not None:
        models += [("stream", N, pressed(vanilla(), StreamingLLM(press_budget))),
                   ("snapkv", N, pressed(vanilla(), SnapKV(press_budget)))]
        models += [("skip", k, pressed(vanilla(), prompt_layers=k)) for k in ks]
        models += [("earn+snap", k, pressed(earn(k), SnapKV(press_budget))) for k in ks]
    return models


def warm_up(models, prompts, case, trie, beam_normalise, warmed):
    """One untimed run of each method that has not met this workload and batch yet."""
    for name, k, model in models:
        key = (name, k, case.workload.name, case.batch)
        if key not in warmed:
            run_engine(model, prompts, case.workload, trie, beam_normalise)
            warmed.add(key)


def time_engine(models, prompts, case, trie, beam_normalise, repeats):
    """{(method, k): median Sample} over `repeats` runs, interleaved so that load changes hit every method alike."""
    samples = {(name, k): [] for name, k, _ in models}
    for _ in range(repeats):
        for name, k, model in models:
            samples[(name, k)].append(run_engine(model, prompts, case.workload, trie, beam_normalise))
    return {key: _median_sample(s) for key, s in samples.items()}


def engine_rows(backbone, case, models, measured):
    """(one row per engine method with its speedups, limits and ceiling against vanilla, whether every KV size
    of vanilla and EARN equals the analytic formula). A compression baseline's row has its measured speedups and
    KV reduction, and no limits."""
    N = backbone.config.num_hidden_layers
    R = N_PREFIX_REGISTERS + N_SUFFIX_REGISTERS
    bpe = kv_bytes_per_entry(backbone.config, next(backbone.parameters()).dtype)
    w, L, B = case.workload, case.L, case.batch
    steps, beams = w.decode_steps, w.beams
    base = measured[("vanilla", N)]
    base_decode_s = base.e2e_s - base.prefill_s  # everything after the vanilla prefill
    rows, exact_kv = [], True
    for name, k, _ in models:
        m = measured[(name, k)]
        is_vanilla, analytic = name == "vanilla", name in ("vanilla", "earn")
        if analytic and m.kv_bytes != engine_kv_bytes(N, k, L, 0 if is_vanilla else R, steps * beams, B, bpe):
            exact_kv = False
        row = dict(
            workload=w.name, L=L, batch=B, k=k, N=N, method=name,
            prefill_ms=_ms(m.prefill_s), decode_ms_per_token=_ms(m.decode_s_per_token), e2e_ms=_ms(m.e2e_s),
            kv_bytes=m.kv_bytes,
            speedup_prefill=_ratio(base.prefill_s, m.prefill_s), speedup_e2e=_ratio(base.e2e_s, m.e2e_s),
            kv_reduction=1.0 - _ratio(m.kv_bytes, base.kv_bytes),
            limit_prefill=None, limit_e2e=None, limit_kv_reduction=None, ceiling_e2e=None,
        )
        if analytic:
            row.update(limit_prefill=1.0 if is_vanilla else limit_prefill(N, k, L, R),
                       limit_e2e=1.0 if is_vanilla else limit_e2e(N, k, L, R, steps, beams),
                       limit_kv_reduction=0.0 if is_vanilla else limit_kv_reduction(N, k, L, R, steps * beams),
                       ceiling_e2e=1.0 if is_vanilla else ceiling_e2e(base.prefill_s, base_decode_s,
                                                                      limit_prefill(N, k, L, R)))
        rows.append(row)
    return rows, exact_kv


def generate_row(backbone, case, gen, base):
    """The row of transformers' generate() on the unmodified model, against the vanilla engine's `base` Sample."""
    N = backbone.config.num_hidden_layers
    return dict(
        workload=case.workload.name, L=case.L, batch=case.batch, k=N, N=N, method="generate",
        prefill_ms=_ms(gen.prefill_s), decode_ms_per_token=_ms(gen.decode_s_per_token), e2e_ms=_ms(gen.e2e_s),
        kv_bytes=gen.kv_bytes,
        speedup_prefill=_ratio(base.prefill_s, gen.prefill_s), speedup_e2e=_ratio(base.e2e_s, gen.e2e_s),
        limit_prefill=None, limit_e2e=None,
        kv_reduction=None if gen.kv_bytes is None else 1.0 - gen.kv_bytes / base.kv_bytes,
        limit_kv_reduction=None, ceiling_e2e=None,
    )


GENERATE_CHEAP_SECONDS = 3.0


def _time_generate(plain, tokenizer, prompts, workload, sequences, repeats) -> Sample:
    """generate() runs are long: the first run is a warm-up only when it took < GENERATE_CHEAP_SECONDS (then
    `repeats` more are timed); otherwise it is the one sample (warm-up effects are small against many seconds)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def once():
        return run_generate(plain, prompts, workload, tokenizer.bos_token_id, pad, tokenizer.eos_token_id, sequences)

    first = once()
    if first.e2e_s >= GENERATE_CHEAP_SECONDS:
        return first
    return _median_sample([once() for _ in range(max(repeats, 1))])


def _progress(rows):
    return "  ".join(f"[{r['workload']} L={r['L']} b={r['batch']} {r['method']} k={r['k']}: "
                     f"e2e {r['e2e_ms']:.0f} ms]" for r in rows)


# -- output ------------------------------------------------------------------------------------------------------
def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def format_table(rows) -> str:
    header = (f"{'workload':<8} {'L':>4} {'B':>2} {'method':<9} {'k':>3} {'prefill_ms':>10} {'dec_ms/tok':>10} "
              f"{'e2e_ms':>9} {'kv_MiB':>8} {'spd_pre':>7} {'lim_pre':>7} {'spd_e2e':>7} {'lim_e2e':>7} "
              f"{'kv_red':>7} {'lim_kvr':>7} {'ceil_e2e':>8}")
    lines = [header, "-" * len(header)]
    previous = None
    for r in rows:
        group = (r["workload"], r["L"], r["batch"])
        if previous is not None and group != previous:
            lines.append("")
        previous = group
        kv = None if r["kv_bytes"] is None else r["kv_bytes"] / 2 ** 20
        lines.append(
            f"{r['workload']:<8} {r['L']:>4} {r['batch']:>2} {r['method']:<9} {_fmt(r['k'], 'd'):>3} "
            f"{_fmt(r['prefill_ms'], '.1f'):>10} {_fmt(r['decode_ms_per_token'], '.1f'):>10} "
            f"{_fmt(r['e2e_ms'], '.1f'):>9} {_fmt(kv, '.2f'):>8} {_fmt(r['speedup_prefill'], '.2f'):>7} "
            f"{_fmt(r['limit_prefill'], '.2f'):>7} {_fmt(r['speedup_e2e'], '.2f'):>7} {_fmt(r['limit_e2e'], '.2f'):>7} "
            f"{_fmt(r['kv_reduction'], '.1%'):>7} {_fmt(r['limit_kv_reduction'], '.1%'):>7} "
            f"{_fmt(r['ceiling_e2e'], '.2f'):>8}")
    return "\n".join(lines)


def write_json(rows, path):
    with open(path, "w", encoding="utf-8") as handle:
        json.dump([{key: row[key] for key in ROW_KEYS} for row in rows], handle, indent=1)
