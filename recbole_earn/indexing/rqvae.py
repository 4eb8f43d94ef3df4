"""RQ-VAE (residual-quantised autoencoder) that turns item text embeddings into short code sequences, as LC-Rec
and TIGER index items: an MLP encoder to a small latent, `levels` codebooks each quantising what the previous
levels left over, an MLP decoder back to the embedding. Trained full-batch-ish with reconstruction + commitment
losses; codebooks start from k-means of their level's residuals so that codes are used from the first step."""

import torch
from torch import nn


def kmeans(points: torch.Tensor, k: int, iterations: int = 20, generator=None) -> torch.Tensor:
    """[k, dim] centroids of points [n, dim] (k <= n), seeded by k distinct points."""
    centroids = points[torch.randperm(points.shape[0], generator=generator)[:k]].clone()
    for _ in range(iterations):
        assignment = torch.cdist(points, centroids).argmin(1)  # [n]
        sums = torch.zeros_like(centroids).index_add_(0, assignment, points)
        counts = torch.bincount(assignment, minlength=k).unsqueeze(1)  # [k, 1]
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)  # an empty cluster stays put
    return centroids


def mlp(sizes):
    layers = []
    for i, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(size_in, size_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RQVAE(nn.Module):
    def __init__(self, input_dim, levels=4, codebook_size=256, code_dim=32, hidden_dims=(512, 256, 128),
                 beta=0.25):
        super().__init__()
        self.levels, self.codebook_size, self.beta = levels, codebook_size, beta
        self.encoder = mlp([input_dim, *hidden_dims, code_dim])
        self.decoder = mlp([code_dim, *reversed(hidden_dims), input_dim])
        self.codebooks = nn.Parameter(torch.zeros(levels, codebook_size, code_dim))  # [levels, K, code_dim]

    @torch.no_grad()
    def init_codebooks(self, latent: torch.Tensor, generator=None):
        """k-means of each level's residuals of latent [n, code_dim]."""
        residual = latent
        for level in range(self.levels):
            self.codebooks[level] = kmeans(residual, self.codebook_size, generator=generator)
            nearest = torch.cdist(residual, self.codebooks[level]).argmin(1)
            residual = residual - self.codebooks[level][nearest]

    def quantise(self, latent: torch.Tensor):
        """(codes [n, levels], quantised latent [n, code_dim] with straight-through gradients, commitment loss)."""
        residual, quantised, loss, codes = latent, torch.zeros_like(latent), 0.0, []
        for level in range(self.levels):
            codebook = self.codebooks[level]  # [K, code_dim]
            nearest = torch.cdist(residual, codebook).argmin(1)  # [n]
            chosen = codebook[nearest]  # [n, code_dim]
            loss = loss + ((chosen - residual.detach()) ** 2).mean() + self.beta * ((chosen.detach() - residual) ** 2).mean()
            quantised = quantised + chosen
            residual = residual - chosen.detach()
            codes.append(nearest)
        quantised = latent + (quantised - latent).detach()  # straight-through estimator
        return torch.stack(codes, 1), quantised, loss

    def forward(self, x: torch.Tensor):
        """(reconstruction [n, input_dim], codes [n, levels], loss)."""
        codes, quantised, commitment = self.quantise(self.encoder(x))
        reconstruction = self.decoder(quantised)
        return reconstruction, codes, ((reconstruction - x) ** 2).mean() + commitment

    @torch.no_grad()
    def residuals(self, x: torch.Tensor, level: int) -> torch.Tensor:
        """What is left of the latent of x [n, input_dim] for `level` to quantise, [n, code_dim]."""
        residual = self.encoder(x)
        for previous in range(level):
            codebook = self.codebooks[previous]
            residual = residual - codebook[torch.cdist(residual, codebook).argmin(1)]
        return residual


def train_rqvae(embeddings: torch.Tensor, levels, codebook_size, code_dim=32, epochs=500, batch_size=1024,
                learning_rate=1e-3, seed=0, log=None) -> RQVAE:
    """An RQ-VAE fitted to item embeddings [n, dim] (standardise them first: the LLM's hidden states have a few
    huge dimensions). Deterministic for a seed, and leaves the global RNG as it found it: a run that builds the
    index and one that loads it from the cache go on from the same random state."""
    generator = torch.Generator().manual_seed(seed)
    x = embeddings.float()
    with torch.random.fork_rng(devices=[]):  # the layers' initialisation draws from the global (CPU) RNG
        torch.manual_seed(seed)
        model = RQVAE(x.shape[1], levels=levels, codebook_size=codebook_size, code_dim=code_dim)
    with torch.no_grad():
        model.init_codebooks(model.encoder(x), generator=generator)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    for epoch in range(epochs):
        order = torch.randperm(x.shape[0], generator=generator)
        for start in range(0, x.shape[0], batch_size):
            _, _, loss = model(x[order[start:start + batch_size]])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if log is not None and (epoch + 1) % max(1, epochs // 5) == 0:
            log(f"RQ-VAE epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}")
    return model.eval()
