"""Fetch the raw source datasets of the benchmark (needs internet; not used by tests or CI).

    python data/download.py RAW_DIR [--tasks agnews,yelp,...]

Writes RAW_DIR/{task}/{train,dev,test}.json in raw layout (a) ([{"sentence", "label"}]) and
labels.json, ready for `python data/preprocess.py RAW_DIR OUT_DIR`. The datasets come from the
Hugging Face Hub through the `datasets` library; data/README.md lists each source and its
licence terms, which you accept by downloading. The formatting of each example (e.g.
"Title: ...\\nText: ...\\n") follows the preprocessed benchmark files; the split sizes and sampling
of the published benchmark are not reproduced exactly by this script (the published files were
built from the CL_Benchmark release), so prefer the preprocessed files when you have them.
"""

import json
import os
import sys

from rkif.cli_runner import run

# task: (hub dataset, config, {our split: hub split}, labels, example formatter)
SOURCES = {
    "agnews": ("ag_news", None, {"train": "train", "dev": "test", "test": "test"},
               ["World", "Sports", "Business", "Science or Technology"],
               lambda r: f"Text: {r['text']}\n"),
    "yelp": ("yelp_review_full", None, {"train": "train", "dev": "test", "test": "test"},
             ["very negative", "negative", "neutral", "positive", "very positive"],
             lambda r: f"Text: {r['text']}\n"),
    "dbpedia": ("dbpedia_14", None, {"train": "train", "dev": "test", "test": "test"},
                ["Company", "Educational Institution", "Artist", "Athlete", "Office Holder", "Mean of Transportation",
                 "Building", "Natural Place", "Village", "Animal", "Plant", "Album", "Film", "Written Work"],
                lambda r: f"Title: {r['title']}\nText: {r['content']}\n"),
    "imdb": ("imdb", None, {"train": "train", "dev": "test", "test": "test"}, ["Bad", "Good"],
             lambda r: f"{r['text']}\n"),
    "sst-2": ("glue", "sst2", {"train": "train", "dev": "validation", "test": "validation"}, ["Bad", "Good"],
              lambda r: f"Text: {r['sentence']}\n"),
    "mnli": ("glue", "mnli", {"train": "train", "dev": "validation_matched", "test": "validation_matched"},
             ["entailment", "neutral", "contradiction"],
             lambda r: f"sentence 1: {r['premise']}\nsentence 2: {r['hypothesis']}"),
    "rte": ("super_glue", "rte", {"train": "train", "dev": "validation", "test": "validation"},
            ["entailment", "contradiction"],
            lambda r: f"sentence 1: {r['premise']}\nsentence 2: {r['hypothesis']}"),
    "cb": ("super_glue", "cb", {"train": "train", "dev": "validation", "test": "validation"},
           ["entailment", "contradiction", "neutral"],
           lambda r: f"sentence 1: {r['premise']}\nsentence 2: {r['hypothesis']}"),
    "qqp": ("glue", "qqp", {"train": "train", "dev": "validation", "test": "validation"}, ["False", "True"],
            lambda r: f"first sentence: {r['question1']}\nsecond sentence: {r['question2']}"),
    "boolqa": ("super_glue", "boolq", {"train": "train", "dev": "validation", "test": "validation"},
               ["False", "True"], lambda r: f"question: {r['question']}\npassage: {r['passage']}"),
    "wic": ("super_glue", "wic", {"train": "train", "dev": "validation", "test": "validation"}, ["False", "True"],
            lambda r: f"word: {r['word']}\n{r['sentence1']}\n{r['sentence2']}"),
}


def main(raw_dir, tasks=None):
    from datasets import load_dataset  # needs internet access to the Hub

    chosen = list(SOURCES) if tasks is None else [t.strip() for t in str(tasks).split(",")]
    unknown = [t for t in chosen if t not in SOURCES]
    if unknown:
        sys.exit(f"error: --tasks: no download recipe for {unknown}; known: {sorted(SOURCES)} "
                 "(amazon, yahoo, copa and multirc come only with the preprocessed benchmark release)")
    for task in chosen:
        name, config, splits, labels, fmt = SOURCES[task]
        folder = os.path.join(raw_dir, task)
        os.makedirs(folder, exist_ok=True)
        for ours, theirs in splits.items():
            ds = load_dataset(name, config, split=theirs)
            rows = [{"sentence": fmt(r), "label": labels[r["label"]]} for r in ds if r["label"] >= 0]
            with open(os.path.join(folder, f"{ours}.json"), "w", encoding="utf-8") as f:
                json.dump(rows, f, ensure_ascii=False)
        with open(os.path.join(folder, "labels.json"), "w", encoding="utf-8") as f:
            json.dump(labels, f)
        print(f"{task}: written to {folder}")


if __name__ == "__main__":
    run(main)
