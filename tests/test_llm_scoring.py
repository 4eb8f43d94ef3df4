"""candidate_log_probs (one prefill per prompt, candidates as cache-sharing beams) equals scoring each
prompt + candidate as its own sequence."""

import pytest
import torch

from llm_helpers import earn_model, random_prompts
from recbole_earn.llm.scoring import candidate_log_probs


@pytest.mark.parametrize("preset,k", [("tiny-llama", 1), ("tiny-llama", 4), ("tiny-qwen2", 2)])
def test_equals_one_sequence_per_candidate(preset, k):
    model = earn_model(preset, earn_k=k)
    prompts = random_prompts(3, 3, 12, seed=k)  # different lengths: a padded prefill
    candidates = [random_prompts(4, 1, 4, seed=10 * k + p) for p in range(3)]  # responses of 1 to 4 tokens
    got = candidate_log_probs(model, prompts, candidates)
    assert got.shape == (3, 4)
    flat_prompts = [prompt for prompt, per_prompt in zip(prompts, candidates) for _ in per_prompt]
    flat_responses = [response for per_prompt in candidates for response in per_prompt]
    expected = model.response_log_probs(flat_prompts, flat_responses).view(3, 4)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert bool((got < 0).all())


def test_bad_candidates_are_refused():
    model = earn_model("tiny-llama", earn_k=2)
    prompts = random_prompts(2, seed=1)
    with pytest.raises(ValueError, match="same, non-zero number of candidates"):
        candidate_log_probs(model, prompts, [[[5, 6]], [[5], [7]]])
    with pytest.raises(ValueError, match="must not be empty"):
        candidate_log_probs(model, prompts, [[[5]], [[]]])
    with pytest.raises(ValueError, match="2 prompts but candidates for 1"):
        candidate_log_probs(model, prompts, [[[5]]])
