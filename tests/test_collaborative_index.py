"""Collaborative item vectors and their place beside the text embeddings in LC-Rec's item index."""

import os

import pytest
import torch

from recbole_earn.indexing.collaborative import collaborative_vectors, matrix_digest, user_item_matrix
from recbole_earn.indexing.item_index import IndexSettings, build_item_index, index_features


def two_audiences():
    """Items 0-4 are watched by users 0-19, items 5-9 by users 20-39 (plus item 0 by everyone: the popular one)."""
    items = {user: set(range(5)) if user < 20 else set(range(5, 10)) | {0} for user in range(40)}
    return user_item_matrix(items, 10)


def test_items_of_one_audience_get_nearby_vectors_and_the_result_is_stable():
    matrix = two_audiences()
    vectors = collaborative_vectors(matrix, dim=4)  # [10, 4]
    assert vectors.shape == (10, 4)
    distances = torch.cdist(vectors, vectors)
    assert distances[1, 2] < distances[1, 7] and distances[6, 7] < distances[6, 2]
    torch.testing.assert_close(vectors, collaborative_vectors(matrix, dim=4))
    assert collaborative_vectors(matrix, dim=50).shape == (10, 9)  # capped below the matrix's smaller side


def test_the_digest_follows_the_interactions():
    matrix = two_audiences()
    changed = matrix.tolil()
    changed[0, 9] = 1
    assert matrix_digest(matrix) == matrix_digest(two_audiences())
    assert matrix_digest(matrix) != matrix_digest(changed.tocsr())


def test_index_features_weigh_the_two_blocks():
    torch.manual_seed(0)
    text, collaborative = torch.randn(50, 12) * 7 + 3, torch.randn(50, 4) * 0.01
    torch.testing.assert_close(index_features(text, None, 0.0), (text - text.mean(0)) / text.std(0))
    features = index_features(text, collaborative, 2.0)  # [50, 16]
    text_variance, collaborative_variance = features[:, :12].var(0).sum(), features[:, 12:].var(0).sum()
    assert collaborative_variance / text_variance == pytest.approx(4.0, rel=1e-4)
    assert features.var(0).mean() == pytest.approx(1.0, rel=1e-4)
    with pytest.raises(ValueError, match="one collaborative vector per item"):
        index_features(text, collaborative[:10], 2.0)


def test_an_index_is_rebuilt_for_other_interactions_and_text_only_keys_are_unchanged(tmp_path):
    torch.manual_seed(0)
    texts, tokens = [""] + [f"item {i}" for i in range(10)], ["[PAD]"] + [str(i) for i in range(10)]
    embed = lambda batch: torch.randn(len(batch), 8)  # noqa: E731
    settings = IndexSettings(levels=2, codebook_size=4, epochs=5, seed=1, collaborative_weight=2.0, collaborative_dim=3)
    matrix = two_audiences()
    vectors = lambda: collaborative_vectors(matrix, 3)  # noqa: E731
    build_item_index(texts, tokens, embed, settings, str(tmp_path), "toy", "tiny", collaborative=vectors,
                     interactions_digest=matrix_digest(matrix))
    build_item_index(texts, tokens, embed, settings, str(tmp_path), "toy", "tiny", collaborative=vectors,
                     interactions_digest="other interactions")
    assert len(os.listdir(tmp_path)) == 2
    with pytest.raises(ValueError, match="needs the collaborative vectors"):
        build_item_index(texts, tokens, embed, settings, str(tmp_path), "toy", "tiny")
    text_only = IndexSettings(levels=2, codebook_size=4, epochs=5, seed=1)
    index = build_item_index(texts, tokens, embed, text_only, str(tmp_path), "toy", "tiny")
    assert len(index.codes) == 11 and len(os.listdir(tmp_path)) == 3
