import random
from collections import Counter

import datasets
import numpy as np
import torch

from rkif.memory import build_memory_buffer, memory_size, sample_task_memory, validation_set, validation_subset
from rkif.sampling import global_permutation, memory_batch_indices, seeded_permutation, shuffled_like_released


def records(labels):
    return [{"id": f"t_{i}", "input": f"x{i}", "output": lab} for i, lab in enumerate(labels)]


def test_memory_size_is_floor_of_ratio_percent():
    assert memory_size(1000, 2) == 20
    assert memory_size(250, 2) == 5
    assert memory_size(49, 2) == 0
    assert memory_size(1000, 0.5) == 5


def test_class_balanced_when_classes_divide_n():
    data = records(["a"] * 500 + ["b"] * 300 + ["c"] * 200 + ["d"] * 0)
    picked = sample_task_memory(data, 20, random.Random(42))
    # n_classes = 3: 20 // 3 = 6 per class (18), then 2 topped up at random from the rest
    counts = Counter(r["output"] for r in picked)
    assert len(picked) == 20 and len({r["id"] for r in picked}) == 20
    assert all(counts[c] >= 6 for c in "abc")
    assert sum(counts.values()) - 18 == 2


def test_rare_class_gives_all_it_has_and_top_up_fills_to_n():
    data = records(["a"] * 100 + ["b"] * 2)
    picked = sample_task_memory(data, 10, random.Random(0))
    counts = Counter(r["output"] for r in picked)
    assert counts["b"] == 2  # min(10 // 2, 2)
    assert len(picked) == 10 and len({r["id"] for r in picked}) == 10


def test_top_up_never_exceeds_the_task():
    data = records(["a", "a", "b"])
    assert len(sample_task_memory(data, 5, random.Random(0))) == 3


def test_more_classes_than_n_gives_one_per_class_as_released():
    data = records([f"label {i}" for i in range(14)] * 3)  # 14 classes, n = 1 (dbpedia at n_i = 1)
    picked = sample_task_memory(data, 1, random.Random(0))
    assert len(picked) == 14 and Counter(r["output"] for r in picked) == {f"label {i}": 1 for i in range(14)}
    assert len(sample_task_memory(data, 0, random.Random(0))) == 14  # n_i = 0 by rounding: still one each
    assert build_memory_buffer([data], ratio=0, seed=42) == []  # no memory asked for: none


