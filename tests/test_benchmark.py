"""The efficiency benchmark (recbole_earn.benchmark) on a tiny random Llama: row layout, analytic limits, exact KV
bytes, the generate() baseline, the Limits summary. No timing assertions (the machine is shared and noisy)."""

import json

import pytest
import torch

from recbole_earn.benchmark import (
    ROW_KEYS,
    ceiling_e2e,
    earn_ks,
    engine_kv_bytes,
    format_limits,
    format_table,
    kv_bytes_per_entry,
    kv_ratio,
    limit_e2e,
    limit_kv_reduction,
    limit_prefill,
    limits_summary,
    round_k,
    run_benchmark,
    summary_k,
)
from recbole_earn.benchmark.__main__ import main
from recbole_earn.benchmark.efficiency import Case, write_json
from recbole_earn.benchmark.roofline import decode_step_bytes, stream_bandwidth
from recbole_earn.benchmark.workloads import (
    BIGREC,
    LCREC,
    PREFILL,
    PrefixAllowedTokens,
    build_prompts,
    movie_titles,
    semantic_id_sequences,
)
from recbole_earn.llm import TokenTrie, build_tiny

L = 40
N_ITEMS = 300


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    backbone, tokenizer = build_tiny("tiny-llama")  # 4 layers, hidden 64, 2 kv heads of 16
    plain, _ = build_tiny("tiny-llama")  # same weights, left unmodified for generate()
    return backbone.eval(), plain.eval(), tokenizer


@pytest.fixture(scope="module")
def result(tiny, one_thread):
    backbone, plain, tokenizer = tiny
    cases = [Case(PREFILL, L, 2), Case(BIGREC, L, 2), Case(LCREC, L, 1)]
    ks = earn_ks(backbone.config.num_hidden_layers)
    return run_benchmark(backbone, tokenizer, cases, ks, repeats=1, plain_backbone=plain, n_items=N_ITEMS,
                         warmup=False, log=lambda s: None)


def test_analytic_formulas_on_hand_computed_numbers():
    # SmolLM2: N = 30, R = 2, L = 300
    assert limit_prefill(30, 8, 300, 2) == pytest.approx(9000 / 2444)  # 3.6825
    assert limit_prefill(30, 4, 300, 2) == pytest.approx(9000 / 1252)  # 7.1885
    assert limit_prefill(30, 30, 300, 2) == pytest.approx(1.0)
    assert kv_ratio(30, 4, 300, 2, 0) == pytest.approx(1252 / 9000)
    assert limit_kv_reduction(30, 4, 300, 2, 0) == pytest.approx(1 - 1252 / 9000)  # 86.1%
    # 16 new tokens, 4 beams: T = 15 steps x 4 beams = 60 entries per prompt
    assert kv_ratio(30, 8, 300, 2, 60) == pytest.approx((8 * 360 + 22 * 62) / (30 * 360))
    # token-layers: prefill 30*300 = 9000 vs 8*300 + 22*2 = 2444, decode 15 steps x 4 beams x 30 layers = 1800
    assert limit_e2e(30, 8, 300, 2, 15, 4) == pytest.approx(10800 / 4244)  # 2.545
    assert limit_e2e(30, 4, 600, 2, 3, 20) == pytest.approx((18000 + 1800) / (2400 + 52 + 1800))
    assert limit_e2e(30, 8, 300, 2, 0, 1) == pytest.approx(limit_prefill(30, 8, 300, 2))
    # decoding that costs nothing leaves the prefill limit; decoding that costs as much as prefill halves the gain
    assert ceiling_e2e(400.0, 0.0, 4.0) == pytest.approx(4.0)
    assert ceiling_e2e(400.0, 400.0, 4.0) == pytest.approx(800 / 500)
    # the engine's exact bytes: layers < k hold L + R (+T), layers >= k hold R (+T); 2 x 3 kv heads x 64 x fp32
    assert engine_kv_bytes(30, 8, 300, 2, 60, 8, 1536) == 8 * 1536 * (8 * 362 + 22 * 62)
    assert engine_kv_bytes(30, 30, 300, 0, 0, 1, 1536) == 1536 * 30 * 300


