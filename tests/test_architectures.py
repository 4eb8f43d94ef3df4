"""Architecture presets (published configs, random weights) and the benchmark on them: built on the asked device
and dtype, prompts folded into a smaller vocabulary, every method runs."""

import pytest
import torch

from recbole_earn.benchmark import earn_ks, run_benchmark
from recbole_earn.benchmark.__main__ import main
from recbole_earn.benchmark.efficiency import Case
from recbole_earn.benchmark.workloads import LCREC, PREFILL
from recbole_earn.llm import EARNConfig, EARNModel, load_backbone
from recbole_earn.llm.architectures import ARCHITECTURES, architecture_config, build_architecture, in_vocabulary

SMALL = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16)


@pytest.mark.parametrize("name,layers,hidden,heads,kv_heads,vocab", [
    ("llama-7b-arch", 32, 4096, 32, 32, 32000),
    ("qwen2.5-7b-arch", 28, 3584, 28, 4, 152064),
    ("llama-1b-arch", 16, 2048, 32, 8, 128256),
    ("smollm2-135m-arch", 30, 576, 9, 3, 49152),
])
def test_architectures_have_their_published_shapes(name, layers, hidden, heads, kv_heads, vocab):
    config = architecture_config(name)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
            config.vocab_size) == (layers, hidden, heads, kv_heads, vocab)
    assert config.model_type == ARCHITECTURES[name]["model_type"]


def test_a_preset_is_built_in_the_asked_dtype_and_runs_the_engine(device):
    model, tokenizer = build_architecture("qwen2.5-7b-arch", dtype=torch.bfloat16, device=device, **SMALL)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in model.parameters()} == {device.type}
    assert model.config.vocab_size == 152064 and model.config.num_hidden_layers == 2
    engine = EARNModel(model, EARNConfig(earn_k=1), tokenizer).eval()
    prefill = engine.prefill([[5, 6, 7], [8]])
    assert prefill.last_hidden.shape == (2, 64) and prefill.last_hidden.device.type == device.type


def test_unknown_architecture_is_named():
    with pytest.raises(ValueError, match="unknown architecture 'gpt-9-arch'"):
        architecture_config("gpt-9-arch")


def test_the_benchmark_folds_prompts_into_a_smaller_vocabulary():
    """SmolLM2's tokenizer writes ids up to 49151; an architecture with 12,000 ids gets them folded in."""
    assert in_vocabulary(49151, 12000) == 49151 % 12000 and in_vocabulary(None, 10) is None
    backbone, tokenizer = build_architecture("llama-7b-arch", vocab_size=12000, **SMALL)
    result = run_benchmark(backbone, tokenizer, [Case(PREFILL, 40, 2), Case(LCREC, 40, 1)],
                           earn_ks(backbone.config.num_hidden_layers), repeats=1, n_items=50, warmup=False,
                           log=lambda line: None)
    assert {row["method"] for row in result["rows"]} == {"vanilla", "earn"} and result["exact_kv"]


def test_load_backbone_takes_a_preset_and_a_device():
    model, _ = load_backbone("smollm2-135m-arch", dtype=torch.bfloat16, device="cpu")
    assert model.config.num_hidden_layers == 30 and next(model.parameters()).dtype == torch.bfloat16


def test_the_benchmark_cli_takes_a_device(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["efficiency", "--llm_path", "tiny-llama", "--device", "cpu", "--lengths", "40", "--batches", "1",
                 "--workloads", "prefill", "--k_fractions", "4", "--repeats", "1", "--no_generate", "--json",
                 str(out)]) == 0
    assert "# EARN efficiency benchmark: tiny-llama" in capsys.readouterr().out and out.exists()
