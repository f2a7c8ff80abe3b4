"""A small synthetic continual benchmark in the real file format (seeded, offline).

Each task is a keyword classification: a sentence of filler words with one keyword that
decides the label. Tasks have disjoint label sets and keywords, so learning a later task
can overwrite an earlier one: forgetting is visible, and a replay memory can counter it.
"""

import json
import os
import random

FILLER = ("the a this that some many one day today people city river house green old new small big "
          "went saw made took after before near with without about under over again very").split()

SYNTHETIC_TASKS = {
    "weather": ("What is the weather in the following report? Choose one from the option.", {
        "sunny": ["sunshine", "bright", "clear"], "rainy": ["umbrella", "drizzle", "storm"],
        "snowy": ["snowflake", "blizzard", "frost"]}),
    "sport": ("Which sport is the following sentence about? Choose one from the option.", {
        "football": ["goalkeeper", "penalty", "striker"], "tennis": ["racket", "serve", "deuce"],
        "swimming": ["pool", "freestyle", "lane"]}),
    "food": ("Which meal does the following sentence describe? Choose one from the option.", {
        "breakfast": ["cereal", "toast", "pancake"], "dinner": ["steak", "roast", "candle"],
        "dessert": ["cake", "sorbet", "pudding"]}),
    "mood": ("What is the mood of the following sentence? Choose one from the option.", {
        "happy": ["smile", "laugh", "cheer"], "sad": ["tears", "grief", "sorrow"],
        "angry": ["shout", "rage", "furious"]}),
}


def make_example(rng, labels):
    label = rng.choice(sorted(labels))
    words = [rng.choice(FILLER) for _ in range(rng.randint(5, 9))]
    words.insert(rng.randint(0, len(words)), rng.choice(labels[label]))
    return label, " ".join(words)


def write_synthetic_benchmark(data_dir, tasks=("weather", "sport", "food"), n_train=200, n_dev=50, n_test=100,
                              seed=0):
    """Writes {split}/{task}_T5.json and {split}/{task}.json for every task; returns the task list."""
    rng = random.Random(seed)
    sizes = {"train": n_train, "dev": n_dev, "test": n_test}
    for task in tasks:
        question, labels = SYNTHETIC_TASKS[task]
        instruction = f"{question} Option: {', '.join(labels)}.\n"
        for split, n in sizes.items():
            t5, llama = [], []
            for i in range(n):
                label, text = make_example(rng, labels)
                body = f"Text: {text}\n\nAnswer:"
                ident = f"{task}_{i}"
                t5.append({"id": ident, "input": instruction + body, "output": label})
                llama.append({"id": ident, "instruction": instruction, "input": body, "output": label})
            os.makedirs(os.path.join(data_dir, split), exist_ok=True)
            for name, records in ((f"{task}_T5.json", t5), (f"{task}.json", llama)):
                with open(os.path.join(data_dir, split, name), "w", encoding="utf-8") as f:
                    json.dump(records, f, indent=1)
    return list(tasks)
