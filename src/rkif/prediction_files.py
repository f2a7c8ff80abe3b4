"""Batched greedy prediction files that survive interruption.

A prediction file holds one JSON line per test example: {"id", "gold", "pred"}. While it is
being written it is `{name}.partial`, appended and flushed batch by batch; a rerun keeps its
complete lines (a torn last line is dropped), predicts only the rest, and when every example
has a line, the file is rewritten in test-split order and renamed to its final name.
The final file's existence therefore means the task's predictions are complete.
"""

import json
import os

from tqdm import tqdm

PARTIAL = ".partial"


def length_sorted_batches(lengths, batch_size, fits=None, token_lengths=None):
    """Index batches, longest inputs first: little padding per batch, and an out-of-memory
    error, if any, comes at the start rather than hours in. A batch holds at most batch_size
    examples and, given fits(size, longest token length) (rkif.generation_memory.batch_fits), no
    more than fits allows; token_lengths (default: lengths) are what fits is asked about. An
    example that does not fit alone still gets a batch of its own."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    tokens = lengths if token_lengths is None else token_lengths
    batches, batch, longest = [], [], 0
    for i in order:
        if batch and (len(batch) == batch_size or (fits and not fits(len(batch) + 1, max(longest, tokens[i])))):
            batches.append(batch)
            batch, longest = [], 0
        batch.append(i)
        longest = max(longest, tokens[i])
    return batches + [batch] if batch else batches


def read_partial(path):
    """Complete lines of a partial file as {id: line dict}; the file is cut back to them."""
    if not os.path.isfile(path):
        return {}
    done, good_bytes = {}, 0
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                row = json.loads(raw)
            except json.JSONDecodeError:
                break
            done[row["id"]] = row
            good_bytes += len(raw)
    with open(path, "r+b") as f:
        f.truncate(good_bytes)
    return done


def write_predictions(records, predict, out_path, batch_size, lengths=None, desc=None, fits=None, token_lengths=None):
    """Predict every record (those not already in the partial file) and write out_path.

    predict: list of records -> list of prediction strings, in order.
    lengths: per-record input lengths for length-sorted batches (default: characters of "input").
    fits, token_lengths: the memory budget of a batch (length_sorted_batches).
    Returns the number of records predicted in this call (0 when out_path already exists).
    """
    if os.path.isfile(out_path):
        return 0
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{out_path}: the test split has duplicate ids")
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    partial = out_path + PARTIAL
    done = read_partial(partial)
    todo = [i for i, r in enumerate(records) if r["id"] not in done]
    if lengths is None:
        lengths = [len(r["input"]) for r in records]
    batches = length_sorted_batches([lengths[i] for i in todo], batch_size, fits,
                                    None if token_lengths is None else [token_lengths[i] for i in todo])
    with open(partial, "a", encoding="utf-8") as f, tqdm(total=len(todo), desc=desc, unit="ex") as bar:
        for batch in batches:
            chunk = [records[todo[j]] for j in batch]
            for r, pred in zip(chunk, predict(chunk)):
                row = {"id": r["id"], "gold": r["output"], "pred": pred}
                done[r["id"]] = row
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(chunk))
    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(done[r["id"]], ensure_ascii=False) + "\n")
    os.replace(tmp, out_path)
    os.remove(partial)
    return len(todo)