def test_k_rounding():
    assert [round_k(30, f) for f in (8, 4, 2)] == [4, 8, 15]
    assert earn_ks(30) == [4, 8, 15]
    assert earn_ks(4) == [1, 2]  # 0.5 -> 1 and 1 merge


def test_prompts_have_the_exact_length_and_real_titles(tiny):
    _, _, tokenizer = tiny
    titles = movie_titles()
    assert len(titles) == 1682 and titles[0] == "Toy Story (1995)"
    for length in (39, 299):
        prompts = build_prompts(tokenizer, length, 3, titles=titles)
        assert [len(p) for p in prompts] == [length] * 3
        assert len({tuple(p) for p in prompts}) == 3  # different users
    assert '"' in tokenizer.decode(build_prompts(tokenizer, 299, 1, titles=titles)[0])


def test_semantic_ids_and_generate_constraint_follow_the_trie():
    sequences = semantic_id_sequences(n_items=500, seed=1)
    assert len(sequences) == len({tuple(s) for s in sequences}) == 500
    assert all(len(s) == 4 for s in sequences)
    assert len({t for s in sequences for t in s}) <= 1024
    levels = [{s[i] for s in sequences} for i in range(4)]
    assert all(not (levels[i] & levels[j]) for i in range(4) for j in range(i + 1, 4))  # a level's own ids
    trie = TokenTrie(sequences)
    allowed = PrefixAllowedTokens(sequences, prompt_length=2, fallback_token=0)
    prefix = sequences[7][:2]
    row = torch.tensor([5, 6] + prefix)
    node = 0
    for token in prefix:
        node = int(trie.children_nodes[node][trie.children_tokens[node] == token][0])
    expected = sorted(t for t in trie.children_tokens[node].tolist() if t >= 0)
    assert allowed(0, row) == expected


def test_rows_have_exactly_the_keys(result, tmp_path):
    path = tmp_path / "rows.json"
    write_json(result["rows"], path)
    rows = json.loads(path.read_text())
    assert rows and all(list(row) == list(ROW_KEYS) for row in rows)
    assert {r["workload"] for r in rows} == {"prefill", "bigrec", "lcrec"}
    assert {r["method"] for r in rows} == {"vanilla", "earn", "generate"}


def test_vanilla_rows_are_the_reference(result):
    for row in result["rows"]:
        if row["method"] == "vanilla":
            assert row["k"] == row["N"] == 4
            assert row["speedup_prefill"] in (1.0, None) and row["speedup_e2e"] in (1.0, None)
            assert row["kv_reduction"] in (0.0, None)


def test_earn_rows_kv_bytes_follow_the_formula(tiny, result):
    backbone = tiny[0]
    bpe = kv_bytes_per_entry(backbone.config)
    assert bpe == 2 * 2 * 16 * 4  # K+V x 2 kv heads x head_dim 16 x fp32
    assert result["exact_kv"]
    beams = {"prefill": (0, 1), "bigrec": (15, 4), "lcrec": (3, 20)}
    earn_rows = [r for r in result["rows"] if r["method"] == "earn"]
    assert {r["k"] for r in earn_rows} == {1, 2}
    for row in earn_rows:
        steps, nb = beams[row["workload"]]
        T, N, k = steps * nb, row["N"], row["k"]
        per_layer = k * (row["L"] + 2 + T) + (N - k) * (2 + T)  # layers < k: BOS+prompt+registers, then registers
        assert row["kv_bytes"] == row["batch"] * bpe * per_layer
        assert row["limit_prefill"] == pytest.approx(limit_prefill(N, k, row["L"], 2))
        assert row["limit_e2e"] == pytest.approx(limit_e2e(N, k, row["L"], 2, steps, nb))
        assert row["limit_kv_reduction"] == pytest.approx(limit_kv_reduction(N, k, row["L"], 2, T))
        vanilla = next(v for v in result["rows"] if v["method"] == "vanilla" and
                       (v["workload"], v["L"], v["batch"]) == (row["workload"], row["L"], row["batch"]))
        assert vanilla["kv_bytes"] == row["batch"] * bpe * N * (row["L"] + T)
        assert row["kv_reduction"] == pytest.approx(1 - row["kv_bytes"] / vanilla["kv_bytes"])
        assert row["speedup_e2e"] == pytest.approx(vanilla["e2e_ms"] / row["e2e_ms"])
        vanilla_decode = vanilla["e2e_ms"] - vanilla["prefill_ms"]
        assert row["ceiling_e2e"] == pytest.approx(ceiling_e2e(vanilla["prefill_ms"], vanilla_decode,
                                                               row["limit_prefill"]))