def released_buffer(train_sets, ratio, seed):
    """The released load_memory_buffer, restated: global random seeded once, classes as a Counter
    yields them, one per class at least, top-up from the rest of the indices."""
    random.seed(seed)
    out = []
    for task in train_sets:
        n = int(len(task) * ratio / 100)
        labels = [r["output"] for r in task]
        counts = Counter(labels)
        per_class = max(1, n // len(counts))
        idx = []
        for label in counts:
            members = [k for k, v in enumerate(labels) if v == label]
            idx.extend(random.sample(members, min(per_class, len(members))))
        if len(idx) < n:
            idx.extend(random.sample(list(set(range(len(task))) - set(idx)), n - len(idx)))
        out += [task[k]["id"] for k in idx]
    return out


def test_memory_buffer_is_the_released_one_example_for_example():
    # first-occurrence order (zeta, alpha, mid) differs from the sorted one; uneven classes need a top-up
    t1 = records(["zeta", "alpha", "mid", "alpha", "zeta"] * 40 + ["mid"] * 7)
    t2 = records(["b", "a"] * 60 + ["c"] * 3)
    t3 = records([f"class {i % 9}" for i in range(120)])  # 9 classes > n = 2
    for ratio in (2, 5, 10):
        ours = [r["id"] for r in build_memory_buffer([t1, t2, t3], ratio, seed=42)]
        assert ours == released_buffer([t1, t2, t3], ratio, 42), ratio
    sorted_order = build_memory_buffer([records(["z"] * 10 + ["a"] * 10)], 20, seed=42)
    assert [r["output"] for r in sorted_order][:2] == ["z", "z"]  # class z first, as it occurs first


def test_buffer_concatenates_tasks_and_is_deterministic():
    t1 = records(["pos", "neg"] * 100)
    t2 = records(["x", "y", "z"] * 50)
    a = build_memory_buffer([t1, t2], ratio=5, seed=42)
    b = build_memory_buffer([t1, t2], ratio=5, seed=42)
    c = build_memory_buffer([t1, t2], ratio=5, seed=7)
    assert [r["id"] for r in a] == [r["id"] for r in b]
    assert [r["id"] for r in a] != [r["id"] for r in c]
    assert len(a) == 10 + 7  # floor(200 * 5%) + floor(150 * 5%)
    assert Counter(r["output"] for r in a[:10]) == {"pos": 5, "neg": 5}
    assert build_memory_buffer([t1], ratio=0, seed=42) == []


def test_one_rng_for_all_tasks_not_reseeded_per_task():
    t = records(["a", "b"] * 50)
    buf = build_memory_buffer([t, t], ratio=10, seed=42)
    # the same task twice draws different examples because the RNG runs on
    assert [r["id"] for r in buf[:10]] != [r["id"] for r in buf[10:]]


def test_validation_set_as_released_with_numpy_and_datasets():
    dev = [records(["a"] * 40), records(["b"] * 30), records(["c"] * 7)]
    for i, task in enumerate(dev):
        for r in task:
            r["id"] = f"{i}_{r['id']}"
    # by hand with numpy: default_rng(42) permutation per task, first 25, then the whole set again
    firsts = [[task[k]["id"] for k in np.random.default_rng(42).permutation(len(task))[:25]] for task in dev]
    joined = [i for f in firsts for i in f]
    expected = [joined[k] for k in np.random.default_rng(42).permutation(len(joined))]
    assert [r["id"] for r in validation_set(dev, 25, 42)] == expected
    assert [r["id"] for r in validation_subset(dev[0], 25, 42)] == firsts[0]
    assert len(validation_subset(dev[2], 25, 42)) == 7
    # and with datasets itself, as the released load_validation_set does
    subsets = [datasets.Dataset.from_list(t).shuffle(seed=42).select(range(min(len(t), 25))) for t in dev]
    assert datasets.concatenate_datasets(subsets).shuffle(seed=42)["id"] == expected


def test_unseeded_shuffle_is_datasets_shuffle_from_the_same_numpy_state():
    data = records(["a"] * 50)
    np.random.seed(42)
    theirs = datasets.Dataset.from_list(data).shuffle()["id"]
    theirs_next = datasets.Dataset.from_list(data).shuffle()["id"]
    state_after = np.random.get_state()[1].copy()
    np.random.seed(42)
    ours = [r["id"] for r in shuffled_like_released(data)]
    ours_next = [r["id"] for r in shuffled_like_released(data)]
    assert ours == theirs and ours_next == theirs_next and ours != ours_next
    assert (np.random.get_state()[1] == state_after).all()  # the global RNG advanced alike
    assert global_permutation(0) == [] and seeded_permutation(0, 42) == []


def test_memory_batches_are_the_released_random_sampler_draws():
    memory = list(range(30))
    torch.manual_seed(3)
    theirs = []
    for _ in range(4):  # released: a fresh iterator over a RandomSampler DataLoader per outer step
        loader = torch.utils.data.DataLoader(memory, batch_size=8, sampler=torch.utils.data.RandomSampler(memory))
        theirs.append(next(iter(loader)).tolist())
    after = torch.get_rng_state()
    torch.manual_seed(3)
    ours = [memory_batch_indices(30, 8) for _ in range(4)]
    assert ours == theirs and torch.equal(torch.get_rng_state(), after)
    assert len({tuple(b) for b in ours}) == 4
    # with a generator (one per rank under DDP) the global RNG is left alone
    g = torch.Generator().manual_seed(43)
    before = torch.get_rng_state()
    a = memory_batch_indices(30, 8, g)
    assert torch.equal(torch.get_rng_state(), before) and a == torch.randperm(30, generator=torch.Generator()
                                                                               .manual_seed(43)).tolist()[:8]
    assert memory_batch_indices(5, 8) and len(memory_batch_indices(5, 8)) == 5


def test_free_text_tasks_are_sampled_uniformly():
    data = records(["a"] * 90 + ["b"] * 10)
    picked = sample_task_memory(data, 10, random.Random(5), uniform=True)
    assert [r["id"] for r in picked] == [f"t_{i}" for i in random.Random(5).sample(range(100), 10)]
    buf = build_memory_buffer([data, data], ratio=10, seed=1, free_text=[True, False])
    assert Counter(r["output"] for r in buf[10:]) == {"a": 5, "b": 5}  # the classification task stays balanced
