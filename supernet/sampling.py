"""Subnet samplers for supernet training.

``uniform``: every choice of every unlocked entry equally likely, so most draws land in the middle
of the MACs range and the extremes are rarely trained. ``complexity`` (AttentiveNAS-style): the MACs
range is cut into K buckets (of equal MACs ratio by default: the MACs of a space are heavy-tailed,
so equal-width buckets would put most archs in the first bucket and give the few big ones most
draws), a bucket is drawn from a target distribution (uniform over buckets by default) and then an
arch uniformly among the space's archs in that bucket: uniform draws over the choices until one
lands in it, as AttentiveNAS does. Drawing each gene from its frequency in the bucket instead (as
for the buckets uniform draws seldom reach, below) treats the genes as independent and so starves
the combinations that are rare at their MACs: on the digits ViT it halved the share of resolution 16
with embed 32 (3.7% of draws, 6.7% uniformly in the bucket), the corner whose subnets then fell 2-5
points short. Buckets that uniform draws seldom reach (under one in ``max_tries``, as the extremes
of a CNN space: under 0.1% of its archs), and a bucket missed ``max_tries`` times, fall back to
those per-bucket gene frequencies of a reference pool, kept if the arch lands in the bucket, then to
a pool arch of the bucket: never an unbounded loop.

Both are stateless between steps: the trainer hands them a generator seeded from the step, so every
rank draws the same subnet and a resumed run draws what the uninterrupted one would have.
"""
from __future__ import annotations

import numpy as np

from .errors import ConfigError
from .space import SearchSpace


class UniformSampler:
    kind = "uniform"

    def __init__(self, space: SearchSpace, unlocked=None, seed: int = 0):
        self.space, self.unlocked, self.seed = space, unlocked, seed

    def sample(self, rng: np.random.Generator) -> dict:
        return self.space.sample(rng, self.unlocked)

    def state_dict(self) -> dict:
        return {"kind": self.kind, "unlocked": sorted(self.unlocked or []), "seed": self.seed}


class ComplexitySampler:
    kind = "complexity"

    def __init__(self, space: SearchSpace, unlocked=None, num_buckets: int = 8, weights=None,
                 spacing: str = "log", pool_size: int = 4000, max_tries: int = 50, seed: int = 0):
        if num_buckets < 1:
            raise ConfigError(f"num_buckets={num_buckets} must be >= 1")
        if spacing not in ("log", "linear"):
            raise ConfigError(f"sampler.spacing={spacing!r}; allowed: log, linear")
        self.space, self.unlocked, self.seed = space, unlocked, seed
        self.num_buckets, self.pool_size, self.max_tries = num_buckets, pool_size, max_tries
        rng = np.random.default_rng(seed)
        pool = [space.largest(), space.smallest(unlocked)] + [space.sample(rng, unlocked) for _ in range(pool_size)]
        macs = np.array([space.macs(a) for a in pool], dtype=np.float64)
        self.spacing = spacing
        cut = np.geomspace if spacing == "log" else np.linspace
        self.edges = cut(macs.min(), macs.max(), num_buckets + 1)
        buckets = self.bucket_of(macs)
        genes = np.stack([space.encode(a) for a in pool])
        self._pool_genes = [genes[buckets == b] for b in range(num_buckets)]
        # Share of uniform draws landing in each bucket (the pool past its first two is uniform):
        # where fewer than one in ``max_tries`` would, uniform tries are skipped as a waste of time.
        uniform_share = np.bincount(buckets[2:], minlength=num_buckets) / pool_size
        self._try_uniform = uniform_share * max_tries >= 1

        target = np.ones(num_buckets) if weights is None else np.asarray(weights, dtype=np.float64)
        if target.shape != (num_buckets,) or (target < 0).any() or target.sum() <= 0:
            raise ConfigError(f"sampler.weights={weights!r} must be {num_buckets} non-negative numbers, not all zero")
        self.target = target / target.sum()
        # A bucket no arch of the space falls in (gaps in the MACs range) cannot be drawn.
        filled = np.array([len(g) > 0 for g in self._pool_genes])
        self.probs = np.where(filled, self.target, 0.0)
        self.probs /= self.probs.sum()
        # Per bucket and gene: the frequency of each choice among the bucket's pool archs, smoothed
        # over the unlocked choices so that choices absent from the pool can still be drawn.
        upper = space.gene_upper_bounds()
        free = genes.max(axis=0) > genes.min(axis=0)
        self._cdfs = []
        for pool_genes in self._pool_genes:
            cdf = []
            for i, n in enumerate(upper + 1):
                counts = np.bincount(pool_genes[:, i], minlength=n).astype(np.float64)
                if free[i]:
                    counts += 0.5
                cdf.append(np.cumsum(counts) / (counts.sum() or 1.0))  # (an empty bucket is never drawn)
            self._cdfs.append(cdf)

    def bucket_of(self, macs) -> np.ndarray:
        return np.clip(np.searchsorted(self.edges, macs, side="right") - 1, 0, self.num_buckets - 1)

    def sample(self, rng: np.random.Generator) -> dict:
        b = int(rng.choice(self.num_buckets, p=self.probs))
        cdf = self._cdfs[b]

        def uniform() -> dict:
            return self.space.sample(rng, self.unlocked)

        def by_frequency() -> dict:  # the genes drawn from their frequency in the bucket
            u = rng.random(len(cdf))
            return self.space.decode([int(np.searchsorted(c, x, side="right")) for c, x in zip(cdf, u, strict=True)])

        for propose in (uniform, by_frequency) if self._try_uniform[b] else (by_frequency,):
            for _ in range(self.max_tries):
                arch = propose()
                if self.bucket_of(self.space.macs(arch)) == b:
                    return arch
        pool = self._pool_genes[b]
        return self.space.decode(pool[rng.integers(len(pool))])

    def state_dict(self) -> dict:
        return {"kind": self.kind, "unlocked": sorted(self.unlocked or []), "seed": self.seed,
                "num_buckets": self.num_buckets, "spacing": self.spacing, "weights": self.target.tolist(),
                "pool_size": self.pool_size, "edges": self.edges.tolist()}


SAMPLERS = {"uniform": UniformSampler, "complexity": ComplexitySampler}


def create_sampler(kind: str, space: SearchSpace, unlocked=None, seed: int = 0, **options):
    """``kind``: ``complexity`` (options ``num_buckets``, ``spacing``, ``weights``) or ``uniform``."""
    if kind not in SAMPLERS:
        raise ConfigError(f"sampling={kind!r} is not a sampler; choose one of {', '.join(SAMPLERS)}")
    if kind == "uniform":
        return UniformSampler(space, unlocked, seed)
    return ComplexitySampler(space, unlocked, seed=seed, **options)
