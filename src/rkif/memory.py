"""Replay memory (design doc section 3) and the per-task validation set."""

import random


def memory_size(num_train, ratio):
    """n_i = floor(|train_i| * ratio / 100)."""
    return int(num_train * ratio // 100)


def sample_task_memory(records, n, rng, uniform=False):
    """Class-balanced sample of at most ``n`` records, drawn with ``rng`` (a random.Random).

    Per distinct output: min(max(1, n // n_classes), count) at random; then a random top-up
    from the rest up to n. Uniform instead for free-text tasks (``uniform``), and whenever there
    are more classes than n, where one per class would overshoot n.
    """
    if n <= 0:
        return []
    by_output = {}
    for i, r in enumerate(records):
        by_output.setdefault(r["output"], []).append(i)
    if uniform or len(by_output) > n:
        picked = rng.sample(range(len(records)), n)
    else:
        per_class = max(1, n // len(by_output))
        picked = []
        for output in sorted(by_output):
            idx = by_output[output]
            picked += rng.sample(idx, min(per_class, len(idx)))
        if len(picked) < n:
            chosen = set(picked)
            rest = [i for i in range(len(records)) if i not in chosen]
            picked += rng.sample(rest, min(n - len(picked), len(rest)))
    return [records[i] for i in picked]


def build_memory_buffer(train_sets, ratio, seed=42, free_text=None):
    """Concatenated memories of the earlier tasks; one RNG seeded once before the loop over tasks.
    free_text: per task, True to sample it uniformly (tasks scored by ROUGE-L)."""
    rng = random.Random(seed)
    buffer = []
    for i, records in enumerate(train_sets):
        uniform = bool(free_text and free_text[i])
        buffer += sample_task_memory(records, memory_size(len(records), ratio), rng, uniform)
    return buffer


def validation_subset(records, per_task=25, seed=42):
    """The first min(per_task, n) records after a seeded shuffle."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    return [records[i] for i in order[:per_task]]
