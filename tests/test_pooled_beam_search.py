"""pooled_beam_search is transformers' generate() beam search (num_beams, length_penalty, early_stopping=False) on
the EARN cache: on the vanilla decoder it returns generate()'s hypotheses and scores, and EARN runs it the same way."""

import pytest
import torch

from llm_helpers import earn_model, random_prompts, teacher_forced_score, tiny_backbone
from recbole_earn.llm import pooled_beam_search

N_LAYERS = 4  # tiny-llama


def generate_reference(prompts, bos, pad, eos, num_beams, max_new_tokens, length_penalty):
    """generate() on the unmodified backbone: (sequences [B, nb, T] with pad after EOS, scores [B, nb])."""
    backbone, _ = tiny_backbone()
    rows = [[bos] + prompt for prompt in prompts]
    width = max(len(row) for row in rows)
    ids = torch.tensor([[pad] * (width - len(row)) + row for row in rows])  # left padded
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    with torch.no_grad():
        out = backbone.generate(ids, attention_mask=mask, do_sample=False, num_beams=num_beams,
                                num_return_sequences=num_beams, max_new_tokens=max_new_tokens,
                                length_penalty=length_penalty, early_stopping=False, eos_token_id=eos,
                                pad_token_id=pad, output_scores=True, return_dict_in_generate=True)
    sequences = out.sequences[:, width:].view(len(prompts), num_beams, -1)
    return sequences, out.sequences_scores.view(len(prompts), num_beams)


def second_token(model, prompts, num_beams, max_new_tokens):
    """The second token of the first prompt's best hypothesis when nothing ends a beam: as EOS, it ends some
    hypotheses mid-search."""
    out = pooled_beam_search(model, prompts, num_beams=num_beams, max_new_tokens=max_new_tokens, eos_token_id=-1)
    return int(out.sequences[0, 0, 1])


@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
def test_vanilla_decoder_returns_generates_hypotheses(length_penalty):
    model = earn_model(earn_k=N_LAYERS, n_prefix=0, n_suffix=0)
    prompts = random_prompts(3, 3, 10, seed=21)
    eos = second_token(model, prompts, num_beams=4, max_new_tokens=6)
    ours = pooled_beam_search(model, prompts, num_beams=4, max_new_tokens=6, length_penalty=length_penalty,
                              eos_token_id=eos)
    sequences, scores = generate_reference(prompts, model.bos_token_id, model.pad_token_id, eos, 4, 6,
                                           length_penalty)
    # EOS ended some hypotheses; with length_penalty 2 the longer ones outrank them, as in generate()
    assert bool((ours.lengths < 6).any()) == (length_penalty < 2.0) and bool((ours.lengths == 6).any())
    width = ours.sequences.shape[-1]
    assert ours.sequences.tolist() == sequences[..., :width].tolist()
    assert (sequences[..., width:] == model.pad_token_id).all()
    torch.testing.assert_close(ours.scores, scores, atol=1e-4, rtol=0)
    for row in range(len(prompts)):  # EOS ends a hypothesis, and only padding follows it
        for beam, length in enumerate(ours.lengths[row].tolist()):
            tokens = ours.sequences[row, beam].tolist()
            assert eos not in tokens[: length - 1] and set(tokens[length:]) <= {model.pad_token_id}


def test_earn_ranks_by_length_normalised_score():
    model = earn_model(earn_k=1, n_prefix=1, n_suffix=1)
    prompts = random_prompts(2, 3, 10, seed=22)
    eos = second_token(model, prompts, num_beams=3, max_new_tokens=5)
    out = pooled_beam_search(model, prompts, num_beams=3, max_new_tokens=5, length_penalty=1.0, eos_token_id=eos)
    assert (out.scores[:, :-1] >= out.scores[:, 1:]).all()  # best first
    for row, prompt in enumerate(prompts):  # each score: the hypothesis' own log-probability / its length
        for seq, n, score in zip(out.sequences[row].tolist(), out.lengths[row].tolist(), out.scores[row].tolist()):
            assert abs(score - teacher_forced_score(model, prompt, seq[:n]) / n) < 1e-4


def test_bad_arguments_are_refused():
    model = earn_model(earn_k=1)
    with pytest.raises(ValueError, match="num_beams must be >= 1"):
        pooled_beam_search(model, [[5, 6]], num_beams=0)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        pooled_beam_search(model, [[5, 6]], max_new_tokens=0)