def test_generate_rows_exist_with_their_cache(tiny, result):
    bpe = kv_bytes_per_entry(tiny[0].config)
    generate = {r["workload"]: r for r in result["rows"] if r["method"] == "generate"}
    assert set(generate) == {"prefill", "bigrec", "lcrec"}
    for row in generate.values():
        assert row["e2e_ms"] > 0 and row["limit_prefill"] is None and row["limit_e2e"] is None
    # generate() keeps the prompt once per beam: batch x beams x (L + new tokens - 1) entries per layer
    assert generate["lcrec"]["kv_bytes"] == 1 * 20 * (L + 3) * 4 * bpe
    assert generate["bigrec"]["kv_bytes"] == 2 * 4 * (L + 15) * 4 * bpe
    assert generate["prefill"]["kv_bytes"] == 2 * L * 4 * bpe


def test_table_has_every_method(result):
    table = format_table(result["rows"])
    assert "generate" in table and "lcrec" in table and "vanilla" in table


def test_limits_summary_sets_each_cell_beside_its_limits(result):
    rows = result["rows"]
    assert summary_k(rows, 4) == 1  # N/4 = 1 was measured
    floors = {"bigrec": 2.5, "lcrec": 1.5}
    entries = limits_summary(rows, 4, decode_floor_ms=floors)
    assert [(e["workload"], e["L"], e["batch"]) for e in entries] == [("prefill", L, 2), ("bigrec", L, 2),
                                                                     ("lcrec", L, 1)]
    for entry in entries:
        row = next(r for r in rows if r["method"] == "earn" and r["k"] == 1 and r["workload"] == entry["workload"])
        assert (entry["speedup"], entry["limit"], entry["ceiling"]) == (row["speedup_e2e"], row["limit_e2e"],
                                                                        row["ceiling_e2e"])
        assert (entry["kv_reduction"], entry["limit_kv_reduction"]) == (row["kv_reduction"],
                                                                        row["limit_kv_reduction"])
        assert entry["step_ms"] == row["decode_ms_per_token"]
        assert entry["floor_ms"] == floors.get(entry["workload"])  # prefill decodes nothing: no floor
        if entry["floor_ms"] is not None:
            assert entry["step_over_floor"] == pytest.approx(entry["step_ms"] / entry["floor_ms"])
    text = format_limits(entries, 4)
    assert text.startswith("# Limits at k = 1") and "ceiling" in text and "floor" in text and "x_floor" in text
    assert "MET" not in text


def test_limits_summary_takes_the_measured_k_nearest_a_quarter():
    rows = [dict(method="earn", k=k) for k in (4, 15)] + [dict(method="vanilla", k=30)]
    assert summary_k(rows, 30) == 4  # N/4 = 8 not measured: 4 is nearer than 15
    assert summary_k([dict(method="vanilla", k=30)], 30) is None
    assert format_limits(limits_summary([dict(method="vanilla", k=30)], 30), 30).startswith("# Limits: no EARN")


def test_roofline_of_a_decoding_step(tiny):
    backbone = tiny[0]
    layers = sum(p.numel() for p in backbone.model.layers.parameters()) + backbone.model.norm.weight.numel()
    head = backbone.lm_head.weight.numel()
    assert decode_step_bytes(backbone, full_lm_head=False) == 4 * layers
    assert decode_step_bytes(backbone, full_lm_head=True) == 4 * (layers + head)
    assert 1e8 < stream_bandwidth(megabytes=8, repeats=2) < 1e13  # bytes/s of a real read


