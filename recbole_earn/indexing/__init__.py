"""Semantic item IDs (LC-Rec): item text embeddings -> RQ-VAE codes -> unique code sequences."""
