"""The released recipe's random draws, reproduced draw for draw (docs/design.md, section 3).

The released scripts shuffle with ``datasets.Dataset.shuffle`` and draw memory batches from a
fresh ``torch.utils.data.RandomSampler``; which examples are used, and the state the global
RNGs are left in (dropout masks, the Trainer's own sampler), follow from exactly these calls.
"""

import numpy as np
import torch


def seeded_permutation(n, seed):
    """``Dataset.shuffle(seed=seed)``: the permutation of numpy's default_rng(seed)."""
    return np.random.default_rng(seed).permutation(n).tolist() if n else []


def global_permutation(n):
    """``Dataset.shuffle()`` without a seed: default_rng seeded from the numpy global RNG state,
    which it advances by one ``np.random.random()``; an empty dataset draws nothing."""
    if not n:
        return []
    _, keys, pos, *_ = np.random.get_state()
    seed = keys[pos] if pos < 624 else keys[0]
    np.random.random()
    return np.random.default_rng(seed).permutation(n).tolist()


def memory_batch_indices(n, batch_size, generator=None):
    """Indices of one memory batch: the first ``batch_size`` of a fresh RandomSampler over n examples.

    generator None is the released draw, ``next(iter(DataLoader(memory, batch_size, sampler=
    RandomSampler(memory))))``: the DataLoader iterator takes a base seed and the sampler a seed for
    its own generator, two draws of the global torch RNG per batch. With a generator (one per
    rank under DDP) the permutation comes from it and the global RNG is left alone.
    """
    if generator is None:
        torch.empty((), dtype=torch.int64).random_()  # the DataLoader iterator's base seed
        seed = int(torch.empty((), dtype=torch.int64).random_().item())
        generator = torch.Generator()
        generator.manual_seed(seed)
    return torch.randperm(n, generator=generator).tolist()[:batch_size]


def shuffled_like_released(records):
    """``Dataset.shuffle()`` of a list: its records in global_permutation order."""
    return [records[i] for i in global_permutation(len(records))]