def test_cli_writes_json(tmp_path, capsys, one_thread):
    path = tmp_path / "out.json"
    assert main(["efficiency", "--llm_path", "tiny-llama", "--lengths", "40", "--batches", "1", "--workloads",
                 "prefill,lcrec", "--repeats", "1", "--threads", "1", "--json", str(path)]) == 0
    rows = json.loads(path.read_text())
    assert {(r["workload"], r["method"]) for r in rows} >= {("prefill", "vanilla"), ("lcrec", "earn"),
                                                            ("lcrec", "generate")}
    out = capsys.readouterr().out
    assert "# Limits at k = 1" in out and "prefill_ms" in out and "memory bandwidth" in out
    assert "MET" not in out  # plain numbers, no verdicts


def test_cli_runs_every_method_in_bfloat16(tmp_path, capsys, one_thread):
    path = tmp_path / "bf16.json"
    assert main(["efficiency", "--llm_path", "tiny-llama", "--dtype", "bfloat16", "--lengths", "40", "--batches",
                 "1", "--workloads", "bigrec", "--repeats", "1", "--threads", "1", "--json", str(path)]) == 0
    rows = json.loads(path.read_text())
    assert {r["method"] for r in rows} == {"vanilla", "earn", "generate"}
    vanilla = next(r for r in rows if r["method"] == "vanilla")
    # 2-byte entries: K+V x 2 kv heads x head_dim 16 x bf16, N = 4 layers, L + 15 steps x 4 beams
    assert vanilla["kv_bytes"] == 2 * 2 * 16 * 2 * 4 * (40 + 15 * 4)
    assert "bfloat16" in capsys.readouterr().out


def test_cli_times_trie_normalised_beam_scores(tmp_path, capsys, one_thread):
    path = tmp_path / "trie.json"
    assert main(["efficiency", "--llm_path", "tiny-llama", "--lengths", "40", "--batches", "1", "--workloads",
                 "lcrec", "--repeats", "1", "--threads", "1", "--no_generate", "--beam_normalise", "trie",
                 "--json", str(path)]) == 0
    rows = json.loads(path.read_text())
    assert {r["method"] for r in rows} == {"vanilla", "earn"} and all(r["e2e_ms"] > 0 for r in rows)
    assert "scores normalised over the trie" in capsys.readouterr().out


def test_cli_times_the_compression_baselines_beside_earn(tmp_path, one_thread):
    path = tmp_path / "presses.json"
    assert main(["efficiency", "--llm_path", "tiny-llama", "--lengths", "40", "--batches", "2", "--workloads",
                 "prefill,lcrec", "--k_fractions", "4", "--repeats", "1", "--threads", "1", "--no_generate",
                 "--press_budget", "0.5", "--json", str(path)]) == 0
    rows = json.loads(path.read_text())
    for workload in ("prefill", "lcrec"):
        by_method = {r["method"]: r for r in rows if r["workload"] == workload}
        assert set(by_method) == {"vanilla", "earn", "stream", "snapkv", "skip", "earn+snap"}
        for name in ("stream", "snapkv", "skip", "earn+snap"):
            row = by_method[name]
            assert row["limit_prefill"] is None and row["e2e_ms"] > 0 and row["speedup_e2e"] > 0
            assert row["kv_bytes"] < by_method["vanilla"]["kv_bytes"]
        assert by_method["skip"]["k"] == by_method["earn"]["k"] == 1
        assert by_method["earn+snap"]["kv_bytes"] < by_method["earn"]["kv_bytes"]


def test_cli_refuses_a_press_budget_that_keeps_nothing(capsys):
    with pytest.raises(SystemExit):
        main(["efficiency", "--llm_path", "tiny-llama", "--press_budget", "0"])
    assert "a press budget must be > 0" in capsys.readouterr().err
