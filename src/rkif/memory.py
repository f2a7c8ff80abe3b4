"""Replay memory (docs/design.md, section 3) and the validation set, drawn as the released scripts draw them."""

import random

from .sampling import seeded_permutation


def memory_size(num_train, ratio):
    """n_i = floor(|train_i| * ratio / 100)."""
    return int(num_train * ratio // 100)


def sample_task_memory(records, n, rng, uniform=False):
    """Class-balanced sample of ``records`` with ``rng`` (a random.Random), as released.

    Classes in order of first occurrence; per class min(max(1, n // n_classes), count) at random;
    then a random top-up from the rest (in index order) up to n. One example per class is taken
    even when there are more classes than n (n = 0 included), so such a task contributes
    n_classes > n examples, as in the released code. ``uniform`` (free-text tasks): n at random.
    """
    if uniform:
        return [records[i] for i in rng.sample(range(len(records)), min(n, len(records)))]
    by_output = {}
    for i, r in enumerate(records):
        by_output.setdefault(r["output"], []).append(i)
    per_class = max(1, n // len(by_output))
    picked = []
    for idx in by_output.values():
        picked += rng.sample(idx, min(per_class, len(idx)))
    if len(picked) < n:
        chosen = set(picked)
        rest = [i for i in range(len(records)) if i not in chosen]
        picked += rng.sample(rest, min(n - len(picked), len(rest)))
    return [records[i] for i in picked]


def build_memory_buffer(train_sets, ratio, seed, free_text=None):
    """Concatenated memories of the earlier tasks; one RNG seeded once before the loop over tasks.
    free_text: per task, True to sample it uniformly (tasks scored by ROUGE-L). Ratio 0: no memory."""
    if ratio <= 0:
        return []
    rng = random.Random(seed)
    buffer = []
    for i, records in enumerate(train_sets):
        uniform = bool(free_text and free_text[i])
        buffer += sample_task_memory(records, memory_size(len(records), ratio), rng, uniform)
    return buffer


def validation_subset(records, per_task, seed):
    """The first min(per_task, n) records after ``Dataset.shuffle(seed=seed)``."""
    return [records[i] for i in seeded_permutation(len(records), seed)[:per_task]]


def validation_set(dev_sets, per_task, seed):
    """Every task's validation_subset, concatenated, then shuffled again with the same seed."""
    joined = [r for records in dev_sets for r in validation_subset(records, per_task, seed)]
    return [joined[i] for i in seeded_permutation(len(joined), seed)]
