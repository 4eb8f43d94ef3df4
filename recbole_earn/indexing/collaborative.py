"""Collaborative item vectors for the item index: items that the same users interacted with get nearby vectors.

LC-Rec indexes items by their text alone. On a small catalog with a small backbone the text says little about
who watches what (on MovieLens-100K with SmolLM2-135M, a user's next item shares its first code with the
majority of their last ten items no more often than chance), so the codes carry no signal the LLM can learn
from the history. Appending these vectors to the text embeddings before the RQ-VAE makes the codes follow
co-interaction as well: the leading singular vectors of the training split's user-item matrix, scaled by their
singular values (the first of which follows popularity).
"""

import hashlib
from typing import Dict, Iterable

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.linalg import svds


def user_item_matrix(items_by_user: Dict[int, Iterable[int]], n_items: int) -> csr_matrix:
    """[users, n_items] 0/1 matrix of who interacted with what (rows in sorted user order)."""
    users = sorted(items_by_user)
    rows = [row for row, user in enumerate(users) for _ in items_by_user[user]]
    cols = [item for user in users for item in items_by_user[user]]
    return csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(users), n_items))


def matrix_digest(matrix: csr_matrix) -> str:
    """A digest of the matrix's non-zero pattern, so an index built from other interactions is not reused."""
    matrix = matrix.tocsr()
    matrix.sort_indices()
    digest = hashlib.sha256()
    for array in (matrix.indptr, matrix.indices):
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    return digest.hexdigest()


def collaborative_vectors(matrix: csr_matrix, dim: int, seed: int = 0) -> torch.Tensor:
    """[n_items, dim] item factors V * S of the matrix's rank-`dim` truncated SVD (dim is capped below the
    matrix's smaller side), signs fixed so that the result does not depend on the solver's start vector."""
    dim = max(1, min(dim, min(matrix.shape) - 1))
    start = np.random.default_rng(seed).standard_normal(min(matrix.shape))
    _, singular, item_factors = svds(matrix.astype(np.float64), k=dim, v0=start)
    order = np.argsort(-singular)  # svds returns ascending singular values
    vectors = item_factors[order].T * singular[order]  # [n_items, dim]
    signs = np.sign(vectors[np.abs(vectors).argmax(0), np.arange(dim)])  # largest entry of each column positive
    return torch.from_numpy(vectors * signs).float()
